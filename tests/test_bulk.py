"""The bulk checker (cosim/bulk.py) on synthetic logs: what a perfect RTL would log passes,
and every kind of difference is reported at the right image, evaluation, cycle and field.

The perfect log is made from the golden expectation itself, so these tests exercise only the
decoding and the comparison; the cocotb tests run the real RTL.
"""

from dataclasses import replace

import numpy as np
import pytest

from sbnn.config import SbnnConfig
from sbnn.cosim import bulk
from sbnn.cosim.harness import HarnessLayout, harness_verilog
from sbnn.golden.hwpath import column_bits
from sbnn.golden.qmodel import QuantizedModel
from sbnn.timing import COMPUTE_START_DELAY

CFG = SbnnConfig(layers=(20, 9, 4), num_supports=1, active_rows=8, macro_cols=6,
                 macro_rows=128, adc_bits=6, input_lanes=4, macro_latency=3)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(5)
    model = QuantizedModel.random(CFG, rng, mask_keep=0.5)
    pixels = rng.integers(0, 256, (6, 20), dtype=np.uint8)
    exp = bulk.concat([bulk.expected_block(model, pixels[:3], 1, None, np.arange(3)),
                       bulk.expected_block(model, pixels[3:], 0, 5, np.arange(3, 6))])
    return model, exp


def perfect_log(exp: bulk.Expected, gap: int = 7) -> bulk.Log:
    """The log an RTL that matches the golden model would write (images back to back)."""
    starts, image_cycle, result_cycle = [], [], []
    t = 100
    for i, n in enumerate(exp.n_evals):
        image_cycle.append(t)
        lo = int(exp.n_evals[:i].sum())
        starts.extend(t + COMPUTE_START_DELAY + exp.cycle[lo:lo + n])
        result_cycle.append(t + COMPUTE_START_DELAY + exp.results[i]["cycles"])
        t = result_cycle[-1] + gap
    starts = np.array(starts)
    return bulk.Log(start_cycle=starts, layer=exp.layer.copy(), plane=exp.plane.copy(),
                    pass_=exp.pass_.copy(), tile=exp.tile.copy(), gain=exp.gain.copy(),
                    col_en=exp.col_en.copy(), row_x=exp.row_x.copy(),
                    done_cycle=starts + CFG.macro_latency, adc=exp.adc.copy(),
                    image_cycle=np.array(image_cycle), result_cycle=np.array(result_cycle),
                    results=[dict(r) for r in exp.results])


def test_perfect_log_passes(case):
    _, exp = case
    rep = bulk.compare(CFG, perfect_log(exp), exp)
    assert rep.first is None and rep.mismatches == 0
    assert rep.transactions == len(exp.cycle) == int(exp.n_evals.sum())
    assert rep.results == 6


@pytest.mark.parametrize("field,where", [("row_x", "row_x[2]"), ("adc", "adc[1]"),
                                         ("col_en", "col_en[1]"), ("gain", "gain"),
                                         ("tile", "tile"), ("layer", "layer")])
def test_a_wrong_transaction_field_is_reported(case, field, where):
    _, exp = case
    log = perfect_log(exp)
    t = int(exp.n_evals[0]) + 2  # image 1, evaluation 2
    arr = getattr(log, field)
    if arr.ndim == 2:
        lane = 2 if field == "row_x" else 1
        arr[t, lane] = 1 - arr[t, lane] if field == "col_en" else arr[t, lane] + 1
    else:
        arr[t] += 1
    rep = bulk.compare(CFG, log, exp)
    assert rep.mismatches == 1 and rep.bad.tolist() == [False, True, False, False, False,
                                                         False]
    assert str(rep.first).startswith(f"image 1, eval 2 at cycle {int(exp.cycle[t])}: "
                                     f"field '{where}'")


def test_a_late_start_and_a_slow_done_are_reported(case):
    _, exp = case
    log = perfect_log(exp)
    log.start_cycle[4] += 1
    log.done_cycle[4] += 1  # keep its latency: only the start cycle differs
    rep = bulk.compare(CFG, log, exp)
    assert "eval 4" in str(rep.first) and "field 'cycle'" in str(rep.first)
    log = perfect_log(exp)
    log.done_cycle[3] += 1
    rep = bulk.compare(CFG, log, exp)
    assert "field 'done_cycle'" in str(rep.first)


def test_a_start_before_any_image_is_reported(case):
    _, exp = case
    log = perfect_log(exp)
    for name in ("start_cycle", "layer", "plane", "pass_", "tile", "gain", "col_en", "row_x",
                 "done_cycle", "adc"):
        arr = getattr(log, name)
        setattr(log, name, np.concatenate([arr[:1], arr]))
    log.start_cycle[0] = log.image_cycle[0] - 20
    log.done_cycle[0] = log.start_cycle[0] + CFG.macro_latency
    rep = bulk.compare(CFG, log, exp)
    assert rep.first is not None and "no macro start before the first image" in str(rep.first)
    assert rep.transactions == len(exp.cycle)  # the real ones still line up and are checked


