"""Protocol corners in cocotb (cosim/tb_protocol.py, on cosim/protocol_bench.py and
cosim/stream_checker.py): reset mid-inference, back-to-back
images, result backpressure, pixel gaps, reprogramming between images; all against the
golden model. One simulator run serves every corner (module-scoped fixture); a second run
with a deliberately wrong golden model proves that every checked image's comparison bites;
the checker's protocol rules are proven on synthetic cycle samples without a simulator."""

import numpy as np
import pytest

from sbnn.config import SbnnConfig
from sbnn.cosim.runner import CosimJob, run_cosim
from sbnn.cosim.stream_checker import StreamChecker, StreamImage
from sbnn.golden.qmodel import QuantizedModel

# The same small K=2 config as test_cosim.py's three-layer test: its Verilator build is
# shared (the build directory is keyed by the config), so these tests add no build.
CFG = SbnnConfig(layers=(40, 24, 12, 10), num_supports=2, active_rows=16, macro_cols=12,
                 macro_rows=512, adc_bits=6, input_lanes=8, macro_latency=3, dac_bits=5,
                 gain_bits=3)
SEED = 31
CORNERS = ("back_to_back", "result_backpressure", "pixel_gaps", "reset_mid_inference",
           "reprogram_between_inferences")


def _model_a() -> QuantizedModel:
    model = QuantizedModel.random(CFG, np.random.default_rng(SEED), mask_keep=0.5)
    masks = [m.copy() for m in model.support_mask]
    nt = CFG.neurons_per_tile
    # Whole column blocks with a support plane masked: the mask summary that lets the
    # controller skip them must survive reset (reset_mid_inference relies on it); the
    # first layer's block 1 is rethresholded in pass 2.
    masks[0][nt:2 * nt, 1] = False
    masks[1][:nt, 0] = False
    # Thresholds that differ between passes (pass 0's row as drawn, so the corners' exit
    # margins split the images as before; this draw keeps back_to_back's exit planes 0..K):
    # every corner checks that pass p reads row p.
    rng = np.random.default_rng(SEED + 2)
    thresholds = tuple(t + np.vstack([np.zeros((1, t.shape[1]), np.int64),
                                      rng.integers(-3, 4, (t.shape[0] - 1, t.shape[1]))])
                       for t in model.thresholds)
    model = QuantizedModel(CFG, model.planes, thresholds, tuple(masks))
    assert model.per_pass_thresholds
    return model


def make_files(folder):
    """Model A, 24 random images and the wrong golden model, saved in ``folder``."""
    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, (24, CFG.layers[0]), dtype=np.uint8)
    np.savez(folder / "img.npz", images=images, labels=np.zeros(len(images), np.uint8))
    model = _model_a()
    thresholds = list(model.thresholds)
    lim = (1 << (CFG.threshold_bits - 1)) - 1
    thresholds[0] = np.full_like(thresholds[0], lim)  # hidden layer all -1 in "expected"
    wrong = QuantizedModel(CFG, model.planes, tuple(thresholds), model.support_mask)
    return (model.save(folder / "a.npz"), folder / "img.npz",
            wrong.save(folder / "wrong.npz"))


@pytest.fixture(scope="module")
def protocol_files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("protocol"))


def _job(files, golden_model=None) -> CosimJob:
    model, images, _ = files
    return CosimJob(CFG, model, images, count=24, budgets=(), random_seed=SEED,
                    golden_model=golden_model)


@pytest.fixture(scope="module")
def protocol_report(cosim_build_root, protocol_files, verilator):
    return run_cosim(_job(protocol_files), cosim_build_root,
                     test_module="sbnn.cosim.tb_protocol").corners


def _clean(report, corner):
    c = report.get(corner)
    assert c is not None, f"corner {corner} did not report (crashed?)"
    assert not c.errors, c.errors[0]
    assert c.results == c.results_checked == c.images_sent - len(c.details["resets"])
    assert c.transactions_checked > 0
    return c


@pytest.mark.cosim
def test_back_to_back_no_idle_cycle(protocol_report):
    c = _clean(protocol_report, "back_to_back")
    # The next image's first beat is taken in the cycle after the result handshake, and
    # its beats in consecutive cycles: no bubble anywhere.
    assert c.load_gaps == [1] * (c.results - 1)
    assert set(c.load_spans) == {CFG.input_beats - 1}
    assert len(set(c.exit_planes)) == CFG.num_supports + 1  # compute times differ


@pytest.mark.cosim
def test_result_backpressure_nothing_lost_or_repeated(protocol_report):
    c = _clean(protocol_report, "result_backpressure")
    assert c.results == 5
    assert c.stall_cycles >= 300 + 1 + 60  # the holds happened (plus the random ones)
    assert c.load_gaps == [1] * 4  # next image taken as soon as the result is


