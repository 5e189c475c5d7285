"""The reference model of the hardware: hardware-exact integer inference, the evaluation
schedule under the timing contract, and the macro transactions and result it implies.

Every check of the RTL compares against this module (the cocotb benches, the fast cosim's
signatures and logs, the random-config equivalence run), so it is written from the spec
(docs/architecture.md), independently of the RTL:

* layer-0 row codes are ``pixel >> (8 - dac_bits)``; hidden row codes are +-1;
* every evaluation drives one row block (``active_rows`` rows, zero beyond the layer's
  inputs) with gain ``plane_gains[k]`` and digitizes each enabled column as
  ``clamp(floor(gain * sum_r x_r * w_r / step), adc_min, adc_max)``;
* a neuron's accumulator is the sum of its ADC codes over row blocks and evaluated planes;
* hidden activation = +1 iff acc >= theta, else -1; logits = acc - theta; class = first argmax.

Inference runs in *passes* p = 0 .. budget. Pass p uses planes 0..p everywhere and its own
thresholds (row p of ``model.thresholds[l]``), so its answer is that of a one-shot budget-p
model: the first layer only adds plane p to the accumulators it kept (its inputs are fixed),
later layers are recomputed. A first-layer column block with no enabled plane-p column is
not evaluated in pass p but *rethresholded*: its kept sums against pass p's thresholds, in a
one-cycle step of the schedule (:class:`Rethreshold`). After each pass the output's top-two
logit margin is compared with the exit margin; the answer is that of the first pass that is
confident, or of the last pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sbnn import timing
from sbnn.config import PIXEL_BITS, SbnnConfig

from .qmodel import QuantizedModel

__all__ = ["Evaluation", "Rethreshold", "Schedule", "HwResult", "schedule", "run_hw", "input_codes",
           "column_bits", "evaluation_codes", "dac_conversions", "ExpectedTransactions",
           "expected_transactions", "expected_trace", "expected_result", "NEVER_EXIT"]

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
    macro: int = 0  # which of the num_macros macros evaluates it (timing.macro_of)


@dataclass(frozen=True)
class Rethreshold:
    """A first-layer column block that pass ``pass_`` > 0 does not evaluate (none of its
    plane-``pass_`` columns is enabled): in its place in the evaluation order, a step that
    compares the block's kept sums with pass ``pass_``'s thresholds, starting at ``cycle``
    and taking ``timing.RETHRESHOLD_LATENCY`` cycles, with no macro evaluation."""

    cycle: int
    pass_: int
    col_block: int


@dataclass(frozen=True)
class Schedule:
    """Every evaluation of every pass up to a budget; an image exiting after pass e runs the
    prefix ``upto(e)``."""

    config: SbnnConfig
    evals: tuple[Evaluation, ...]
    passes: tuple[int, ...]  # the passes that run: 0 .. budget
    rethresholds: tuple[Rethreshold, ...]  # the steps without a macro evaluation
    result_cycles: tuple[int, ...]  # per pass: the cycle count of an image stopping after it

    def __len__(self) -> int:
        return len(self.evals)

    def upto(self, last_pass: int) -> tuple[Evaluation, ...]:
        return tuple(e for e in self.evals if e.pass_ <= last_pass)

    def total_cycles(self, last_pass: int | None = None) -> int:
        """Cycle at which the result is valid (= the reported cycle count) for an image that
        stops after ``last_pass`` (default: runs every pass)."""
        last_pass = self.passes[-1] if last_pass is None else last_pass
        return self.result_cycles[int(np.searchsorted(self.passes, last_pass, "right")) - 1]

    def macro_busy(self, last_pass: int | None = None) -> tuple[int, ...]:
        """Per macro: cycles with at least one of its evaluations in flight, for an image
        that stops after ``last_pass`` (default: runs every pass)."""
        last_pass = self.passes[-1] if last_pass is None else last_pass
        evals = self.upto(last_pass)
        return tuple(timing.busy_cycles([e.cycle for e in evals if e.macro == m],
                                        self.config.macro_latency)
                     for m in range(self.config.num_macros))

    def macro_utilization(self, last_pass: int | None = None) -> tuple[float, ...]:
        """Per macro: the fraction of the inference's cycles it is busy (``macro_busy``)."""
        cycles = self.total_cycles(last_pass)
        return tuple(b / cycles for b in self.macro_busy(last_pass))

    def column_evals(self, last_pass: int) -> int:
        return sum(bin(e.col_en).count("1") for e in self.upto(last_pass))

    def issued(self, exit_pass: np.ndarray) -> np.ndarray:
        """(B,) evaluations an image issues for each exit pass: the length of its prefix."""
        passes = np.array([e.pass_ for e in self.evals], dtype=np.int64)
        return np.searchsorted(passes, np.asarray(exit_pass), side="right").astype(np.int64)


