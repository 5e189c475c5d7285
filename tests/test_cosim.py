"""cocotb regression on Verilator: generated Verilog vs the golden trace, cycle by cycle."""

import numpy as np
import pytest

from sbnn.cli import _default_model, _default_sample
from sbnn.config import SbnnConfig
from sbnn.cosim.runner import CosimJob, run_cosim
from sbnn.golden.qmodel import QuantizedModel

pytestmark = pytest.mark.cosim

#: Three weight layers, K=2, several row and column blocks: small enough to build quickly.
SMALL_K2 = SbnnConfig(layers=(40, 24, 12, 10), num_supports=2, active_rows=16, macro_cols=12,
                      macro_rows=512, adc_bits=6, input_lanes=8, macro_latency=3, dac_bits=5,
                      gain_bits=3)


# The default design through the per-cycle bench is marked slow: CI runs the default design
# on the fast engine (test_fast_cosim.py, same checks) and the per-cycle bench on the small
# three-layer config below (and in test_cosim_protocol.py), which saves a large Verilator
# build. `nox -s regression` runs everything, these included.
@pytest.mark.slow
def test_default_model_mnist_images_two_budgets_per_cycle_bench(cosim_build_root, verilator):
    # The per-cycle bench (Python drives and checks every clock); 200+ images per budget run
    # on the fast engine (test_fast_cosim.py), this keeps the reference bench honest.
    model = QuantizedModel.load(_default_model())
    cfg = model.config
    report = run_cosim(CosimJob(cfg, _default_model(), _default_sample(), count=100,
                                budgets=(cfg.num_supports, 0)), cosim_build_root)
    assert report.mismatches == 0, report.first_mismatch
    assert report.results_checked == 200
    from sbnn.golden.hwpath import schedule
    evals = sum(len(schedule(model, b)) for b in (cfg.num_supports, 0))
    assert report.transactions_checked == 100 * evals
    full, base = report.runs
    assert full.agree == base.agree == 100
    assert full.rtl_accuracy_pct >= 95.0
    assert full.cycles_per_inference > base.cycles_per_inference


@pytest.mark.slow
def test_default_model_confidence_exit_and_random_controls(cosim_build_root, verilator):
    model = QuantizedModel.load(_default_model())
    report = run_cosim(CosimJob(model.config, _default_model(), _default_sample(), count=40,
                                budgets=(model.config.num_supports,), exit_margin=20,
                                random_seed=3), cosim_build_root)
    assert report.mismatches == 0, report.first_mismatch
    exits = report.runs[0].exit_planes
    assert 0 in exits and model.config.num_supports in exits


@pytest.mark.slow
def test_cosim_catches_a_wrong_golden_threshold(cosim_build_root, tmp_path, verilator):
    model = QuantizedModel.load(_default_model())
    thresholds = list(model.thresholds)
    thresholds[0] = thresholds[0].copy()
    thresholds[0][:] += 100  # hidden layer now mostly -1 in the "expected" model
    wrong = QuantizedModel(model.config, model.planes, tuple(thresholds), model.support_mask)
    report = run_cosim(CosimJob(model.config, _default_model(), _default_sample(), count=3,
                                budgets=(1,), golden_model=wrong.save(tmp_path / "w.npz")),
                       cosim_build_root)
    assert report.mismatches >= 1
    assert report.results_checked == 1  # stops at the first differing image
    first = report.first_mismatch
    assert first.startswith("image 0, eval ") and "at cycle" in first
    assert "field 'row_x" in first  # layer-1 inputs differ first


def _small_k2_case(tmp_path, count: int):
    """A random SMALL_K2 model and ``count`` random images, saved: (model, path, images)."""
    rng = np.random.default_rng(2024)
    # thresholds that differ between passes: pass p must read row p
    model = QuantizedModel.random(SMALL_K2, rng, mask_keep=0.5, per_pass=True)
    images = rng.integers(0, 256, (count, SMALL_K2.layers[0]), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", images=images, labels=np.zeros(count, np.uint8))
    return model, model.save(tmp_path / "m.npz"), tmp_path / "img.npz"


def test_random_three_layer_config_k2(cosim_build_root, tmp_path, verilator):
    _, model_path, images = _small_k2_case(tmp_path, 20)
    report = run_cosim(CosimJob(SMALL_K2, model_path, images, count=20, budgets=(2, 1, 0),
                                random_seed=7), cosim_build_root)
    assert report.mismatches == 0, report.first_mismatch
    assert report.results_checked == 80
    rand = report.runs[-1]
    assert rand.run == "random" and len(set(rand.exit_planes)) > 1


def test_per_cycle_bench_catches_a_wrong_golden_model(cosim_build_root, tmp_path, verilator):
    model, model_path, images = _small_k2_case(tmp_path, 4)
    thresholds = [t.copy() for t in model.thresholds]
    thresholds[0][:] += 1000  # every hidden activation -1 in the "expected" model
    wrong = QuantizedModel(SMALL_K2, model.planes, tuple(thresholds), model.support_mask)
    report = run_cosim(CosimJob(SMALL_K2, model_path, images, count=4, budgets=(2,),
                                golden_model=wrong.save(tmp_path / "w.npz")),
                       cosim_build_root)
    assert report.mismatches >= 1 and report.results_checked == 1
    first = report.first_mismatch
    assert first.startswith("image 0, eval ") and "field 'row_x" in first
