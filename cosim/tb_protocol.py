"""cocotb protocol corners of the controller's streams, every one checked against the golden
model (golden/hwpath.py), never against values the RTL produced.

One cocotb test per corner (tests/test_cosim_protocol.py runs the module through
cosim/runner.py and reads the per-corner report):

* ``back_to_back``: images with no idle cycle between them; the next image's first beat is
  offered while the previous one computes and must be taken in the cycle after the result.
* ``result_backpressure``: the result stream is held not ready for many cycles (and toggled
  at random): the payload must not change while it waits, no result is lost or repeated, and
  the controller then takes the next image.
* ``pixel_gaps``: pixel valid deasserted at random beats, with random garbage on the payload
  while it is low (the controller must ignore it); results and cycle counts are counted from
  the last beat.
* ``reset_mid_inference``: ``rst`` in the middle of loading, of computing (evaluation in
  flight, pass boundary, exit decision) and of a stalled result; the inference is dropped
  without a result and the next one matches the golden model with what reset restores
  (docs/architecture.md, "Reset and stream protocol").
* ``reprogram_between_inferences``: a different model's weights, thresholds and masks, then
  thresholds only, masks only, budget, exit margin, a per-image budget that must not stick,
  and prog ops offered during an inference (held until it is over).

Every cycle one coroutine samples the design at the falling clock edge and drives what the
next rising edge takes (as tb_inference.Bench does), so Python wakes once per cycle. The
checking is done by :class:`StreamChecker`, plain Python fed decoded samples, so that
tests/test_cosim_protocol.py can prove without a simulator that it flags repeated, lost,
changed, late and spurious results. Every wait has a cycle limit and raises an
AssertionError naming what it waited for.

With the job's ``golden_model`` set (a deliberately wrong model), expectations for the
programmed job model come from it instead: the report then counts, per corner, the images
whose expectation was wrong and the images that mismatched, and they must be equal.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock

from sbnn.config import SbnnConfig
from sbnn.cosim.scoreboard import TRACE_FIELDS, Scoreboard
from sbnn.cosim.tb_inference import Bench
from sbnn.gen.image import build_image
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import ProgOp, Sizes, pixel_layout, prog_layout

__all__ = ["Image", "StreamChecker", "ProtoBench"]


@dataclass
class Image:
    """One image through the streams: what to send, what the golden model expects, and what
    the checker saw. ``expected_*`` are filled when its first beat is accepted (the register
    state then is what the golden run uses)."""

    pixels: np.ndarray | None
    budget: int | None = None  # per-image override on the first beat
    #: result.ready policy: f(cycles the result has been valid so far) -> ready this cycle
    ready: object = None
    name: str = ""
    expected_trace: list = field(default_factory=list)
    expected_result: dict = field(default_factory=dict)
    limit: int = 0  # compute cycles within which the result must appear
    mutated: bool = False  # expectation from the deliberately wrong golden model
    beats: list = field(default_factory=list)
    # filled while it runs
    first_beat: int | None = None  # cycle whose rising edge took beat 0
    last_beat: int | None = None
    start: int | None = None  # compute cycle 0
    trace: list = field(default_factory=list)
    pending: list = field(default_factory=list)  # started, done not yet seen
    first_valid: int | None = None
    raw: object = None
    taken: int | None = None  # cycle whose rising edge took the result
    ok: bool = True


class StreamChecker:
    """Cycle-by-cycle check of the macro bus and the result stream against expected images.

    ``loaded(img, cycle)`` is called with compute cycle 0 of an image; ``sample`` once per
    cycle with what the design shows (``start``: the decoded transaction or None, ``done``:
    ADC codes or None, ``rvalid``/``rraw``: result valid and raw payload) and the ready the
    bench drives for the coming edge. Images complete in order.
    """

    def __init__(self, decode=lambda raw: raw):
        self.decode = decode
        self.queue: deque[Image] = deque()  # loaded, result not yet taken
        self.finished: list[Image] = []
        self.errors: list[str] = []
        self.sb = Scoreboard()
        self.stall_cycles = 0  # cycles a valid result waited for ready

    def _error(self, img: Image | None, text: str) -> None:
        if img is not None:
            img.ok = False
        self.errors.append(text)

    def loaded(self, img: Image, cycle: int) -> None:
        img.start = cycle
        self.queue.append(img)

    def sample(self, cycle: int, start: dict | None, done: tuple | None, rvalid: bool,
               rraw: object, rready: bool) -> None:
        head = self.queue[0] if self.queue else None
        if start is not None:
            if head is None:
                self._error(None, f"macro start at cycle {cycle} with no inference running")
            else:
                start["cycle"] = cycle - head.start
                head.pending.append(start)
        if done is not None:
            if head is None or not head.pending:
                self._error(head, f"macro done at cycle {cycle} without a start "
                                  f"({head.name if head else 'no inference running'})")
            else:
                tx = head.pending.pop(0)
                tx["adc"] = done
                head.trace.append(tx)
        if rvalid:
            if head is None:
                # A repeated result (valid again after its handshake) lands here.
                self._error(None, f"result valid at cycle {cycle} with no inference pending "
                                  f"(repeated or spurious result; {len(self.finished)} "
                                  f"results taken so far)")
                return
            if head.first_valid is None:
                head.first_valid, head.raw = cycle, rraw
            elif rraw != head.raw:
                self._error(head, f"{head.name}: result payload changed at cycle {cycle} "
                                  f"while waiting for ready (valid since {head.first_valid})")
            if rready:
                self._finish(head, cycle)
            else:
                self.stall_cycles += 1
        elif head is not None and head.first_valid is not None:
            self._error(head, f"{head.name}: result valid dropped at cycle {cycle} before it "
                              f"was taken (valid since {head.first_valid}): result lost")
            head.first_valid = None

    def _finish(self, img: Image, cycle: int) -> None:
        self.queue.popleft()
        img.taken = cycle
        self.finished.append(img)
        idx = len(self.finished) - 1
        before = len(self.sb.mismatches)
        if not self.sb.check_image(idx, img.expected_trace, img.trace, img.expected_result,
                                   self.decode(img.raw)):
            img.ok = False
            for m in self.sb.mismatches[before:]:  # the first transaction, then the result
                self.errors.append(f"{img.name}: {m.what}"
                                   f"{f' at cycle {m.cycle}' if m.cycle is not None else ''}"
                                   f": field '{m.field}' expected {m.expected}, got "
                                   f"{m.actual}")
        if img.pending:
            self._error(img, f"{img.name}: result taken with {len(img.pending)} evaluations "
                             f"still in flight")
        at = img.first_valid - img.start
        if at != img.expected_result["cycles"]:
            self._error(img, f"{img.name}: result valid at compute cycle {at}, the golden "
                             f"timing contract says {img.expected_result['cycles']}")

    def overdue(self, cycle: int) -> str | None:
        """What is awaited past its limit (the head image's result), else None."""
        head = self.queue[0] if self.queue else None
        if head is not None and head.first_valid is None and cycle - head.start > head.limit:
            last = head.trace[-1] if head.trace else None
            where = {k: last[k] for k in ("cycle", "pass", "layer", "tile")} if last else None
            return (f"result of {head.name} not valid within {head.limit} cycles after compute "
                    f"start (golden: cycle {head.expected_result.get('cycles')}); "
                    f"{len(head.trace)} transactions seen, last {where}, "
                    f"{len(head.pending)} in flight")
        return None

    def abandon(self) -> list[Image]:
        """Reset: drop the images in flight; each must have matched its golden trace so far."""
        dropped = list(self.queue)
        self.queue.clear()
        for img in dropped:
            for i, (exp, act) in enumerate(zip(img.expected_trace, img.trace)):
                bad = [f for f in TRACE_FIELDS if exp[f] != act[f]]
                if bad:
                    self._error(img, f"{img.name} (reset later): eval {i} field '{bad[0]}' "
                                     f"expected {exp[bad[0]]}, got {act[bad[0]]}")
                    break
            if len(img.trace) > len(img.expected_trace):
                self._error(img, f"{img.name} (reset later): {len(img.trace)} transactions, "
                                 f"golden has {len(img.expected_trace)}")
        return dropped


def _always(_):
    return True


class ProtoBench(Bench):
    """Bench with independent per-cycle drivers for prog, pixels and result.ready, a register
    model (budget, exit margin, programmed model) for the golden expectations, and reset
    injection. All activity goes through :meth:`run_until`, one step per cycle."""

    def __init__(self, dut, cfg: SbnnConfig, seed: int, wrong: dict | None = None,
                 keep_going: bool = False):
        super().__init__(dut, cfg)
        self.rand = random.Random(seed)
        self.checker = StreamChecker(self.codec.result)
        self.wrong = wrong or {}  # id(model) -> wrong model used for its expectations
        self.keep_going = keep_going
        self.model: QuantizedModel | None = None
        self.budget_reg = cfg.num_supports  # reset values (docs/architecture.md)
        self.margin: int | None = None
        self.pix_w = pixel_layout(cfg).size
        self.prog_w = prog_layout(cfg).size
        sz = Sizes(cfg)
        self.margin_ones = (1 << sz.margin_bits) - 1  # the reset value: never exit
        # The largest margin prog can write (data may be narrower than the register).
        self.margin_never = (1 << min(sz.data_bits, sz.margin_bits)) - 1
        self.to_send: deque[Image] = deque()
        self.beat = 0
        self.pix_hold = False  # a beat is offered and was not yet taken
        self.pix_gap = 0.0
        self.prog_ops: deque = deque()
        self.prog_hold = False
        self.prog_gap = 0.0
        self.ready_default = _always
        self.waits = {"pixels": 0, "prog": 0}
        self.stats = {"pixel_gap_cycles": 0, "prog_gap_cycles": 0, "resets": [],
                      "prog_accepted_while_busy": 0, "prog_held_while_busy": 0,
                      "prog_with_first_beat": []}  # ops taken in a first beat's cycle
        self.images: list[Image] = []
        self._sched: dict = {}

    # ------------------------------------------------------------------ golden side
    def schedule(self, model: QuantizedModel, budget: int) -> hwpath.Schedule:
        key = (id(model), budget)
        if key not in self._sched:
            self._sched[key] = hwpath.schedule(model, budget)
        return self._sched[key]

    def golden(self, model: QuantizedModel, pixels: np.ndarray, budget: int,
               margin: int | None) -> tuple[list, dict]:
        sched = self.schedule(model, budget)
        res = hwpath.run_hw(model, pixels[None], budget, margin, keep_adc=True)
        trace = hwpath.expected_trace(model, sched, res, 0)
        return trace, hwpath.expected_result(sched, res, 0, trace)

    def image_budget(self, img: Image) -> int:
        return self.budget_reg if img.budget is None else min(img.budget,
                                                              self.cfg.num_supports)

    def expect(self, img: Image) -> None:
        """Golden expectation from the register model at the image's first beat."""
        model = self.wrong.get(id(self.model), self.model)
        img.mutated = model is not self.model
        img.expected_trace, img.expected_result = self.golden(
            model, img.pixels, self.image_budget(img), self.margin)
        k = self.cfg.num_supports
        img.limit = max(self.schedule(model, k).total_cycles(),
                        self.schedule(self.model, k).total_cycles()) + 16

    def differs(self, pixels, a: tuple, b: tuple) -> bool:
        """Whether two (model, budget, margin) register states give different golden
        transactions or results for an image: the property under test can then fail."""
        return self.golden(a[0], pixels, a[1], a[2]) != self.golden(b[0], pixels, b[1], b[2])

    # ------------------------------------------------------------------ stimulus
    def send(self, imgs: list[Image]) -> None:
        for img in imgs:
            img.name = img.name or f"image {len(self.images)}"
            img.beats = self.codec.pixel_beats(img.pixels, img.budget)
            self.images.append(img)
            self.to_send.append(img)

    def queue_prog(self, ops, model: QuantizedModel | None = None) -> None:
        """Queue prog ops (``model``: the model they leave programmed once all are taken)."""
        self.prog_ops.extend(ops)
        if model is not None:
            self.prog_ops.append(("model", model))

    def _apply(self, op) -> None:
        kind, _, value = op
        if kind == ProgOp.BUDGET:
            self.budget_reg = min(value, self.cfg.num_supports)
        elif kind == ProgOp.EXIT_MARGIN:
            self.margin = None if value == self.margin_ones else value

    # ------------------------------------------------------------------ the cycle
    def _sample_start(self) -> dict | None:
        p = self.p
        if not p["start"].value:
            return None
        ctx = int(self.trace_port.value)
        lb, pb = self.layer_bits, self.plane_bits
        return {"layer": ctx & ((1 << lb) - 1), "plane": (ctx >> lb) & ((1 << pb) - 1),
                "pass": (ctx >> (lb + pb)) & ((1 << pb) - 1),
                "tile": int(p["group"].value), "gain": int(p["gain"].value),
                "col_en": int(p["col_en"].value),
                "row_x": self.codec.row_x(int(p["row_x"].value))}

    def _step(self) -> None:
        """Sample cycle ``self.cycle`` and drive the coming rising edge."""
        dut, c, chk = self.dut, self.cycle, self.checker
        start = self._sample_start()
        done = self.codec.adc(int(self.p["adc"].value)) if self.p["done"].value else None
        rvalid = bool(dut.result__valid.value)
        rraw = int(dut.result__payload.value) if rvalid else None
        head = chk.queue[0] if chk.queue else None
        waited = c - head.first_valid if head is not None and head.first_valid is not None \
            else (0 if rvalid else -1)
        policy = (head.ready if head is not None and head.ready else self.ready_default)
        rready = bool(policy(waited))
        dut.result__ready.value = int(rready)
        chk.sample(c, start, done, rvalid, rraw, rready)
        busy = bool(chk.queue) or self.beat != 0  # an image is loading, computing or output
        taken_op = None

        # prog first: an op taken in the same cycle as an image's first beat applies to it
        while self.prog_ops and self.prog_ops[0][0] == "model":
            self.model = self.prog_ops.popleft()[1]
        if self.prog_ops:
            if not self.prog_hold and self.prog_gap and self.rand.random() < self.prog_gap:
                dut.prog__valid.value = 0
                dut.prog__payload.value = self.rand.getrandbits(self.prog_w)
                self.stats["prog_gap_cycles"] += 1
            else:
                dut.prog__valid.value = 1
                dut.prog__payload.value = self.codec.prog(*self.prog_ops[0])
                self.prog_hold = True
                if dut.prog__ready.value:
                    if busy:
                        self.stats["prog_accepted_while_busy"] += 1
                    taken_op = self.prog_ops.popleft()
                    self._apply(taken_op)
                    self.prog_hold = False
                    self.waits["prog"] = 0
                    while self.prog_ops and self.prog_ops[0][0] == "model":
                        self.model = self.prog_ops.popleft()[1]
                else:
                    self.stats["prog_held_while_busy"] += int(busy)
                    self.waits["prog"] = 0 if busy else self.waits["prog"] + 1
        else:
            dut.prog__valid.value = 0
            dut.prog__payload.value = self.rand.getrandbits(self.prog_w)

        if self.to_send:
            img = self.to_send[0]
            if not self.pix_hold and self.pix_gap and self.rand.random() < self.pix_gap:
                dut.pixels__valid.value = 0  # garbage payload: must be ignored
                dut.pixels__payload.value = self.rand.getrandbits(self.pix_w)
                self.stats["pixel_gap_cycles"] += 1
            else:
                dut.pixels__valid.value = 1
                dut.pixels__payload.value = img.beats[self.beat]
                self.pix_hold = True
                if dut.pixels__ready.value:
                    self.pix_hold = False
                    self.waits["pixels"] = 0
                    if self.beat == 0:
                        img.first_beat = c
                        self.expect(img)
                        if taken_op is not None:
                            self.stats["prog_with_first_beat"].append(taken_op[0].name)
                    self.beat += 1
                    if self.beat == len(img.beats):
                        img.last_beat = c
                        self.beat = 0
                        self.to_send.popleft()
                        chk.loaded(img, c + 1)
                else:
                    self.waits["pixels"] = 0 if chk.queue else self.waits["pixels"] + 1
        else:
            dut.pixels__valid.value = 0
            dut.pixels__payload.value = self.rand.getrandbits(self.pix_w)

        self._watchdog(c)
        if chk.errors and not self.keep_going:
            raise AssertionError(chk.errors[0])

    def _watchdog(self, c: int) -> None:
        late = self.checker.overdue(c)
        if late:
            raise AssertionError(late)
        if self.waits["pixels"] > 8:
            img = self.to_send[0]
            raise AssertionError(f"pixels.ready low for {self.waits['pixels']} cycles with no "
                                 f"inference running, waiting to send beat {self.beat} of "
                                 f"{img.name}")
        if self.waits["prog"] > 8:
            raise AssertionError(f"prog.ready low for {self.waits['prog']} cycles with no "
                                 f"inference running, waiting to send {self.prog_ops[0]}")

    async def run_until(self, cond, limit: int, what: str) -> None:
        """Step cycle by cycle until ``cond()``; AssertionError naming ``what`` after
        ``limit`` cycles."""
        for _ in range(limit):
            if cond():
                return
            self._step()
            await self.tick()
        if not cond():
            head = self.checker.queue[0] if self.checker.queue else None
            raise AssertionError(
                f"waited {limit} cycles for {what}: {len(self.to_send)} images unsent "
                f"(beat {self.beat}), {len(self.prog_ops)} prog ops queued, "
                f"in flight: {head.name if head else None}"
                f"{f' at compute cycle {self.cycle - head.start}' if head else ''}")

    def _budget_cycles(self, imgs: list[Image]) -> int:
        k = self.cfg.num_supports
        per = self.schedule(self.model, k).total_cycles() + 64 if self.model else 64
        stall = 0
        for img in imgs:
            if img.ready is not None:  # the longest hold the policy can ask for
                stall += next((w for w in range(2000) if img.ready(w)), 2000)
        gap = 1.0 / max(1e-3, 1.0 - self.pix_gap)
        return int(len(imgs) * (per + self.cfg.input_beats * gap * 4) + stall + 64)

    async def flush(self, what: str = "all queued prog ops and images") -> None:
        """Run until every queued prog op is taken and every sent image's result is taken."""
        imgs = [i for i in self.images if i.taken is None]
        limit = self._budget_cycles(imgs) + 4 * len(self.prog_ops) + 64
        await self.run_until(lambda: not self.prog_ops and not self.to_send
                             and not self.checker.queue, limit, what)

    async def idle(self, cycles: int) -> None:
        """Cycles with nothing offered: the checker flags any spurious start or result."""
        for _ in range(cycles):
            self._step()
            await self.tick()

    async def pulse_reset(self, cycles: int = 2) -> list[Image]:
        """Assert rst for ``cycles`` rising edges from this cycle on, with every valid and
        ready low; returns the dropped images. The register model takes its reset values."""
        dut, chk = self.dut, self.checker
        start = self._sample_start()
        done = self.codec.adc(int(self.p["adc"].value)) if self.p["done"].value else None
        rvalid = bool(dut.result__valid.value)
        chk.sample(self.cycle, start, done, rvalid,
                   int(dut.result__payload.value) if rvalid else None, False)
        head = chk.queue[0] if chk.queue else (self.to_send[0] if self.beat else None)
        where = {"cycle": self.cycle, "image": head.name if head else None,
                 "loading_beat": self.beat,
                 "compute_cycle": self.cycle - head.start if head and head.start is not None
                 else None,
                 "in_flight": len(head.pending) if head else 0,
                 "result_valid": rvalid}
        self.stats["resets"].append(where)
        dut.rst.value = 1
        for name in ("prog__valid", "pixels__valid", "result__ready"):
            getattr(dut, name).value = 0
        for _ in range(cycles):
            await self.tick()
            # Registers are reset from the first reset edge on: nothing may come out.
            for sig, what in ((dut.result__valid, "result valid"),
                              (self.p["start"], "macro start"), (self.p["done"], "macro done")):
                if sig.value:
                    chk.errors.append(f"{what} at cycle {self.cycle} while rst is asserted")
        dut.rst.value = 0
        await self.tick()  # first cycle out of reset; sampled by the next step
        dropped = chk.abandon()
        if self.beat:
            dropped.append(self.to_send.popleft())
        self.beat, self.pix_hold, self.prog_hold = 0, False, False
        for img in dropped:
            img.taken = -1  # never to be taken
        if self.prog_ops:
            raise AssertionError("pulse_reset with prog ops still queued (test error)")
        self.budget_reg, self.margin = self.cfg.num_supports, None
        return dropped


# ====================================================================== corners

def _job() -> dict:
    return json.loads(Path(os.environ["SBNN_COSIM_JOB"]).read_text())


def _setup(job: dict):
    cfg = SbnnConfig.from_dict(json.loads(Path(job["config"]).read_text()))
    model_a = QuantizedModel.load(job["model"], cfg)
    # A second model for reprogramming: same config, independent weights and masks.
    model_b = QuantizedModel.random(cfg, np.random.default_rng(job["random_seed"] + 1),
                                    mask_keep=0.6)
    with np.load(job["images"]) as data:
        images = data["images"][: job["count"]].reshape(-1, cfg.layers[0])
    wrong = {}
    if job.get("golden_model"):
        wrong[id(model_a)] = QuantizedModel.load(job["golden_model"], cfg)
    return cfg, model_a, model_b, images, wrong


def _report(name: str, entry: dict) -> None:
    path = Path(_job()["report"])
    report = json.loads(path.read_text()) if path.exists() else {"corners": {}}
    report["corners"][name] = entry
    report["mismatches"] = sum(len(c["errors"]) for c in report["corners"].values())
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def corner(func):
    """Wrap a scenario as a cocotb test: clock, reset, the scenario, a quiet tail, report."""

    @cocotb.test(name=func.__name__)
    async def test(dut):
        job = _job()
        cfg, model_a, model_b, images, wrong = _setup(job)
        bench = ProtoBench(dut, cfg, seed=job["random_seed"], wrong=wrong,
                           keep_going=bool(wrong))
        cocotb.start_soon(Clock(dut.clk, round(1000.0 / cfg.clock_mhz, 3), unit="ns").start())
        await bench.reset()
        t0, error = time.time(), None
        try:
            await func(bench, model_a, model_b, images)
            await bench.flush("the scenario's last results")
            await bench.idle(2 * cfg.macro_latency + 16)  # nothing may follow the results
        except Exception as exc:  # reported per corner; a wrong-golden run goes on
            error = str(exc) if isinstance(exc, AssertionError) else \
                f"{type(exc).__name__}: {exc}"
        chk = bench.checker
        checked = [i for i in bench.images if i.taken is not None and i.taken >= 0]
        entry = {
            "errors": chk.errors[:20] + ([error] if error and error not in chk.errors else []),
            "timeout_or_abort": error,
            "images_sent": len(bench.images), "results": len(chk.finished),
            "results_checked": chk.sb.results, "transactions_checked": chk.sb.transactions,
            "mutated_images": sum(i.mutated for i in checked),
            "mismatched_images": sum(not i.ok for i in checked),
            "stall_cycles": chk.stall_cycles,
            "load_gaps": [b.first_beat - a.taken for a, b in zip(checked, checked[1:])
                          if b.first_beat is not None and a.taken is not None],
            "load_spans": [i.last_beat - i.first_beat for i in checked],
            "exit_planes": [i.expected_result.get("exit_plane") for i in checked],
            "sim_cycles": bench.cycle, "wall_s": round(time.time() - t0, 2),
            **bench.stats, **getattr(bench, "extra", {}),
        }
        _report(func.__name__, entry)
        if not wrong:
            assert not entry["errors"], entry["errors"][0]
    return test


def _split_margin(model, images, budget: int) -> int:
    """An exit margin that some of ``images`` reach after pass 0 and some do not."""
    m = hwpath.margins(hwpath.run_hw(model, images, budget, None).pass_logits[0])
    return int(np.median(m)) + 1 if m.max() > m.min() else int(m.max())


def _picker(images):
    """pick(pred, what): the index of the first unused image satisfying ``pred``."""
    used: set[int] = set()

    def pick(pred, what: str) -> int:
        for i, img in enumerate(images):
            if i not in used and pred(img):
                used.add(i)
                return i
        raise AssertionError(f"no test image {what} (test setup)")
    return pick


async def _program_model(bench: ProtoBench, model, extra=()) -> None:
    bench.queue_prog(build_image(model).program() + list(extra), model)
    await bench.flush("programming a model")


@corner
async def back_to_back(bench: ProtoBench, a, b, images):
    """Back-to-back images, no idle cycle: per-image budgets (one above K, clamped) and an
    exit margin so that the compute time differs from image to image."""
    k = bench.cfg.num_supports
    margin = _split_margin(a, images[:6], k)
    await _program_model(bench, a, [(ProgOp.EXIT_MARGIN, 0, margin)])
    budgets = [None, 0, k, 1, None, k + 1]
    bench.send([Image(images[i], budget=bg) for i, bg in enumerate(budgets)])
    await bench.flush()
    bench.extra = {"exit_margin": margin}


@corner
async def result_backpressure(bench: ProtoBench, a, b, images):
    """Result held not ready for 300, 1 and 60 cycles and toggled at random, while the next
    image's first beat is already offered."""
    await _program_model(bench, a)
    rand = random.Random(5)
    policies = [lambda w: w >= 300, lambda w: w >= 1, lambda w: w >= 0 and rand.random() < 0.2,
                lambda w: w >= 60, None]
    bench.send([Image(images[6 + i], ready=p) for i, p in enumerate(policies)])
    await bench.flush()


@corner
async def pixel_gaps(bench: ProtoBench, a, b, images):
    """Pixel valid low at random beats (half of them), garbage payload while low, the result
    ready toggled at random as well."""
    k = bench.cfg.num_supports
    await _program_model(bench, a)
    bench.pix_gap = 0.5
    rand = random.Random(9)
    bench.ready_default = lambda w: rand.random() < 0.5
    bench.send([Image(images[11 + i], budget=bg) for i, bg in enumerate([None, 0, 1, None])])
    await bench.flush()
    # A prog op offered in the middle of loading waits for that image's result: both
    # images exit early with the margin programmed before, neither with the new one.
    margin = _split_margin(a, images, k)
    pick = _picker(images)

    def exits(img) -> bool:
        return int(hwpath.run_hw(a, img[None], k, margin).exit_pass[0]) == 0

    bench.queue_prog([(ProgOp.EXIT_MARGIN, 0, margin)])
    await bench.flush("an exit margin")
    imgs = [Image(images[pick(exits, "exiting early")], name=f"image {i} ({what})")
            for i, what in enumerate(("loading while EXIT_MARGIN offered",
                                      "after EXIT_MARGIN offered"), start=len(bench.images))]
    bench.send(imgs)
    await bench.run_until(lambda: bench.beat >= 2, 200, f"{imgs[0].name}: beat 2")
    bench.queue_prog([(ProgOp.EXIT_MARGIN, 0, bench.margin_never)])
    await bench.flush()


@corner
async def reset_mid_inference(bench: ProtoBench, a, b, images):
    """Reset while loading, computing and holding a result; the next image, with nothing
    reprogrammed, must match the golden model with the registers' reset values (budget K,
    exit margin never) and the memories (weights, thresholds, masks) kept."""
    cfg, k = bench.cfg, bench.cfg.num_supports
    # The mask summary persists over reset (reset_less plane_any): the model must have a
    # support plane masked in a whole column block, else a summary reset to its init value
    # (every plane present) would not change a single transaction.
    empty = [(layer, cb, p) for layer in range(cfg.num_layers)
             for cb in range(cfg.col_blocks(layer)) for p in range(1, cfg.planes)
             if not hwpath.column_enables(cfg, a, layer, cb, p)]
    assert empty, "model A needs a support plane masked in a whole column block"
    await _program_model(bench, a)
    margin = _split_margin(a, images, k)
    pick = _picker(images)

    def exits_after_pass0(img) -> bool:
        return int(hwpath.run_hw(a, img[None], k, margin).exit_pass[0]) >= 1

    def at_compute(fn):  # the head image has reached compute cycle fn(image)
        def cond():
            q = bench.checker.queue
            return bool(q) and bench.cycle - q[0].start >= fn(q[0])
        return cond

    def first_eval(img: Image, pass_: int, layer: int) -> int:
        return next((t["cycle"] for t in img.expected_trace
                     if t["pass"] == pass_ and t["layer"] == layer), 0)

    def result_waited(n):
        def cond():
            q = bench.checker.queue
            return bool(q) and q[0].first_valid is not None and \
                bench.cycle - q[0].first_valid >= n
        return cond

    # (where, register ops before it, which image, reset condition, its result.ready)
    rounds = [
        ("loading, 2 of the beats taken", [(ProgOp.BUDGET, 0, 0)], None,
         lambda: bench.beat >= 2, None),
        ("compute cycle 1, first evaluation in flight", [(ProgOp.BUDGET, 0, 0)], None,
         at_compute(lambda i: 1), None),
        ("pass 1, first layer-1 evaluation in flight", [(ProgOp.EXIT_MARGIN, 0, margin)],
         exits_after_pass0, at_compute(lambda i: first_eval(i, 1, 1) + 1), None),
        ("exit decision, the cycle before the result", [(ProgOp.BUDGET, 0, 1)], None,
         at_compute(lambda i: i.expected_result["cycles"] - 1), None),
        ("result valid, held not ready for 5 cycles", [(ProgOp.EXIT_MARGIN, 0, margin)], None,
         result_waited(5), lambda w: False),
    ]
    bench.extra = {"reset_rounds": [r[0] for r in rounds]}
    for where, ops, pred, when, ready in rounds:
        bench.queue_prog(ops)
        await bench.flush(f"the registers before the reset at '{where}'")
        victim = pick(pred or (lambda img: True), f"for the reset at '{where}'")
        bench.send([Image(images[victim], ready=ready, name=f"image {victim} (reset at: "
                                                            f"{where})")])
        await bench.run_until(when, bench._budget_cycles(list(bench.to_send)) + 64,
                              f"the reset point '{where}'")
        before = (bench.model, bench.budget_reg, bench.margin)
        dropped = await bench.pulse_reset()
        assert dropped, f"nothing was in flight at the reset point '{where}'"
        await bench.idle(2 * cfg.macro_latency + 4)
        after = (bench.model, bench.budget_reg, bench.margin)
        # An image whose golden outcome differs between reset and kept register values, so
        # a reset that failed to restore them cannot pass.
        nxt = pick(lambda img, a=after, b=before: bench.differs(img, a, b),
                   f"that tells reset values from kept ones after '{where}'")
        bench.send([Image(images[nxt], name=f"image {nxt} (after the reset at: {where})")])
        await bench.flush(f"the first result after the reset at '{where}'")


@corner
async def reprogram_between_inferences(bench: ProtoBench, a, b, images):
    """Another model, then thresholds only, masks only, budget, margin, a per-image budget
    that must not stick, prog ops offered while an image computes, and model A again; the
    prog stream has random gaps with garbage payloads."""
    cfg, k = bench.cfg, bench.cfg.num_supports
    rng = np.random.default_rng(11)
    pick = _picker(images)
    bench.prog_gap = 0.3
    disc = []

    async def step(ops, model, what, budget=None, if_stuck=None, pred=None):
        """Program ``ops``; run an image whose golden outcome differs between the register
        state before and after them (or ``if_stuck``), so ignored ops cannot pass."""
        before = if_stuck or (bench.model, bench.budget_reg, bench.margin)
        bench.queue_prog(ops, model)
        await bench.flush(f"reprogramming: {what}")
        now = (bench.model, bench.budget_reg if budget is None else budget, bench.margin)
        i = pick(lambda img: (pred is None or pred(img)) and bench.differs(img, before, now),
                 f"that {what} changes")
        disc.append(what)
        bench.send([Image(images[i], budget=budget, name=f"image {i} ({what})")])
        await bench.flush()

    await _program_model(bench, a)
    bench.send([Image(images[pick(lambda img: True, "")], name="model A")])
    await bench.flush()
    await step(build_image(b).program(), b, "model B: weights, thresholds, masks")
    thr = list(b.thresholds)
    thr[1] = rng.integers(-8, 8, thr[1].shape)
    b2 = QuantizedModel(cfg, b.planes, tuple(thr), b.support_mask)
    await step([op for op in build_image(b2).program() if op[0] == ProgOp.THRESHOLD], b2,
               "thresholds only")
    masks = [rng.random(mk.shape) < 0.3 for mk in b2.support_mask]
    masks[0][:cfg.neurons_per_tile, 1] = False  # plane 2 of column block 0: never evaluated
    b3 = b2.with_mask(tuple(masks))
    await step([op for op in build_image(b3).program() if op[0] == ProgOp.COL_MASK], b3,
               "masks only")
    await step([(ProgOp.BUDGET, 0, 1)], None, "budget register 1")
    await step([], None, "per-image budget 0", budget=0)
    await step([], None, "per-image budget not sticking", if_stuck=(b3, 0, None))
    margin = _split_margin(b3, images, 1)

    def exits(img) -> bool:
        return int(hwpath.run_hw(b3, img[None], 1, margin).exit_pass[0]) == 0

    await step([(ProgOp.EXIT_MARGIN, 0, margin)], None, "exit margin", pred=exits)
    # Prog ops offered while an image computes must wait for its result, then apply to the
    # next image, whose first beat is offered back to back: op and first beat are taken in
    # the same cycle. The margin op must not reach the computing image (it exits early only
    # with the old margin); the budget op must reach the next one (budget is latched with
    # the first beat, so this is where a same-cycle ordering bug would show).
    first = pick(exits, "exiting early")
    second = pick(lambda img: bench.differs(img, (b3, 1, margin), (b3, 1, None)),
                  "that the margin op changes")
    third = pick(lambda img: True, "")
    imgs = [Image(images[i], name=f"image {i} ({what})") for i, what in
            ((first, "computing while an EXIT_MARGIN op is offered"),
             (second, "after EXIT_MARGIN offered in flight; computing while BUDGET offered"),
             (third, "after BUDGET offered in flight"))]
    bench.send(imgs)
    for img, op in zip(imgs, [(ProgOp.EXIT_MARGIN, 0, bench.margin_never),
                              (ProgOp.BUDGET, 0, 2)]):
        await bench.run_until(lambda img=img: bench.checker.queue and
                              bench.checker.queue[0] is img, 400, f"{img.name} computing")
        bench.queue_prog([op])
    await bench.flush("prog ops offered during an inference")
    disc.append("prog offered during an inference")
    await step(build_image(a).program() + [(ProgOp.BUDGET, 0, k)], a, "model A again")
    bench.extra = {"steps": disc}