def column_enables(cfg: SbnnConfig, model: QuantizedModel, layer: int, col_block: int,
                   plane: int) -> int:
    """Enabled columns of ``plane`` in one column block (plane 0: every real neuron)."""
    tiling = cfg.tiling
    bits = 0
    for neuron in tiling.block_neurons(layer, col_block):
        if plane == 0 or model.support_mask[layer][neuron, plane - 1]:
            bits |= 1 << tiling.plane_column(plane, neuron)
    return bits


def column_bits(words: Iterable[int], columns: int) -> np.ndarray:
    """Column-enable words (Python ints, any width) -> (N, columns) uint8 bits, column 0
    first."""
    return np.array([[(int(w) >> c) & 1 for c in range(columns)] for w in words],
                    dtype=np.uint8).reshape(-1, columns)


def _check_budget(cfg: SbnnConfig, budget: int) -> None:
    if not 0 <= budget <= cfg.num_supports:
        raise ValueError(f"budget must be in 0..{cfg.num_supports} (planes after the base), "
                         f"got {budget}")


def _layer_plan(model: QuantizedModel, pass_: int, layer: int
                ) -> list[tuple[int, int | None, int]]:
    """(col_block, row_block, plane) steps of one layer in one pass, in order.

    First layer after pass 0: plane ``pass_`` only; a column block where it has no enabled
    column is one rethreshold step, row block None. Otherwise planes 0..pass_, skipping
    support planes with no enabled column.
    """
    cfg = model.config
    plan: list[tuple[int, int | None, int]] = []
    for cb in range(cfg.col_blocks(layer)):
        if layer == 0 and pass_ > 0:
            planes = [pass_] if column_enables(cfg, model, 0, cb, pass_) else []
            if not planes:
                plan.append((cb, None, pass_))  # rethresholded
        else:
            planes = [k for k in range(pass_ + 1)
                      if k == 0 or column_enables(cfg, model, layer, cb, k)]
        for rb in range(cfg.row_blocks(layer)) if planes else ():
            plan.extend((cb, rb, k) for k in planes)
    return plan


