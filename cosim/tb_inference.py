"""cocotb test: real MNIST images through the generated Verilog, checked cycle by cycle.

The bench (driver and monitor, cosim/bench.py), the runs (cosim/regression.py) and the
in-order scoreboard (cosim/scoreboard.py) are library modules; this file holds the test.
The job comes from the file named by ``SBNN_COSIM_JOB`` (cosim/runner.py writes it).
"""

from __future__ import annotations

import cocotb

from sbnn.cosim.bench import Bench, start_clock
from sbnn.cosim.job_file import BenchJob
from sbnn.cosim.regression import Regression


@cocotb.test()
async def inference_regression(dut):
    """Program the trained image; run N MNIST images per latency budget, then (optionally)
    images with random per-inference budgets, exit margins and support masks; compare all."""
    job = BenchJob.load()
    bench = Bench(dut, job.config)
    start_clock(dut, job.config)
    await bench.reset()
    regression = Regression(bench, job, job.golden_model)
    await regression.run()
    report = regression.report()
    report.write(job.report_path)
    assert report.first_mismatch is None, f"RTL differs from golden: {report.first_mismatch}"
