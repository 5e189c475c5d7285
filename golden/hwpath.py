"""Hardware-exact integer inference and the expected macro transaction trace.

Written from the spec (docs/architecture.md), independently of the RTL:

* layer-0 row codes are ``pixel >> (8 - dac_bits)``; hidden row codes are +-1;
* every evaluation drives one row block (``active_rows`` rows, zero beyond the layer's
  inputs) with gain ``plane_gains[k]`` and digitizes each enabled column as
  ``clamp(floor(gain * sum_r x_r * w_r / step), adc_min, adc_max)``;
* a neuron's accumulator is the sum of its ADC codes over row blocks and evaluated planes;
* hidden activation = +1 iff acc >= theta, else -1; logits = acc - theta; class = first argmax.

The evaluation order and the cycle of each evaluation follow the controller's timing
contract (:func:`schedule`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbnn.config import PIXEL_BITS, SbnnConfig

from .qmodel import QuantizedModel

__all__ = ["Evaluation", "Schedule", "HwResult", "schedule", "run_hw", "input_codes",
           "expected_trace", "expected_result"]


@dataclass(frozen=True)
class Evaluation:
    """One macro evaluation: which tile and plane, and what the controller drives."""

    index: int
    cycle: int  # cycle of the start pulse, counted from compute start (cycle 0)
    layer: int
    col_block: int
    row_block: int
    plane: int
    tile: int  # word-line group holding the tile
    gain: int
    col_en: int  # column-enable bits, bit c = column c
    adc_shift: int


@dataclass(frozen=True)
class Schedule:
    evals: tuple[Evaluation, ...]
    total_cycles: int  # cycle at which the result is valid (= reported cycle count)

    def __len__(self) -> int:
        return len(self.evals)


def _tile_base(cfg: SbnnConfig, layer: int) -> int:
    return sum(cfg.row_blocks(i) * cfg.col_blocks(i) for i in range(layer))


def column_enables(cfg: SbnnConfig, model: QuantizedModel, layer: int, col_block: int,
                   plane: int) -> int:
    """Enabled columns of ``plane`` in one column block (plane 0: every real neuron)."""
    nt, m = cfg.neurons_per_tile, cfg.layers[layer + 1]
    bits = 0
    for i in range(nt):
        j = col_block * nt + i
        if j < m and (plane == 0 or model.support_mask[layer][j, plane - 1]):
            bits |= 1 << (plane * nt + i)
    return bits


def schedule(model: QuantizedModel, budget: int) -> Schedule:
    """Evaluation order and start cycles under the controller's timing contract.

    Order: layer, column block, row block, plane. A support plane whose columns in the column
    block are all masked, or that lies beyond ``budget``, is skipped; plane 0 never is.
    Cycles: the first evaluation starts at cycle 0; the next one in the same layer starts
    ``macro_latency`` cycles later (back to back); the first of a new layer waits 2 more
    cycles (ADC codes accumulate, then thresholds produce the activations it reads). The
    result is valid 2 cycles after the last evaluation's ADC codes.
    """
    cfg = model.config
    if not 0 <= budget <= cfg.num_supports:
        raise ValueError(f"budget must be in 0..{cfg.num_supports} (planes after the base), "
                         f"got {budget}")
    evals: list[Evaluation] = []
    cycle = 0
    for layer in range(cfg.num_layers):
        if layer:
            cycle += 2
        nrb = cfg.row_blocks(layer)
        shift = cfg.adc_steps[layer].bit_length() - 1
        for cb in range(cfg.col_blocks(layer)):
            enables = [column_enables(cfg, model, layer, cb, k) for k in range(budget + 1)]
            planes = [k for k in range(budget + 1) if k == 0 or enables[k]]
            for rb in range(nrb):
                for k in planes:
                    if evals:
                        cycle += cfg.macro_latency
                    evals.append(Evaluation(
                        index=len(evals), cycle=cycle, layer=layer,
                        col_block=cb, row_block=rb, plane=k,
                        tile=_tile_base(cfg, layer) + cb * nrb + rb,
                        gain=cfg.plane_gains[k], col_en=enables[k], adc_shift=shift))
    total = evals[-1].cycle + cfg.macro_latency + 2
    return Schedule(tuple(evals), total)


def input_codes(cfg: SbnnConfig, pixels: np.ndarray) -> np.ndarray:
    """Row DAC codes of the first layer: the top ``dac_bits`` bits of each 8-bit pixel."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise TypeError(f"pixels must be uint8, got {pixels.dtype}")
    flat = pixels.reshape(pixels.shape[0], -1)
    if flat.shape[1] != cfg.layers[0]:
        raise ValueError(f"images have {flat.shape[1]} pixels but layers[0] is "
                         f"{cfg.layers[0]}")
    return (flat >> (PIXEL_BITS - cfg.dac_bits)).astype(np.int64)