def schedule(model: QuantizedModel, budget: int) -> Schedule:
    """Evaluation order, macros and start cycles under the controller's timing contract
    (docs/architecture.md, "Timing contract" and "Parallel and pipelined macros").

    Steps go in issue order; each starts at the earliest cycle that every rule allows:

    * not before the previous step (issue order; several evaluations may start in one
      cycle, on different macros);
    * an evaluation: not before ``macro_interval`` cycles after the last start of its macro
      (the j-th evaluation of its layer and pass goes to macro ``j mod num_macros``);
    * it retires (an evaluation ``macro_latency`` cycles after its start, a rethreshold
      step ``RETHRESHOLD_LATENCY``) not before the previous step retires (in-order
      retirement), and, when it is the last step of its column block, after the previous
      block's last step retires (one block reaches the threshold stage per cycle);
    * a rethreshold step: not before the previous step retires; the step after it not
      before it retires;
    * the first step of a new layer: ``LAYER_GAP`` cycles after the previous step retires;
      of a new pass: ``PASS_GAP`` cycles after.

    The result is valid ``RESULT_GAP`` cycles after the last step retires. With one macro
    and ``macro_interval = macro_latency`` this is the one-step-in-flight schedule
    (consecutive starts ``timing.start_gap`` apart). The first step starts at cycle 0. Every
    pass 0 .. budget runs: each has at least its first layer's column blocks.
    """
    cfg = model.config
    tiling = cfg.tiling
    _check_budget(cfg, budget)
    n_macros, interval, latency = cfg.num_macros, cfg.interval, cfg.macro_latency
    evals: list[Evaluation] = []
    rethresholds: list[Rethreshold] = []
    result_cycles = []
    macro_next = [0] * n_macros  # earliest next start of each macro
    prev = None  # (start, retire, layer, pass, rethreshold) of the previous step
    block_end = -1  # retire cycle of the last step of the previous column block
    for p in range(budget + 1):
        for layer in range(cfg.num_layers):
            plan = _layer_plan(model, p, layer)
            j = 0  # evaluations of this layer and pass so far (round-robin)
            for i, (cb, rb, k) in enumerate(plan):
                ends_block = i + 1 == len(plan) or plan[i + 1][0] != cb
                lat = timing.RETHRESHOLD_LATENCY if rb is None else latency
                if prev is None:
                    cycle = 0
                elif prev[2] != layer or prev[3] != p:
                    cycle = prev[1] + (timing.PASS_GAP if prev[3] != p else timing.LAYER_GAP)
                else:
                    cycle = max(prev[0], prev[1] - lat)
                    if prev[4] or rb is None:
                        cycle = max(cycle, prev[1])
                if rb is not None:
                    macro = timing.macro_of(j, n_macros)
                    cycle = max(cycle, macro_next[macro])
                if ends_block:
                    cycle = max(cycle, block_end + 1 - lat)
                    block_end = cycle + lat
                prev = (cycle, cycle + lat, layer, p, rb is None)
                if rb is None:
                    rethresholds.append(Rethreshold(cycle=cycle, pass_=p, col_block=cb))
                    continue
                macro_next[macro] = cycle + interval
                j += 1
                evals.append(Evaluation(
                    index=len(evals), cycle=cycle, pass_=p, layer=layer, col_block=cb,
                    row_block=rb, plane=k, tile=tiling.tile(layer, cb, rb),
                    gain=cfg.plane_gains[k], col_en=column_enables(cfg, model, layer, cb, k),
                    adc_shift=cfg.adc_steps[layer].bit_length() - 1, macro=macro))
        result_cycles.append(prev[1] + timing.RESULT_GAP)
    return Schedule(cfg, tuple(evals), tuple(range(budget + 1)), tuple(rethresholds),
                    tuple(result_cycles))


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
    shift = cfg.adc_steps[layer].bit_length() - 1
    xf = x.astype(np.float64)  # BLAS matmul; exact, sums stay far below 2**53
    out = {}
    for k in planes:
        total = 0
        for rb in range(cfg.row_blocks(layer)):
            rows = cfg.tiling.input_rows(layer, rb)
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
    passes = tuple(range(budget + 1))  # every pass runs (schedule())
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
            v = acc - model.thresholds[layer][p]  # pass p's own row, every block
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


