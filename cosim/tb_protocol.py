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

This file holds only the scenarios. The bench that drives the streams cycle by cycle is
cosim/protocol_bench.py, the checker (plain Python fed decoded samples, proven without a
simulator by tests/test_cosim_protocol.py) cosim/stream_checker.py, and the frame that makes
a scenario a cocotb test and reports it cosim/protocol_corner.py. Every wait has a cycle
limit and raises an AssertionError naming what it waited for.

With the job's ``golden_model`` set (a deliberately wrong model), expectations for the
programmed job model come from it instead: the report then counts, per corner, the images
whose expectation was wrong and the images that mismatched, and they must be equal.
"""

from __future__ import annotations

import random

import numpy as np

from sbnn.cosim.protocol_bench import ProtocolBench
from sbnn.cosim.protocol_corner import corner, image_picker, program_model, split_margin
from sbnn.cosim.stream_checker import StreamImage
from sbnn.gen.image import build_image
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import ProgOp


@corner
async def back_to_back(bench: ProtocolBench, a, b, images):
    """Back-to-back images, no idle cycle: per-image budgets (one above K, clamped) and an
    exit margin so that the compute time differs from image to image."""
    k = bench.cfg.num_supports
    margin = split_margin(a, images[:6], k)
    await program_model(bench, a, [(ProgOp.EXIT_MARGIN, 0, margin)])
    budgets = [None, 0, k, 1, None, k + 1]
    bench.send([StreamImage(images[i], budget=bg) for i, bg in enumerate(budgets)])
    await bench.flush()
    bench.extra = {"exit_margin": margin}


@corner
async def result_backpressure(bench: ProtocolBench, a, b, images):
    """Result held not ready for 300, 1 and 60 cycles and toggled at random, while the next
    image's first beat is already offered."""
    await program_model(bench, a)
    rand = random.Random(5)
    policies = [lambda w: w >= 300, lambda w: w >= 1, lambda w: w >= 0 and rand.random() < 0.2,
                lambda w: w >= 60, None]
    bench.send([StreamImage(images[6 + i], ready=p) for i, p in enumerate(policies)])
    await bench.flush()


@corner
async def pixel_gaps(bench: ProtocolBench, a, b, images):
    """Pixel valid low at random beats (half of them), garbage payload while low, the result
    ready toggled at random as well."""
    k = bench.cfg.num_supports
    await program_model(bench, a)
    bench.pix_gap = 0.5
    rand = random.Random(9)
    bench.ready_default = lambda w: rand.random() < 0.5
    bench.send([StreamImage(images[11 + i], budget=bg) for i, bg in enumerate([None, 0, 1, None])])
    await bench.flush()
    # A prog op offered in the middle of loading waits for that image's result: both
    # images exit early with the margin programmed before, neither with the new one.
    margin = split_margin(a, images, k)
    pick = image_picker(images)

    def exits(img) -> bool:
        return int(hwpath.run_hw(a, img[None], k, margin).exit_pass[0]) == 0

    bench.queue_prog([(ProgOp.EXIT_MARGIN, 0, margin)])
    await bench.flush("an exit margin")
    imgs = [StreamImage(images[pick(exits, "exiting early")], name=f"image {i} ({what})")
            for i, what in enumerate(("loading while EXIT_MARGIN offered",
                                      "after EXIT_MARGIN offered"), start=len(bench.images))]
    bench.send(imgs)
    await bench.run_until(lambda: bench.beat >= 2, 200, f"{imgs[0].name}: beat 2")
    bench.queue_prog([(ProgOp.EXIT_MARGIN, 0, bench.margin_never)])
    await bench.flush()


@corner
async def reset_mid_inference(bench: ProtocolBench, a, b, images):
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
    await program_model(bench, a)
    margin = split_margin(a, images, k)
    pick = image_picker(images)

    def exits_after_pass0(img) -> bool:
        return int(hwpath.run_hw(a, img[None], k, margin).exit_pass[0]) >= 1

    def at_compute(fn):  # the head image has reached compute cycle fn(image)
        def cond():
            q = bench.checker.queue
            return bool(q) and bench.cycle - q[0].start >= fn(q[0])
        return cond

    def first_eval(img: StreamImage, pass_: int, layer: int) -> int:
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
        bench.send([StreamImage(images[victim], ready=ready, name=f"image {victim} (reset at: "
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
        bench.send([StreamImage(images[nxt], name=f"image {nxt} (after the reset at: {where})")])
        await bench.flush(f"the first result after the reset at '{where}'")


@corner
async def reprogram_between_inferences(bench: ProtocolBench, a, b, images):
    """Another model, then thresholds only, masks only, budget, margin, a per-image budget
    that must not stick, prog ops offered while an image computes, and model A again; the
    prog stream has random gaps with garbage payloads."""
    cfg, k = bench.cfg, bench.cfg.num_supports
    rng = np.random.default_rng(11)
    pick = image_picker(images)
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
        bench.send([StreamImage(images[i], budget=budget, name=f"image {i} ({what})")])
        await bench.flush()

    await program_model(bench, a)
    bench.send([StreamImage(images[pick(lambda img: True, "")], name="model A")])
    await bench.flush()
    await step(build_image(b).program(), b, "model B: weights, thresholds, masks")
    thr = list(b.thresholds)
    thr[1] = rng.integers(-8, 8, thr[1].shape)  # another row for every pass
    b2 = QuantizedModel(cfg, b.planes, tuple(thr), b.support_mask)
    await step([op for op in build_image(b2).program() if op[0] == ProgOp.THRESHOLD], b2,
               "thresholds only")
    masks = [rng.random(mk.shape) < 0.3 for mk in b2.support_mask]
    # plane 2 of column block 0 masked: not evaluated, rethresholded with row 2 in pass 2
    masks[0][:cfg.neurons_per_tile, 1] = False
    b3 = b2.with_mask(tuple(masks))
    await step([op for op in build_image(b3).program() if op[0] == ProgOp.COL_MASK], b3,
               "masks only")
    await step([(ProgOp.BUDGET, 0, 1)], None, "budget register 1")
    await step([], None, "per-image budget 0", budget=0)
    await step([], None, "per-image budget not sticking", if_stuck=(b3, 0, None))
    margin = split_margin(b3, images, 1)

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
    imgs = [StreamImage(images[i], name=f"image {i} ({what})") for i, what in
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
