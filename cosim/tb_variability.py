"""cocotb test: the controller with a *varied* behavioral macro, checked cycle by cycle.

Same bench and scoreboard as tb_inference; the reference is the golden hardware-exact path
with the same drawn mismatch (cosim/regression.py: ``VariedRegression``), so every ADC code
in the expected trace is the varied one. The drawn tables come from the ``mismatch.npz``
written beside the varied build by cosim/variability_runner.py (the job file names it).
"""

from __future__ import annotations

import cocotb

from sbnn.cosim.bench import Bench, start_clock
from sbnn.cosim.job_file import BenchJob
from sbnn.cosim.regression import VariedRegression
from sbnn.golden.variability import DrawnVariation


@cocotb.test()
async def variability_regression(dut):
    """Program the image; run N images per budget (and optionally random runtime controls)
    against the varied golden model; also count codes that differ from the ideal macro's."""
    job = BenchJob.load()
    drawn = DrawnVariation.load(job.entries["mismatch"])
    assert drawn.config == job.config, "mismatch tables drawn for another config"
    bench = Bench(dut, job.config)
    start_clock(dut, job.config)
    await bench.reset()
    regression = VariedRegression(bench, job, drawn)
    await regression.run()
    report = regression.report()
    report.write(job.report_path)
    assert report.first_mismatch is None, f"RTL differs from golden: {report.first_mismatch}"
