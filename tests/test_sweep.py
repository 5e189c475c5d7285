import json

import numpy as np
import pytest

from sbnn.config import SbnnConfig
from sbnn.golden import hwpath
from sbnn.golden.energy import EnergyModel
from sbnn.golden.qmodel import QuantizedModel
from sbnn.studies.sweep import (
    keep_support_fraction,
    latency_table,
    pass_counters,
    rank_support_columns,
    sweep,
)

CFG = SbnnConfig(layers=(30, 16, 5), num_supports=2, active_rows=8, macro_cols=12,
                 macro_rows=1024, adc_bits=6, gain_bits=3)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    model = QuantizedModel.random(CFG, rng, mask_keep=1.0)
    pixels = rng.integers(0, 256, (60, 30), dtype=np.uint8)
    labels = rng.integers(0, 5, 60)
    return model, pixels, labels


def test_counters_match_trace_of_each_image(setup):
    model, pixels, _ = setup
    sched = hwpath.schedule(model, 2)
    counters = pass_counters(model, sched, pixels)
    res = hwpath.run_hw(model, pixels[:5], 2, exit_margin=3, keep_adc=True)
    for i in range(5):
        trace = hwpath.expected_trace(model, sched, res, i)
        want = hwpath.expected_result(sched, res, i, trace)
        got = {k: int(v[i]) for k, v in counters[int(res.exit_pass[i])].items()}
        for key in ("cycles", "macro_evals", "column_evals", "dac_conversions",
                    "adc_conversions"):
            assert got[key] == want[key], key


def test_pruning_masks_least_useful_first(setup):
    model, _, _ = setup
    order = rank_support_columns(model)
    assert len(order) == sum(mk.size for mk in model.support_mask)
    half = keep_support_fraction(model, 0.5)
    assert half.support_columns_kept == pytest.approx(0.5, abs=0.01)
    layer, j, k = order[0]
    assert not half.support_mask[layer][j, k - 1]
    layer, j, k = order[-1]
    assert half.support_mask[layer][j, k - 1]


def test_sweep_rows_and_latency(setup):
    model, pixels, labels = setup
    rows = sweep(model, pixels, labels, [None, 5], [1.0, 0.0], EnergyModel())
    assert len(rows) == 2 * (1 + 2 * 2)  # budget 0: no-exit only; budgets 1, 2: two margins
    full = [r for r in rows if r["support_kept_pct"] == 100.0]
    assert full[-2]["mean_cycles"] >= full[-1]["mean_cycles"]  # exit never costs cycles
    table = latency_table(model, pixels, labels)
    lat = table[:3]  # the model's own design first, by budget
    assert [(r["budget"], r["num_macros"], r["macro_interval"]) for r in lat] == \
        [(b, 1, CFG.macro_latency) for b in range(3)]
    arrangements = {(r["num_macros"], r["macro_interval"]) for r in table}
    assert arrangements == {(n, i) for n in (1, 2, 4) for i in (1, CFG.macro_latency)}
    assert len(table) == 3 * len(arrangements)
    for r in table:
        assert r["min_macro_utilization_pct"] <= r["macro_utilization_pct"] <= 100
        assert r["minimum_cycles"] <= r["cycles_per_inference"]
        assert r["error_pct"] == lat[r["budget"]]["error_pct"]
    for r in lat:
        assert r["min_macro_utilization_pct"] == r["macro_utilization_pct"] == \
            round(100 * r["minimum_cycles"] / r["cycles_per_inference"], 2)
        passes = r["budget"] + 1
        # overhead: 2 cycles per layer change inside a pass, 3 per pass (decision)
        overhead = passes * (2 * (CFG.num_layers - 1) + 3)
        assert r["cycles_per_inference"] - r["minimum_cycles"] == overhead
    assert lat[0]["cycles_per_inference"] < lat[2]["cycles_per_inference"]


def test_energy_model_file_errors(tmp_path):
    bad = tmp_path / "e.json"
    bad.write_text(json.dumps({"adc_pj": -1}))
    with pytest.raises(ValueError, match="adc_pj"):
        EnergyModel.load(bad)
    bad.write_text(json.dumps({"adc_nj": 1}))
    with pytest.raises(ValueError, match="unknown field"):
        EnergyModel.load(bad)
    e = EnergyModel(macro_eval_pj=1, column_pj=0, dac_pj=0, adc_pj=0, cycle_pj=0)
    assert e.energy_pj(10, 3, 5, 7, 5) == 3
