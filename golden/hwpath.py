"""Hardware-exact integer inference and the expected macro transaction trace.

Written from the spec (docs/architecture.md), independently of the RTL:

* layer-0 row codes are ``pixel >> (8 - dac_bits)``; hidden row codes are +-1;
* every evaluation drives one row block (``active_rows`` rows, zero beyond the layer's
  inputs) with gain ``plane_gains[k]`` and digitizes each enabled column as
  ``clamp(floor(gain * sum_r x_r * w_r / step), adc_min, adc_max)``;
* a neuron's accumulator is the sum of its ADC codes over row blocks and evaluated planes;
* hidden activation = +1 iff acc >= theta, else -1; logits = acc - theta; class = first argmax.

Inference runs in *passes* p = 0 .. budget. Pass p uses planes 0..p everywhere: the first
layer only adds plane p to the accumulators it kept (its inputs are fixed), later layers are
recomputed. After each pass the output's top-two logit margin is compared with the exit
margin; the answer is that of the first pass that is confident, or of the last pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sbnn.config import PIXEL_BITS, SbnnConfig

from .qmodel import QuantizedModel

__all__ = ["Evaluation", "Schedule", "HwResult", "schedule", "run_hw", "input_codes",
           "expected_trace", "expected_result", "NEVER_EXIT"]

#: An exit margin no logit pair can reach: always run to the budget.
NEVER_EXIT = None


@dataclass(frozen=True)
class Evaluation:
    """One macro evaluation: which tile and plane, and what the controller drives."""

    index: int
    cycle: int  # cycle of the start pulse, counted from compute start (cycle 0)
    pass_: int
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
    """Every evaluation of every pass up to a budget; an image exiting after pass e runs the
    prefix ``upto(e)``."""

    config: SbnnConfig
    evals: tuple[Evaluation, ...]
    passes: tuple[int, ...]  # the passes that run (a single-layer net skips empty ones)

    def __len__(self) -> int:
        return len(self.evals)

    def upto(self, last_pass: int) -> tuple[Evaluation, ...]:
        return tuple(e for e in self.evals if e.pass_ <= last_pass)

    def total_cycles(self, last_pass: int | None = None) -> int:
        """Cycle at which the result is valid (= the reported cycle count) for an image that
        stops after ``last_pass`` (default: runs every pass)."""
        last_pass = self.passes[-1] if last_pass is None else last_pass
        return self.upto(last_pass)[-1].cycle + self.config.macro_latency + 3

    def column_evals(self, last_pass: int) -> int:
        return sum(bin(e.col_en).count("1") for e in self.upto(last_pass))


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


def _check_budget(cfg: SbnnConfig, budget: int) -> None:
    if not 0 <= budget <= cfg.num_supports:
        raise ValueError(f"budget must be in 0..{cfg.num_supports} (planes after the base), "
                         f"got {budget}")


def _layer_plan(model: QuantizedModel, pass_: int, layer: int) -> list[tuple[int, int, int]]:
    """(col_block, row_block, plane) evaluations of one layer in one pass, in order.

    First layer after pass 0: plane ``pass_`` only, column blocks where it has an enabled
    column. Otherwise planes 0..pass_, skipping support planes with no enabled column.
    """
    cfg = model.config
    plan = []
    for cb in range(cfg.col_blocks(layer)):
        if layer == 0 and pass_ > 0:
            planes = [pass_] if column_enables(cfg, model, 0, cb, pass_) else []
        else:
            planes = [k for k in range(pass_ + 1)
                      if k == 0 or column_enables(cfg, model, layer, cb, k)]
        for rb in range(cfg.row_blocks(layer)) if planes else ():
            plan.extend((cb, rb, k) for k in planes)
    return plan


def schedule(model: QuantizedModel, budget: int) -> Schedule:
    """Evaluation order and start cycles under the controller's timing contract.

    Consecutive evaluations are ``macro_latency`` cycles apart in the same layer and pass,
    ``macro_latency + 2`` apart across a layer change (ADC codes accumulate, then thresholds
    produce the activations the next layer reads) and ``macro_latency + 3`` apart across a
    pass (plus the exit decision). The first starts at cycle 0.
    """
    cfg = model.config
    _check_budget(cfg, budget)
    evals: list[Evaluation] = []
    passes = []
    for p in range(budget + 1):
        plans = [(layer, _layer_plan(model, p, layer)) for layer in range(cfg.num_layers)]
        if not any(plan for _, plan in plans):
            continue  # only a single-layer network can have an empty pass
        passes.append(p)
        for layer, plan in plans:
            nrb = cfg.row_blocks(layer)
            for cb, rb, k in plan:
                if evals:
                    prev = evals[-1]
                    gap = 3 if prev.pass_ != p else 2 if prev.layer != layer else 0
                    cycle = prev.cycle + cfg.macro_latency + gap
                else:
                    cycle = 0
                evals.append(Evaluation(
                    index=len(evals), cycle=cycle, pass_=p, layer=layer, col_block=cb,
                    row_block=rb, plane=k, tile=_tile_base(cfg, layer) + cb * nrb + rb,
                    gain=cfg.plane_gains[k], col_en=column_enables(cfg, model, layer, cb, k),
                    adc_shift=cfg.adc_steps[layer].bit_length() - 1))
    return Schedule(cfg, tuple(evals), tuple(passes))


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

    classes: np.ndarray  # (B,) at the exit pass
    logits: np.ndarray  # (B, classes) int64 at the exit pass
    exit_pass: np.ndarray  # (B,)
    pass_logits: dict[int, np.ndarray]  # pass -> (B, classes)
    inputs: dict[tuple[int, int], np.ndarray]  # (pass, layer) -> (B, n) row codes
    adc: dict[tuple[int, int, int, int], np.ndarray] | None  # (pass, layer, rb, k) -> (B, m)


def _adc_layer(model, layer, x, planes, keep, adc, pass_, variation=None):
    """Per-plane masked ADC code sums of one layer; records codes when ``keep``.

    ``variation`` (golden/variability.py: IntegerMacro or FloatMacro) replaces the ideal
    column computation by the varied macro's."""
    cfg = model.config
    a, n = cfg.active_rows, cfg.layers[layer]
    shift = cfg.adc_steps[layer].bit_length() - 1
    xf = x.astype(np.float64)  # BLAS matmul; exact, sums stay far below 2**53
    out = {}
    for k in planes:
        total = 0
        for rb in range(cfg.row_blocks(layer)):
            rows = slice(rb * a, min(n, (rb + 1) * a))
            if variation is not None:
                q = variation.adc_codes(model, layer, k, rows, xf[:, rows])
            else:
                w = model.planes[layer][k][:, rows].astype(np.float64)
                s = np.rint(xf[:, rows] @ w.T).astype(np.int64) * cfg.plane_gains[k]
                q = np.clip(s >> shift, cfg.adc_min, cfg.adc_max)
            if k:
                q = q * model.support_mask[layer][:, k - 1]
            total = total + q
            if keep:
                adc[(pass_, layer, rb, k)] = q.astype(np.int32)
        out[k] = total
    return out


