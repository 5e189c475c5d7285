"""Transaction signatures (cosim/digest.py): numpy against plain Python, and on Verilator."""

from __future__ import annotations

import numpy as np
import pytest

from sbnn.config import SbnnConfig
from sbnn.cosim import digest
from sbnn.cosim.fast import Block, Plan, execute
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import ProgOp

#: Two weight layers, K=2, several row and column blocks, 5-bit DAC codes: quick to build.
CFG = SbnnConfig(layers=(40, 24, 10), num_supports=2, active_rows=16, macro_cols=12,
                 macro_rows=512, adc_bits=6, input_lanes=8, macro_latency=3, dac_bits=5)
MASK = (1 << 64) - 1


def _mix(z: int) -> int:
    """splitmix64's finalizer, written out with Python integers (the reference)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def _fold_trace(cfg: SbnnConfig, trace: list[dict]) -> tuple[int, int]:
    """Both signatures of one image from hwpath's per-image trace, one transaction at a time."""
    k = digest.constants(cfg)
    d_start = d_done = digest.SEED
    for tx in trace:
        acc = sum(int(v) * int(c) for v, c in zip(
            (tx["cycle"], tx["layer"], tx["plane"], tx["pass"], tx["tile"], tx["gain"]),
            k.start_fields))
        acc += sum(int(k.col_en[c]) for c in range(cfg.macro_cols) if tx["col_en"] >> c & 1)
        acc += sum(x * int(c) for x, c in zip(tx["row_x"], k.row_x))
        d_start = _mix(d_start ^ _mix(acc & MASK))
        acc = (tx["cycle"] + cfg.macro_latency) * int(k.done_cycle[0])
        acc += sum(q * int(c) for q, c in zip(tx["adc"], k.adc))
        d_done = _mix(d_done ^ _mix(acc & MASK))
    return d_start, d_done


def test_mix64_matches_the_python_reference():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 2**63, 200, dtype=np.int64).view(np.uint64) * np.uint64(3)
    assert [int(v) for v in digest.mix64(z)] == [_mix(int(v)) for v in z]


@pytest.mark.parametrize("budget,margin", [(2, None), (2, 3), (1, 0), (0, None)])
def test_vectorized_signatures_equal_the_per_image_fold(budget, margin):
    model = QuantizedModel.random(CFG, np.random.default_rng(5))
    pixels = np.random.default_rng(6).integers(0, 256, (30, 40), dtype=np.uint8)
    exp = digest.expected_block(model, pixels, budget, margin)
    sched = hwpath.schedule(model, budget)
    hw = hwpath.run_hw(model, pixels, budget, margin, keep_adc=True)
    for i in range(len(pixels)):
        trace = hwpath.expected_trace(model, sched, hw, i)
        assert (int(exp.start[i]), int(exp.done[i])) == _fold_trace(CFG, trace)
        res = hwpath.expected_result(sched, hw, i, trace)
        assert exp.n_start[i] == len(trace) == res["macro_evals"]
        assert exp.dac_conversions[i] == res["dac_conversions"]
        assert (exp.cycles[i], exp.column_evals[i]) == (res["cycles"], res["column_evals"])
    if margin:
        assert len(set(exp.exit_plane.tolist())) > 1  # the exit actually varies here


def test_one_changed_code_changes_the_signature():
    model = QuantizedModel.random(CFG, np.random.default_rng(5))
    pixels = np.random.default_rng(6).integers(0, 256, (4, 40), dtype=np.uint8)
    sched = hwpath.schedule(model, 2)
    hw = hwpath.run_hw(model, pixels, 2, None, keep_adc=True)
    trace = hwpath.expected_trace(model, sched, hw, 0)
    start, done = _fold_trace(CFG, trace)
    trace[7] = dict(trace[7], adc=tuple(v + (c == 3) for c, v in enumerate(trace[7]["adc"])))
    assert _fold_trace(CFG, trace) == (start, _fold_trace(CFG, trace)[1]) != (start, done)


def _plan(model: QuantizedModel, count: int) -> Plan:
    return Plan([Block(tuple(range(count)), 2, False, None, None,
                       ((ProgOp.BUDGET.value, 0, 2),)),
                 Block(tuple(range(count)), 1, True, 4, None,
                       ((ProgOp.EXIT_MARGIN.value, 0, 4),))])


@pytest.mark.cosim
def test_signatures_on_verilator_agree_and_a_wrong_golden_is_localized(tmp_path, verilator):
    model = QuantizedModel.random(CFG, np.random.default_rng(5))
    model_path = model.save(tmp_path / "m.npz")
    images = tmp_path / "images.npz"
    pixels = np.random.default_rng(6).integers(0, 256, (24, 40), dtype=np.uint8)
    np.savez(images, images=pixels, labels=np.zeros(24, np.uint8))
    build = tmp_path.parent / "digest_build"
    rep = execute(CFG, build, _plan(model, 24), images, model, model_path, workers=2)
    assert rep.mismatches == 0, rep.first_mismatch
    expected = sum(int(digest.expected_block(model, pixels, b, m).n_start.sum())
                   for b, m in ((2, None), (1, 4)))
    assert rep.transactions_checked == expected and rep.results_checked == 48
    assert rep.log_bytes < 48 * 400  # a short record per image, not a transaction log

    thresholds = [t.copy() for t in model.thresholds]
    thresholds[0][:, 3] += 5  # one hidden neuron: later layers see other inputs
    wrong = QuantizedModel(CFG, model.planes, tuple(thresholds), model.support_mask)
    bad = execute(CFG, build, _plan(model, 24), images, model, model_path,
                  golden_model=wrong.save(tmp_path / "w.npz"), workers=2)
    assert bad.mismatches > 0
    # the rerun with the full log names the transaction and the field
    assert bad.first_mismatch_digest.startswith("image position")
    assert "eval" in bad.first_mismatch and "field 'row_x" in bad.first_mismatch


def test_cached_signatures_equal_fresh_ones_and_follow_the_model(tmp_path, monkeypatch):
    model = QuantizedModel.random(CFG, np.random.default_rng(5))
    pixels = np.random.default_rng(6).integers(0, 256, (10, 40), dtype=np.uint8)
    fresh = digest.expected_block(model, pixels, 2, 3)
    first = digest.expected_block_cached(model, pixels, 2, 3, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_compute(*args):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(digest, "expected_block", no_compute)
    again = digest.expected_block_cached(model, pixels, 2, 3, tmp_path)
    for name in digest.ExpectedDigests.__dataclass_fields__:
        assert np.array_equal(getattr(fresh, name), getattr(first, name)), name
        assert np.array_equal(getattr(fresh, name), getattr(again, name)), name
    # another threshold, image or control is another entry, never the stale one
    thresholds = [t.copy() for t in model.thresholds]
    thresholds[1][:, 0] += 1
    other = QuantizedModel(CFG, model.planes, tuple(thresholds), model.support_mask)
    for args in ((other, pixels, 2, 3), (model, pixels[::-1].copy(), 2, 3),
                 (model, pixels, 2, None)):
        with pytest.raises(AssertionError, match="recomputed"):
            digest.expected_block_cached(*args, tmp_path)