def test_missing_or_extra_transactions_and_results(case):
    _, exp = case
    log = perfect_log(exp)
    keep = np.ones(len(log.start_cycle), bool)
    keep[int(exp.n_evals[:4].sum()) + 1] = False  # image 4 loses its evaluation 1
    for name in ("start_cycle", "layer", "plane", "pass_", "tile", "gain", "col_en", "row_x",
                 "done_cycle", "adc"):
        setattr(log, name, getattr(log, name)[keep])
    rep = bulk.compare(CFG, log, exp)
    assert str(rep.first).startswith("image 4, eval ") and "presence" in str(rep.first)
    log = perfect_log(exp)
    log.results[5]["logits"] = tuple(v + 1 for v in log.results[5]["logits"])
    rep = bulk.compare(CFG, log, exp)
    assert str(rep.first).startswith("image 5, result") and "'logits'" in str(rep.first)
    log = perfect_log(exp)
    log.result_cycle[2] += 3  # right counter, offered late
    rep = bulk.compare(CFG, log, exp)
    assert "field 'result_cycle'" in str(rep.first)
    log = replace(perfect_log(exp), results=perfect_log(exp).results[:5],
                  result_cycle=perfect_log(exp).result_cycle[:5])
    rep = bulk.compare(CFG, log, exp)
    assert rep.mismatches >= 1 and "images/results" in str(rep.first)


def _word(bits) -> int:
    return sum(int(v) << c for c, v in enumerate(bits))


def test_log_decoding_round_trip(tmp_path, case):
    """Fixed-width hex lines as the harness writes them decode to the same values."""
    _, exp = case
    h = HarnessLayout.of(CFG)
    log = perfect_log(exp)

    def lanes_hex(row, lane_bits):
        digits = lane_bits // 4
        return "".join(format(int(v) & ((1 << lane_bits) - 1), f"0{digits}x")
                       for v in reversed(row))

    sw = dict(h.start_fields())
    with open(tmp_path / "log.start", "w") as f:
        for t in range(len(log.start_cycle)):
            trace = int(log.layer[t]) | int(log.plane[t]) << 1 | int(log.pass_[t]) << 2
            f.write(" ".join([f"{int(log.start_cycle[t]):08x}",
                              f"{trace:0{sw['trace']}x}", f"{int(log.tile[t]):0{sw['group']}x}",
                              f"{int(log.gain[t]):0{sw['gain']}x}",
                              f"{_word(log.col_en[t]):0{sw['col_en']}x}",
                              lanes_hex(log.row_x[t], h.x_lane)]) + "\n")
    with open(tmp_path / "log.done", "w") as f:
        for t in range(len(log.done_cycle)):
            f.write(f"{int(log.done_cycle[t]):08x} {lanes_hex(log.adc[t], h.adc_lane)}\n")
    (tmp_path / "log.image").write_text("".join(f"{int(c):08x}\n" for c in log.image_cycle))
    from sbnn.cosim.codec import Codec
    from sbnn.rtl.interfaces import result_layout

    lay = result_layout(CFG)
    width = dict(h.result_fields())["payload"]
    with open(tmp_path / "log.result", "w") as f:
        for c, r in zip(log.result_cycle, log.results):
            word = 0
            for name, fld in lay:
                v = r[name]
                if name == "logits":
                    v = sum((x & ((1 << CFG.threshold_bits) - 1)) << (CFG.threshold_bits * j)
                            for j, x in enumerate(v))
                word |= int(v) << fld.offset
            f.write(f"{int(c):08x} {word:0{width}x}\n")
    decoded = bulk.read_logs(CFG, tmp_path / "log")
    assert bulk.compare(CFG, decoded, exp).first is None
    assert Codec(CFG).result(0)["logits"] == (0,) * CFG.num_classes
    # A truncated log is an error, not a silent pass.
    text = (tmp_path / "log.done").read_text()
    (tmp_path / "log.done").write_text(text[:-5])
    with pytest.raises(ValueError, match="truncated"):
        bulk.read_logs(CFG, tmp_path / "log")


def test_harness_verilog_has_the_design_ports():
    text = harness_verilog(CFG, "sbnn_sim_top")
    for port in ("prog__payload", "pixels__payload", "result__payload", "probe__row_x",
                 "probe__adc", "probe_trace"):
        assert f".{port}(" in text
    assert "input  wire clk" in text
    assert "always #5000 clk" in harness_verilog(CFG, "sbnn_sim_top", hdl_clock=True)


def test_wide_column_enables_decode(tmp_path):
    """64 and more columns: the column-enable word no longer fits an int64."""
    from sbnn.cosim.bulk import _HEX, _bits

    words = [(1 << 63) | 5, (1 << 69) | (1 << 64), 0]
    text = np.frombuffer("".join(f"{w:018x}" for w in words).encode(), np.uint8)
    bits = _bits(_HEX[text.reshape(3, 18)], 70)
    assert np.array_equal(bits, column_bits(words, 70))
    assert bits[0, 63] == 1 and bits[0, 0] == 1 and bits[0, 2] == 1 and bits[1, 69] == 1
    assert bits[2].sum() == 0
