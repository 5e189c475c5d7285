"""cocotb on Verilator: controller + *varied* behavioral macro vs the varied golden model.

Two seeds x two sigmas, each its own Verilog (the mismatch constants) and Verilator build,
cached under out/test_cosim_variability/ keyed by config and drawn tables.
"""

from pathlib import Path

import numpy as np
import pytest

from sbnn.config import SbnnConfig
from sbnn.cosim.runner import CosimJob
from sbnn.cosim.variability_runner import VariabilityJob, run_varied
from sbnn.golden.qmodel import QuantizedModel
from sbnn.golden.variability import Variation

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.cosim

# Small on purpose: the cell table is macro_rows x macro_cols constants in the Verilog.
CFG = SbnnConfig(layers=(40, 24, 10), num_supports=2, active_rows=16, macro_cols=12,
                 macro_rows=384, adc_bits=6, input_lanes=8, macro_latency=3, dac_bits=5,
                 gain_bits=3)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("var")
    rng = np.random.default_rng(77)
    model = QuantizedModel.random(CFG, rng, mask_keep=0.6)
    images = rng.integers(0, 256, (16, CFG.layers[0]), dtype=np.uint8)
    np.savez(tmp / "img.npz", images=images, labels=np.zeros(16, np.uint8))
    return CosimJob(CFG, model.save(tmp / "m.npz"), tmp / "img.npz", count=16,
                    budgets=(2, 0), random_seed=5)


@pytest.mark.parametrize("sigma", [0.05, 0.2], ids=["sigma5pct", "sigma20pct"])
@pytest.mark.parametrize("seed", [1, 2], ids=["seed1", "seed2"])
def test_varied_rtl_matches_varied_golden(job, seed, sigma, verilator):
    root = ROOT / "out" / "test_cosim_variability"
    variation = Variation(seed=seed, cell_sigma=sigma, dac_gain_sigma=sigma / 2,
                          adc_offset_sigma=4 * sigma)
    report = run_varied(VariabilityJob(job, variation), root)
    assert report.mismatches == 0, report.first_mismatch
    assert report.results_checked == 16 * 3  # two budgets + the random-controls run
    assert report.variation == variation.to_dict()
    # the variation really moved ADC codes, more at the larger sigma
    moved = report.adc_codes_moved_by_variation / report.adc_codes_compared_with_ideal
    assert moved > (0.05 if sigma < 0.1 else 0.2), moved


def test_cosim_catches_a_wrong_draw(job, verilator):
    """RTL built with seed 1, expected values from seed 3: the scoreboard must object."""
    built = Variation(seed=1, cell_sigma=0.05, dac_gain_sigma=0.025, adc_offset_sigma=0.2)
    report = run_varied(VariabilityJob(job, built, golden_variation=built.replace(seed=3)),
                        ROOT / "out" / "test_cosim_variability")
    assert report.mismatches >= 1
    assert report.results_checked == 1  # stops at the first differing image
    assert "field 'adc[" in report.first_mismatch
