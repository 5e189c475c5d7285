"""The protocol bench: independent per-cycle drivers of the controller's three streams, a
register model for the golden expectations, and reset injection.

Built on the per-cycle bench (cosim/bench.py: reset, probe sampling, codec) and checked by
cosim/stream_checker.py; the protocol corners (tb_protocol) script it. Every wait has a
cycle limit and raises an AssertionError naming what it waited for.
"""

from __future__ import annotations

import random
from collections import deque

import numpy as np

from sbnn.config import SbnnConfig
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import ProgOp, Sizes, pixel_layout, prog_layout

from .bench import Bench
from .stream_checker import StreamChecker, StreamImage

__all__ = ["ProtocolBench", "ALWAYS_READY"]


def ALWAYS_READY(_waited: int) -> bool:
    """The default result.ready policy: ready in every cycle."""
    return True


class ProtocolBench(Bench):
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
        self.to_send: deque[StreamImage] = deque()
        self.beat = 0
        self.pix_hold = False  # a beat is offered and was not yet taken
        self.pix_gap = 0.0
        self.prog_ops: deque = deque()
        self.prog_hold = False
        self.prog_gap = 0.0
        self.ready_default = ALWAYS_READY
        self.waits = {"pixels": 0, "prog": 0}
        self.stats = {"pixel_gap_cycles": 0, "prog_gap_cycles": 0, "resets": [],
                      "prog_accepted_while_busy": 0, "prog_held_while_busy": 0,
                      "prog_with_first_beat": []}  # ops taken in a first beat's cycle
        self.images: list[StreamImage] = []
        #: A corner's own report entries (its margin, reset points, steps).
        self.extra: dict = {}
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

    def image_budget(self, img: StreamImage) -> int:
        return self.budget_reg if img.budget is None else min(img.budget,
                                                              self.cfg.num_supports)

    def expect(self, img: StreamImage) -> None:
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
    def send(self, imgs: list[StreamImage]) -> None:
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
    def _observe(self) -> tuple[dict | None, tuple | None, bool, int | None]:
        """What the design shows in this cycle: the macro start and done, result valid and
        its raw payload."""
        dut = self.dut
        rvalid = bool(dut.result__valid.value)
        return (self.sample_start(), self.sample_done(), rvalid,
                int(dut.result__payload.value) if rvalid else None)

    def _step(self) -> None:
        """Sample cycle ``self.cycle`` and drive the coming rising edge."""
        c, chk = self.cycle, self.checker
        start, done, rvalid, rraw = self._observe()
        rready = self._drive_result_ready(c, rvalid)
        chk.sample(c, start, done, rvalid, rraw, rready)
        busy = bool(chk.queue) or self.beat != 0  # an image is loading, computing or output
        # prog first: an op taken in the same cycle as an image's first beat applies to it
        taken_op = self._drive_prog(busy)
        self._drive_pixels(c, taken_op)
        self._watchdog(c)
        if chk.errors and not self.keep_going:
            raise AssertionError(chk.errors[0])

    def _drive_result_ready(self, c: int, rvalid: bool) -> bool:
        """result.ready for the coming edge, from the head image's policy (else the
        default) given how long its result has been valid."""
        queue = self.checker.queue
        head = queue[0] if queue else None
        waited = c - head.first_valid if head is not None and head.first_valid is not None \
            else (0 if rvalid else -1)
        policy = (head.ready if head is not None and head.ready else self.ready_default)
        rready = bool(policy(waited))
        self.dut.result__ready.value = int(rready)
        return rready

    def _adopt_programmed_models(self) -> None:
        """Queued model markers at the head of the prog queue: their ops are all taken."""
        while self.prog_ops and self.prog_ops[0][0] == "model":
            self.model = self.prog_ops.popleft()[1]

    def _drive_prog(self, busy: bool) -> tuple | None:
        """Offer the next prog op (or a random gap with a garbage payload); returns the op
        the coming edge takes, if any."""
        dut = self.dut
        self._adopt_programmed_models()
        if not self.prog_ops:
            dut.prog__valid.value = 0
            dut.prog__payload.value = self.rand.getrandbits(self.prog_w)
            return None
        if not self.prog_hold and self.prog_gap and self.rand.random() < self.prog_gap:
            dut.prog__valid.value = 0
            dut.prog__payload.value = self.rand.getrandbits(self.prog_w)
            self.stats["prog_gap_cycles"] += 1
            return None
        dut.prog__valid.value = 1
        dut.prog__payload.value = self.codec.prog(*self.prog_ops[0])
        self.prog_hold = True
        if not dut.prog__ready.value:
            self.stats["prog_held_while_busy"] += int(busy)
            self.waits["prog"] = 0 if busy else self.waits["prog"] + 1
            return None
        if busy:
            self.stats["prog_accepted_while_busy"] += 1
        taken_op = self.prog_ops.popleft()
        self._apply(taken_op)
        self.prog_hold = False
        self.waits["prog"] = 0
        self._adopt_programmed_models()
        return taken_op

    def _drive_pixels(self, c: int, taken_op: tuple | None) -> None:
        """Offer the next pixel beat (or a random gap with a garbage payload); an image's
        expectation is set when its first beat is taken, with the registers then."""
        dut, chk = self.dut, self.checker
        if not self.to_send:
            dut.pixels__valid.value = 0
            dut.pixels__payload.value = self.rand.getrandbits(self.pix_w)
            return
        img = self.to_send[0]
        if not self.pix_hold and self.pix_gap and self.rand.random() < self.pix_gap:
            dut.pixels__valid.value = 0  # garbage payload: must be ignored
            dut.pixels__payload.value = self.rand.getrandbits(self.pix_w)
            self.stats["pixel_gap_cycles"] += 1
            return
        dut.pixels__valid.value = 1
        dut.pixels__payload.value = img.beats[self.beat]
        self.pix_hold = True
        if not dut.pixels__ready.value:
            self.waits["pixels"] = 0 if chk.queue else self.waits["pixels"] + 1
            return
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

    def _budget_cycles(self, imgs: list[StreamImage]) -> int:
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

    async def pulse_reset(self, cycles: int = 2) -> list[StreamImage]:
        """Assert rst for ``cycles`` rising edges from this cycle on, with every valid and
        ready low; returns the dropped images. The register model takes its reset values."""
        dut, chk = self.dut, self.checker
        start, done, rvalid, rraw = self._observe()
        chk.sample(self.cycle, start, done, rvalid, rraw, False)
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
                              (self.probes["start"], "macro start"),
                              (self.probes["done"], "macro done")):
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