def margins(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit per row."""
    part = np.sort(logits, axis=1)
    return part[:, -1] - part[:, -2]


def run_hw(model: QuantizedModel, pixels: np.ndarray, budget: int | None = None,
           exit_margin: int | None = NEVER_EXIT, keep_adc: bool = False,
           variation=None) -> HwResult:
    """Run a batch of images through the hardware-exact integer path.

    ``variation``: a varied macro from golden/variability.py (``IntegerMacro`` is the RTL's
    arithmetic, ``FloatMacro`` the unrounded physical model); None is the ideal macro."""
    cfg = model.config
    budget = cfg.num_supports if budget is None else budget
    _check_budget(cfg, budget)
    passes = schedule(model, budget).passes
    x0 = input_codes(cfg, pixels)
    adc: dict = {}
    first = _adc_layer(model, 0, x0, range(budget + 1), keep_adc, adc, 0, variation)
    inputs = {}
    pass_logits = {}
    for p in passes:
        acc = sum(first[k] for k in range(p + 1))
        inputs[(p, 0)] = x = x0
        for layer in range(cfg.num_layers):
            if layer:
                acc = sum(_adc_layer(model, layer, x, range(p + 1), keep_adc, adc,
                                     p, variation).values())
            v = acc - model.thresholds[layer]
            if layer + 1 < cfg.num_layers:
                x = np.where(v >= 0, 1, -1).astype(np.int64)
                inputs[(p, layer + 1)] = x
        pass_logits[p] = v
    if keep_adc:  # first-layer codes do not depend on the pass: index them under each pass
        for (p0, layer, rb, k), q in list(adc.items()):
            if layer == 0 and p0 == 0:
                for p in passes:
                    adc[(p, 0, rb, k)] = q
    exit_pass = np.full(len(x0), passes[-1])
    if exit_margin is not None:
        decided = np.zeros(len(x0), dtype=bool)
        for p in passes[:-1]:
            hit = ~decided & (margins(pass_logits[p]) >= exit_margin)
            exit_pass[hit] = p
            decided |= hit
    logits = np.stack([pass_logits[p] for p in passes])[
        np.searchsorted(passes, exit_pass), np.arange(len(x0))]
    return HwResult(classes=np.argmax(logits, axis=1), logits=logits, exit_pass=exit_pass,
                    pass_logits=pass_logits, inputs=inputs, adc=adc if keep_adc else None)


def expected_trace(model: QuantizedModel, sched: Schedule, result: HwResult,
                   image: int) -> list[dict]:
    """The macro transactions one image must produce, in order (one dict per evaluation)."""
    cfg = model.config
    a, nt = cfg.active_rows, cfg.neurons_per_tile
    if result.adc is None:
        raise ValueError("run_hw(..., keep_adc=True) is needed to build a trace")
    trace = []
    for ev in sched.upto(int(result.exit_pass[image])):
        n, m = cfg.layers[ev.layer], cfg.layers[ev.layer + 1]
        row_x = np.zeros(a, dtype=np.int64)
        lo, hi = ev.row_block * a, min(n, (ev.row_block + 1) * a)
        row_x[: hi - lo] = result.inputs[(ev.pass_, ev.layer)][image, lo:hi]
        adc = np.zeros(cfg.macro_cols, dtype=np.int64)
        q = result.adc[(ev.pass_, ev.layer, ev.row_block, ev.plane)][image]
        for i in range(nt):
            j = ev.col_block * nt + i
            c = ev.plane * nt + i
            if j < m and ev.col_en >> c & 1:
                adc[c] = q[j]
        trace.append({"cycle": ev.cycle, "layer": ev.layer, "tile": ev.tile,
                      "plane": ev.plane, "pass": ev.pass_, "gain": ev.gain,
                      "col_en": ev.col_en, "row_x": tuple(int(v) for v in row_x),
                      "adc": tuple(int(v) for v in adc)})
    return trace


def expected_result(sched: Schedule, result: HwResult, image: int,
                    trace: list[dict] | None = None) -> dict:
    """What the result stream must return for one image (counters need its trace)."""
    e = int(result.exit_pass[image])
    out = {"cls": int(result.classes[image]),
           "logits": tuple(int(v) for v in result.logits[image]),
           "cycles": sched.total_cycles(e), "exit_plane": e,
           "macro_evals": len(sched.upto(e)), "column_evals": sched.column_evals(e),
           "adc_conversions": sched.column_evals(e)}
    if trace is not None:
        out["dac_conversions"] = sum(sum(1 for x in tx["row_x"] if x) for tx in trace)
    return out