@dataclass
class HwResult:
    """Outputs of the integer path for a batch."""

    classes: np.ndarray  # (B,)
    logits: np.ndarray  # (B, classes) int64
    layer_inputs: list[np.ndarray]  # per layer (B, n) int64 row codes
    adc: list[dict[tuple[int, int], np.ndarray]] | None  # per layer {(rb, plane): (B, m)}


def run_hw(model: QuantizedModel, pixels: np.ndarray, budget: int | None = None,
           keep_adc: bool = False) -> HwResult:
    """Run a batch of images through the hardware-exact integer path."""
    cfg = model.config
    budget = cfg.num_supports if budget is None else budget
    if not 0 <= budget <= cfg.num_supports:
        raise ValueError(f"budget must be in 0..{cfg.num_supports}, got {budget}")
    x = input_codes(cfg, pixels)
    a = cfg.active_rows
    inputs, adc_all = [], []
    for layer in range(cfg.num_layers):
        inputs.append(x)
        n, m = cfg.layers[layer], cfg.layers[layer + 1]
        shift = cfg.adc_steps[layer].bit_length() - 1
        acc = np.zeros((x.shape[0], m), dtype=np.int64)
        adc: dict[tuple[int, int], np.ndarray] = {}
        xf = x.astype(np.float64)  # BLAS matmul; exact, sums stay far below 2**53
        for rb in range(cfg.row_blocks(layer)):
            rows = slice(rb * a, min(n, (rb + 1) * a))
            for k in range(budget + 1):
                w = model.planes[layer][k][:, rows].astype(np.float64)
                s = np.rint(xf[:, rows] @ w.T).astype(np.int64) * cfg.plane_gains[k]
                q = np.clip(s >> shift, cfg.adc_min, cfg.adc_max)
                if k:
                    q = q * model.support_mask[layer][:, k - 1]
                acc += q
                if keep_adc:
                    adc[(rb, k)] = q.astype(np.int32)
        v = acc - model.thresholds[layer]
        adc_all.append(adc)
        if layer + 1 < cfg.num_layers:
            x = np.where(v >= 0, 1, -1).astype(np.int64)
    return HwResult(classes=np.argmax(v, axis=1), logits=v, layer_inputs=inputs,
                    adc=adc_all if keep_adc else None)


def expected_trace(model: QuantizedModel, sched: Schedule, result: HwResult,
                   image: int) -> list[dict]:
    """The macro transactions one image must produce, in order (one dict per evaluation)."""
    cfg = model.config
    a, nt = cfg.active_rows, cfg.neurons_per_tile
    if result.adc is None:
        raise ValueError("run_hw(..., keep_adc=True) is needed to build a trace")
    trace = []
    for ev in sched.evals:
        n, m = cfg.layers[ev.layer], cfg.layers[ev.layer + 1]
        row_x = np.zeros(a, dtype=np.int64)
        lo, hi = ev.row_block * a, min(n, (ev.row_block + 1) * a)
        row_x[: hi - lo] = result.layer_inputs[ev.layer][image, lo:hi]
        adc = np.zeros(cfg.macro_cols, dtype=np.int64)
        q = result.adc[ev.layer][(ev.row_block, ev.plane)][image]
        for i in range(nt):
            j = ev.col_block * nt + i
            c = ev.plane * nt + i
            if j < m and ev.col_en >> c & 1:
                adc[c] = q[j]
        trace.append({"cycle": ev.cycle, "layer": ev.layer, "tile": ev.tile,
                      "plane": ev.plane, "gain": ev.gain, "col_en": ev.col_en,
                      "row_x": tuple(int(v) for v in row_x),
                      "adc": tuple(int(v) for v in adc)})
    return trace


def expected_result(sched: Schedule, result: HwResult, image: int) -> dict:
    """What the result stream must return for one image."""
    return {"cls": int(result.classes[image]),
            "logits": tuple(int(v) for v in result.logits[image]),
            "cycles": sched.total_cycles}
