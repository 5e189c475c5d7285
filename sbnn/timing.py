"""The controller's timing contract, named once (docs/architecture.md, "Timing contract").

Cycle 0 of an inference (its *compute start*) is the cycle after the last input beat is
accepted. Within a pass, evaluations are issued in the order layer, column block, row block,
plane; consecutive starts are ``macro_latency`` cycles apart plus the gap named here for the
boundary between them, and the result follows the last start. The golden model
(golden/hwpath.py) schedules with these names, the cosim checkers place the logged cycles
with them, and the RTL (rtl/controller.py) must produce the same cycles, which the cosim
proves.
"""

from __future__ import annotations

__all__ = ["COMPUTE_START_DELAY", "LAYER_GAP", "PASS_GAP", "RESULT_GAP", "start_gap",
           "result_cycle"]

#: Cycles from the clock edge that takes an image's last input beat to its compute cycle 0
#: ("cycle 0 is the cycle after the last input beat is accepted").
COMPUTE_START_DELAY = 1

#: Extra cycles, beyond ``macro_latency``, before the first evaluation of a new layer of the
#: same pass: the last codes are accumulated in the cycle they arrive, thresholded into
#: activations the next cycle, and read by the new layer the cycle after.
LAYER_GAP = 2

#: Extra cycles, beyond ``macro_latency``, before the first evaluation of a new pass: the
#: layer change's two cycles plus one for the exit decision.
PASS_GAP = 3

#: Extra cycles, beyond ``macro_latency``, from the last evaluation's start to the cycle the
#: result is valid (that cycle's number is the reported cycle count).
RESULT_GAP = 3


def start_gap(macro_latency: int, new_layer: bool, new_pass: bool) -> int:
    """Cycles from an evaluation's start to the next one's: ``macro_latency`` inside a layer
    (the macro is never idle there), plus :data:`PASS_GAP` across a pass boundary or
    :data:`LAYER_GAP` across a layer boundary of the same pass."""
    return macro_latency + (PASS_GAP if new_pass else LAYER_GAP if new_layer else 0)


def result_cycle(last_start: int, macro_latency: int) -> int:
    """Cycle (from compute start) at which the result of an inference whose last evaluation
    started at ``last_start`` is valid: the reported cycle count."""
    return last_start + macro_latency + RESULT_GAP