def evaluation_codes(model: QuantizedModel, ev: Evaluation, result: HwResult,
                     images: int | slice | np.ndarray = slice(None)
                     ) -> tuple[np.ndarray, np.ndarray]:
    """What evaluation ``ev`` drives and returns for ``images`` (an index into the batch of
    ``result``: one image, a slice or an array), vectorized over them.

    Returns int64 ``(row_x, adc)``, shaped ``(..., active_rows)`` and ``(..., macro_cols)``:
    the row DAC codes of its row block (0 past the layer's inputs) and the ADC code of each
    column (the neuron's code on enabled columns, 0 on the others).
    """
    cfg = model.config
    tiling = cfg.tiling
    if result.adc is None:
        raise ValueError("run_hw(..., keep_adc=True) is needed to build a trace")
    inputs = result.inputs[(ev.pass_, ev.layer)][images]
    rows = tiling.input_rows(ev.layer, ev.row_block)
    row_x = np.zeros(inputs.shape[:-1] + (cfg.active_rows,), dtype=np.int64)
    row_x[..., : rows.stop - rows.start] = inputs[..., rows]
    neurons = np.array(tiling.block_neurons(ev.layer, ev.col_block), dtype=np.int64)
    columns = tiling.plane_column(ev.plane, neurons)
    enabled = column_bits([ev.col_en], cfg.macro_cols)[0, columns].astype(bool)
    codes = result.adc[(ev.pass_, ev.layer, ev.row_block, ev.plane)][images]
    adc = np.zeros(inputs.shape[:-1] + (cfg.macro_cols,), dtype=np.int64)
    adc[..., columns[enabled]] = codes[..., neurons[enabled]]
    return row_x, adc


def dac_conversions(row_x: np.ndarray) -> np.ndarray:
    """Row DACs converting in each transaction of ``row_x`` (row codes on the last axis):
    the rows driven with a nonzero code (a zero code costs no DAC energy)."""
    return np.count_nonzero(row_x, axis=-1)


@dataclass(frozen=True)
class ExpectedTransactions:
    """The macro transactions of a batch of images: image ``b`` issues the schedule's first
    ``issued[b]`` evaluations; the arrays hold every evaluation of the schedule for every
    image (int16 holds every row code, ``dac_bits <= 8``, and ADC code, ``adc_bits <= 16``).
    """

    schedule: Schedule
    issued: np.ndarray  # (B,) int64: evaluations each image issues
    row_x: np.ndarray  # (B, E, active_rows) int16 row DAC codes
    adc: np.ndarray  # (B, E, macro_cols) int16 ADC codes, 0 on disabled columns

    @property
    def issued_mask(self) -> np.ndarray:
        """(B, E) True where the image issues the evaluation."""
        return np.arange(len(self.schedule))[None, :] < self.issued[:, None]

    @property
    def col_en(self) -> np.ndarray:
        """(E, macro_cols) uint8 column-enable bits of each evaluation."""
        return column_bits([ev.col_en for ev in self.schedule.evals],
                           self.schedule.config.macro_cols)

    @property
    def dac_conversions(self) -> np.ndarray:
        """(B,) int64 row DAC conversions of each image over the evaluations it issues."""
        return np.where(self.issued_mask, dac_conversions(self.row_x), 0).sum(axis=1)

    def per_evaluation(self, name: str) -> np.ndarray:
        """(E,) int64 attribute ``name`` of each :class:`Evaluation` (``cycle``, ``tile``..)."""
        return np.array([getattr(ev, name) for ev in self.schedule.evals], dtype=np.int64)


def expected_transactions(model: QuantizedModel, sched: Schedule,
                          result: HwResult) -> ExpectedTransactions:
    """Every macro transaction of every image of ``result`` (``run_hw(..., keep_adc=True)``
    on the budget of ``sched``), one vectorized step per evaluation of the schedule."""
    cfg = model.config
    images, evals = len(result.exit_pass), len(sched)
    row_x = np.zeros((images, evals, cfg.active_rows), dtype=np.int16)
    adc = np.zeros((images, evals, cfg.macro_cols), dtype=np.int16)
    for t, ev in enumerate(sched.evals):
        row_x[:, t], adc[:, t] = evaluation_codes(model, ev, result)
    return ExpectedTransactions(sched, sched.issued(result.exit_pass), row_x, adc)


def expected_trace(model: QuantizedModel, sched: Schedule, result: HwResult,
                   image: int) -> list[dict]:
    """The macro transactions one image must produce, in order (one dict per evaluation)."""
    trace = []
    for ev in sched.upto(int(result.exit_pass[image])):
        row_x, adc = evaluation_codes(model, ev, result, image)
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
        out["dac_conversions"] = sum(int(dac_conversions(np.array(tx["row_x"])))
                                     for tx in trace)
    return out