@pytest.mark.cosim
def test_pixel_gaps(protocol_report):
    c = _clean(protocol_report, "pixel_gaps")
    assert c.details["pixel_gap_cycles"] >= 8
    assert max(c.load_spans) > CFG.input_beats - 1  # some image was loaded with gaps
    # The margin op offered at beat 2 waited for that image's result and reached only the
    # next image (exit after pass 0 with the old margin, never with the new one).
    assert c.details["prog_held_while_busy"] > 0 and c.details["prog_accepted_while_busy"] == 0
    assert c.exit_planes[-2:] == [0, CFG.num_supports]


@pytest.mark.cosim
def test_reset_mid_inference(protocol_report):
    c = _clean(protocol_report, "reset_mid_inference")
    resets = c.details["resets"]
    assert len(resets) == 5 and c.results == 5
    loading, first, layer1, decision, held = resets
    assert loading["loading_beat"] == 2 and loading["compute_cycle"] is None
    assert first["compute_cycle"] == 1 and first["in_flight"] == 1
    assert layer1["in_flight"] == 1
    assert decision["in_flight"] == 0 and not decision["result_valid"]
    assert held["result_valid"]


@pytest.mark.cosim
def test_reprogram_between_inferences(protocol_report):
    c = _clean(protocol_report, "reprogram_between_inferences")
    assert len(c.details["steps"]) == 9
    assert c.details["prog_held_while_busy"] > 0  # ops offered mid-inference had to wait
    assert c.details["prog_accepted_while_busy"] == 0
    assert c.details["prog_gap_cycles"] > 0
    # Ops taken in the same cycle as an image's first beat (they apply to that image; the
    # BUDGET case failed before the controller latched the budget being written).
    assert {"EXIT_MARGIN", "BUDGET"} <= set(c.details["prog_with_first_beat"])


@pytest.mark.cosim
def test_wrong_golden_model_is_caught_in_every_corner(cosim_build_root, protocol_files,
                                                      verilator):
    report = run_cosim(_job(protocol_files, golden_model=protocol_files[2]), cosim_build_root,
                       test_module="sbnn.cosim.tb_protocol").corners
    assert set(report) == set(CORNERS)
    for name, c in report.items():
        assert c.mutated_images > 0, name
        # every image whose expectation was wrong was flagged, and no other image
        assert c.mismatched_images == c.mutated_images, (name, c.errors[:3])


# ---------------------------------------------------------------- checker without a simulator

def _img(name="image 0", cycles=10, trace=None):
    trace = trace if trace is not None else [{"cycle": 0, "pass": 0, "layer": 0, "tile": 0,
                                              "plane": 0, "gain": 1, "col_en": 1,
                                              "row_x": (1,), "adc": (3,)}]
    result = {"cls": 1, "logits": (0, 5), "cycles": cycles, "exit_plane": 0,
              "macro_evals": 1, "column_evals": 1, "dac_conversions": 1,
              "adc_conversions": 1}
    return StreamImage(None, name=name, expected_trace=trace, expected_result=result, limit=40)


def _run(samples, img=None, start_at=0):
    """Feed (cycle, start, done, rvalid, payload, ready) samples to a checker that was told
    ``img`` entered compute at ``start_at``; returns the checker."""
    chk = StreamChecker()
    img = img or _img()
    chk.loaded(img, start_at)
    tx = {k: v for k, v in img.expected_trace[0].items() if k not in ("cycle", "adc")}
    for cyc, start, done, rvalid, payload, ready in samples:
        chk.sample(cyc, dict(tx) if start else None, (3,) if done else None, rvalid,
                   payload, ready)
    return chk


def _good_result(**changes):
    r = dict(_img().expected_result)
    r.update(changes)
    return r


def _basic(rows):
    """The one evaluation (start at compute cycle 0, done at 3), then ``rows``."""
    return [(0, True, False, False, None, True), (3, False, True, False, None, True)] + rows


def test_checker_accepts_a_correct_stalled_result():
    res = _good_result()
    chk = _run(_basic([(10, False, False, True, res, False),
                           (11, False, False, True, res, False),
                           (12, False, False, True, res, True),
                           (13, False, False, False, None, True)]))
    assert not chk.errors and len(chk.finished) == 1 and chk.stall_cycles == 2


def test_checker_flags_a_repeated_result_after_its_handshake():
    res = _good_result()
    chk = _run(_basic([(10, False, False, True, res, True),
                           (11, False, False, True, res, True)]))
    assert len(chk.finished) == 1
    assert any("repeated or spurious" in e for e in chk.errors)


