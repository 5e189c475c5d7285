"""The protocol checker of the controller's streams: plain Python, fed decoded samples.

:class:`StreamChecker` checks, cycle by cycle, the macro bus and the result stream against
the golden expectations of the images in flight (:class:`StreamImage`): results in order,
none lost, repeated, changed while waiting for ready, late or spurious, and each image's
transactions and result through the in-order scoreboard. It never touches a simulator, so
tests/test_cosim_protocol.py proves its rules on synthetic samples; the protocol bench
(cosim/protocol_bench.py) feeds it the design's ports.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .scoreboard import TRACE_FIELDS, Scoreboard

__all__ = ["StreamImage", "StreamChecker"]


@dataclass
class StreamImage:
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
        self.queue: deque[StreamImage] = deque()  # loaded, result not yet taken
        self.finished: list[StreamImage] = []
        self.errors: list[str] = []
        self.sb = Scoreboard()
        self.stall_cycles = 0  # cycles a valid result waited for ready

    def _error(self, img: StreamImage | None, text: str) -> None:
        if img is not None:
            img.ok = False
        self.errors.append(text)

    def loaded(self, img: StreamImage, cycle: int) -> None:
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

    def _finish(self, img: StreamImage, cycle: int) -> None:
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

    def abandon(self) -> list[StreamImage]:
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
