"""The controller's timing contract, named once (docs/architecture.md, "Timing contract").

Cycle 0 of an inference (its *compute start*) is the cycle after the last input beat is
accepted. Within a pass, evaluations are issued in the order layer, column block, row block,
plane; consecutive starts are ``macro_latency`` cycles apart plus the gap named here for the
boundary between them, and the result follows the last start. A first-layer column block
that a pass after pass 0 does not evaluate (no enabled column of that pass's plane) is
*rethresholded* instead: a one-cycle step in its place, with no macro evaluation
(:data:`RETHRESHOLD_LATENCY` instead of ``macro_latency``). The golden model
(golden/hwpath.py) schedules with these names, the cosim checkers place the logged cycles
with them, and the RTL (rtl/controller.py) must produce the same cycles, which the cosim
proves.

Parallel and pipelined macros (``num_macros`` N, ``macro_interval`` I; docs/architecture.md
"Parallel and pipelined macros"): the j-th evaluation of a layer and pass goes to macro
``j mod N`` (:func:`macro_of`); a macro starts again I cycles after its last start at the
earliest; steps start in issue order (several in one cycle on different macros) and retire
in issue order; no two column blocks end (their last step retires) in the same cycle; a
rethreshold step starts no earlier than the previous step retires, and the next step no
earlier than it retires. With N = 1 and I = ``macro_latency`` these rules give exactly the
consecutive-step gaps of :func:`start_gap`.
"""

from __future__ import annotations

__all__ = ["COMPUTE_START_DELAY", "LAYER_GAP", "PASS_GAP", "RESULT_GAP",
           "RETHRESHOLD_LATENCY", "start_gap", "result_cycle", "macro_of", "busy_cycles"]

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

#: The latency of a rethreshold step: its block's stored first-layer sums reach the
#: threshold stage (against this pass's thresholds) one cycle after the step, as an
#: evaluation's sums do ``macro_latency`` cycles after it; the next step may start then.
RETHRESHOLD_LATENCY = 1


def start_gap(latency: int, new_layer: bool, new_pass: bool) -> int:
    """Cycles from a step's start to the next one's: the step's ``latency`` inside a layer
    (an evaluation's ``macro_latency``, so the macro idles only for rethreshold steps; a
    rethreshold's :data:`RETHRESHOLD_LATENCY`), plus :data:`PASS_GAP` across a pass
    boundary or :data:`LAYER_GAP` across a layer boundary of the same pass."""
    return latency + (PASS_GAP if new_pass else LAYER_GAP if new_layer else 0)


def result_cycle(last_start: int, latency: int) -> int:
    """Cycle (from compute start) at which the result of an inference whose last step
    started at ``last_start`` with ``latency`` (``macro_latency`` for an evaluation) is
    valid: the reported cycle count."""
    return last_start + latency + RESULT_GAP


def macro_of(index_in_layer_pass: int, num_macros: int) -> int:
    """Macro of the ``index_in_layer_pass``-th evaluation (from 0) of a layer and pass:
    round-robin in issue order, restarting at macro 0 with every layer and pass."""
    return index_in_layer_pass % num_macros


def busy_cycles(starts, latency: int) -> int:
    """Cycles in which a macro that starts evaluations at ``starts`` (ascending) has at
    least one in flight: the union of ``[start, start + latency)``."""
    busy, end = 0, None
    for start in starts:
        if end is None or start >= end:
            busy += latency
        else:
            busy += start + latency - end
        end = start + latency
    return busy