def test_checker_flags_a_result_dropped_under_backpressure():
    res = _good_result()
    chk = _run(_basic([(10, False, False, True, res, False),
                           (11, False, False, False, None, False)]))
    assert any("result lost" in e for e in chk.errors)


def test_checker_flags_a_payload_change_while_stalled():
    chk = _run(_basic([(10, False, False, True, _good_result(), False),
                           (11, False, False, True, _good_result(cls=0), True)]))
    assert any("payload changed" in e for e in chk.errors)


def test_checker_flags_wrong_values_and_wrong_timing():
    chk = _run(_basic([(10, False, False, True, _good_result(cls=0), True)]))
    assert any("field 'cls'" in e for e in chk.errors)
    chk = _run(_basic([(12, False, False, True, _good_result(), True)]))
    assert any("compute cycle 12" in e for e in chk.errors)


def test_checker_flags_activity_with_no_inference_and_late_results():
    chk = StreamChecker()
    chk.sample(0, {"layer": 0}, None, False, None, True)
    chk.sample(1, None, (0,), False, None, True)
    chk.sample(2, None, None, True, 0, True)
    assert len(chk.errors) == 3
    img = _img()
    chk = _run([(0, True, False, False, None, True)], img)
    assert chk.overdue(40) is None
    assert "not valid within 40 cycles" in chk.overdue(41)


def test_checker_flags_a_wrong_transaction_before_a_reset():
    img = _img()
    img.expected_trace[0]["adc"] = (4,)
    chk = _run([(0, True, False, False, None, True), (3, False, True, False, None, True)], img)
    assert chk.abandon() == [img]
    assert any("reset later" in e and "'adc'" in e for e in chk.errors)


# ---------------------------------------------------------------- RTL fix, Amaranth simulator

def test_budget_op_taken_with_the_first_beat_applies_to_that_image():
    """prog.ready and pixels.ready are both high before an image's first beat; a BUDGET op
    taken in that same cycle must apply to the image, as every other op does (the budget
    was latched from the old register value before the fix). Amaranth simulator, no
    Verilator: quick, and independent of the cocotb corner that found it."""
    from amaranth.sim import Simulator

    from sbnn.cosim.codec import Codec
    from sbnn.gen.image import build_image
    from sbnn.golden import hwpath
    from sbnn.rtl.interfaces import ProgOp
    from sbnn.rtl.top import SimTop

    cfg = SbnnConfig(layers=(9, 6, 3), active_rows=3, macro_cols=6, macro_rows=60,
                     num_supports=2, gain_bits=3, input_lanes=4, adc_bits=6,
                     macro_latency=2, dac_bits=3)
    rng = np.random.default_rng(8)
    model = QuantizedModel.random(cfg, rng, mask_keep=1.0)
    image = rng.integers(0, 256, cfg.layers[0], dtype=np.uint8)
    dut, codec = SimTop(cfg), Codec(cfg)
    out = {}

    async def bench(ctx):
        async def send(stream, words):
            for w in words:
                ctx.set(stream.payload.as_value(), w)
                ctx.set(stream.valid, 1)
                for _ in range(64):
                    if ctx.get(stream.ready):
                        break
                    await ctx.tick()
                else:
                    raise AssertionError("stream not ready within 64 cycles")
                await ctx.tick()
            ctx.set(stream.valid, 0)

        await send(dut.prog, [codec.prog(*op) for op in build_image(model).program()])
        await send(dut.prog, [codec.prog(ProgOp.BUDGET, 0, 2)])
        # The BUDGET op and the first beat, offered together, are taken in one cycle.
        ctx.set(dut.prog.payload.as_value(), codec.prog(ProgOp.BUDGET, 0, 0))
        ctx.set(dut.prog.valid, 1)
        beats = codec.pixel_beats(image)
        ctx.set(dut.pixels.payload.as_value(), beats[0])
        ctx.set(dut.pixels.valid, 1)
        assert ctx.get(dut.prog.ready) and ctx.get(dut.pixels.ready)
        await ctx.tick()
        ctx.set(dut.prog.valid, 0)
        await send(dut.pixels, beats[1:])
        ctx.set(dut.result.ready, 1)
        for _ in range(2000):
            if ctx.get(dut.result.valid):
                out["result"] = codec.result(ctx.get(dut.result.payload.as_value()))
                break
            await ctx.tick()
        else:
            raise AssertionError("no result within 2000 cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    sched = hwpath.schedule(model, 0)
    gold = hwpath.run_hw(model, image[None], 0, None, keep_adc=True)
    want = hwpath.expected_result(sched, gold, 0)
    got = out["result"]
    assert hwpath.schedule(model, 2).total_cycles() != want["cycles"]  # budgets tell apart
    assert {k: got[k] for k in want} == want
