"""The image regression of the per-cycle bench: every budget run, then random controls.

After programming the model (and the exit margin, if the job has one), the job's images run
once per latency budget, then, with a ``random_seed``, once more with random per-image
budgets, exit margins and support masks (cosim/controls.py). Every image's transactions and
result are compared with the golden model's in order (cosim/scoreboard.py). The inference
test (tb_inference) uses :class:`Regression` as it is; the variability test
(tb_variability) overrides where the expectations come from.
"""

from __future__ import annotations

import time

import numpy as np

from sbnn.gen.image import build_image
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.golden.variability import DrawnVariation, IntegerMacro
from sbnn.rtl.interfaces import ProgOp

from .bench import Bench
from .controls import random_controls
from .job_file import BenchJob
from .report import BenchReport, BenchRunSummary, JsonRecord, VariedBenchReport, VariedRunSummary
from .scoreboard import Scoreboard

__all__ = ["Regression", "VariedRegression", "RESULT_SLACK_CYCLES"]

#: Cycles past the schedule's end (and the image's beats) before a result is overdue.
RESULT_SLACK_CYCLES = 64


class Regression:
    """Runs a job's images on a :class:`~sbnn.cosim.bench.Bench` against ``reference``
    (the model the expectations come from) and collects the run summaries."""

    def __init__(self, bench: Bench, job: BenchJob, reference: QuantizedModel):
        self.bench = bench
        self.job = job
        self.reference = reference
        self.scoreboard = Scoreboard()
        self.runs: list[JsonRecord] = []
        self.started = time.time()

    # ------------------------------------------------------------------ expectations
    def golden(self, model: QuantizedModel, pixels: np.ndarray, budget: int,
               margin: int | None) -> object:
        """The golden run the expectations of ``pixels`` come from."""
        return hwpath.run_hw(model, pixels, budget, margin, keep_adc=True)

    def check(self, index: int, model: QuantizedModel, sched: hwpath.Schedule,
              golden: object, row: int, trace: list[dict], result: dict) -> list[dict]:
        """Compare image ``index`` (row ``row`` of the golden run) with its expectation;
        returns the expected transactions."""
        expected = hwpath.expected_trace(model, sched, golden, row)
        self.scoreboard.check_image(index, expected, trace,
                                    hwpath.expected_result(sched, golden, row, expected), result)
        return expected

    def summary(self, run: str, budget: int | None, results: list[dict], cycles0: int,
                mismatches_before: int) -> JsonRecord:
        """One run's summary (``cycles0``: the bench's cycle when the run began)."""
        n = len(results)
        labels = self.job.labels
        correct = sum(int(r["cls"] == labels[i]) for i, r in enumerate(results))
        return BenchRunSummary(
            run, budget, n, n - (len(self.scoreboard.mismatches) - mismatches_before),
            correct, 100.0 * correct / max(1, n),
            sum(r["cycles"] for r in results) / max(1, n),
            [int(r["exit_plane"]) for r in results],
            sum(r["macro_evals"] for r in results), self.bench.cycle - cycles0)

    # ------------------------------------------------------------------ the runs
    @property
    def stopped(self) -> bool:
        """A mismatch was seen and the job stops at the first one."""
        return bool(self.scoreboard.mismatches) and self.job.stop_on_mismatch

    async def program_job(self) -> None:
        """The job model's hardware image, then its exit margin if it has one."""
        self.started = time.time()
        await self.bench.program(build_image(self.job.model).program())
        if self.job.exit_margin is not None:
            await self.bench.program([(ProgOp.EXIT_MARGIN, 0, self.job.exit_margin)])

    async def _image(self, index: int, model: QuantizedModel, sched: hwpath.Schedule,
                     golden: object, row: int, beats: list[int]) -> dict:
        limit = sched.total_cycles() + self.job.config.input_beats + RESULT_SLACK_CYCLES
        trace, result, _ = await self.bench.infer(beats, limit)
        self.check(index, model, sched, golden, row, trace, result)
        return result

    async def run_budgets(self) -> None:
        """Every image once per budget of the job (the budget register set before)."""
        job, bench, model = self.job, self.bench, self.reference
        for budget in job.entries["budgets"]:
            await bench.program([(ProgOp.BUDGET, 0, budget)])
            sched = hwpath.schedule(model, budget)
            golden = self.golden(model, job.pixels, budget, job.exit_margin)
            before, cycles0, results = len(self.scoreboard.mismatches), bench.cycle, []
            for i, image in enumerate(job.images):
                results.append(await self._image(i, model, sched, golden, i,
                                                 bench.codec.pixel_beats(image)))
                if self.stopped:
                    break
            self.runs.append(self.summary("budget", budget, results, cycles0, before))
            if self.stopped:
                break

    async def run_random_controls(self) -> None:
        """With the job's ``random_seed``: runtime controls changed between inferences, no
        regeneration (per-image budget on the pixel stream, exit margin and support mask
        through prog)."""
        job, bench = self.job, self.bench
        if job.random_seed is None or self.stopped:
            return
        before, cycles0, results = len(self.scoreboard.mismatches), bench.cycle, []
        for ctl in random_controls(self.reference, len(job.images), job.random_seed):
            i, current = ctl.image, ctl.model
            await bench.program(list(ctl.prog))
            sched = hwpath.schedule(current, ctl.budget)
            golden = self.golden(current, job.pixels[i:i + 1], ctl.budget, ctl.margin)
            results.append(await self._image(i, current, sched, golden, 0,
                                             bench.codec.pixel_beats(job.images[i],
                                                                     ctl.budget)))
            if self.stopped:
                break
        self.runs.append(self.summary("random", None, results, cycles0, before))

    async def run(self) -> None:
        await self.program_job()
        await self.run_budgets()
        await self.run_random_controls()

    def report(self) -> BenchReport:
        sb = self.scoreboard
        return BenchReport(self.runs, sb.transactions, sb.results, len(sb.mismatches),
                           str(sb.first) if sb.first else None,
                           round(time.time() - self.started, 2), self.bench.cycle)


class VariedRegression(Regression):
    """The regression against the golden model with the drawn mismatch of the varied macro
    (every expected ADC code is the varied one); it also counts the codes that differ from
    the ideal macro's, which proves the bench did not run the ideal one."""

    def __init__(self, bench: Bench, job: BenchJob, drawn: DrawnVariation):
        super().__init__(bench, job, job.model)
        self.drawn = drawn
        self.varied = IntegerMacro(drawn)
        self.codes_compared = 0
        self.codes_moved = 0

    def golden(self, model, pixels, budget, margin) -> tuple[object, object]:
        """(varied golden run, ideal golden run) of ``pixels``."""
        return (hwpath.run_hw(model, pixels, budget, margin, keep_adc=True,
                              variation=self.varied),
                hwpath.run_hw(model, pixels, budget, margin, keep_adc=True))

    def check(self, index, model, sched, golden, row, trace, result) -> list[dict]:
        varied, ideal = golden
        expected = super().check(index, model, sched, varied, row, trace, result)
        nominal = hwpath.expected_trace(model, sched, ideal, row)
        for exp, nom in zip(expected, nominal):
            if exp["row_x"] == nom["row_x"]:
                cols = [c for c in range(self.job.config.macro_cols) if exp["col_en"] >> c & 1]
                self.codes_compared += len(cols)
                self.codes_moved += sum(exp["adc"][c] != nom["adc"][c] for c in cols)
        return expected

    def summary(self, run, budget, results, cycles0, mismatches_before) -> VariedRunSummary:
        n = len(results)
        labels = self.job.labels
        return VariedRunSummary(
            run, budget, n, n - (len(self.scoreboard.mismatches) - mismatches_before),
            sum(int(r["cls"] == labels[i]) for i, r in enumerate(results)),
            [int(r["exit_plane"]) for r in results], self.bench.cycle - cycles0)

    def report(self) -> VariedBenchReport:
        base = super().report()
        return VariedBenchReport(base.runs, base.transactions_checked, base.results_checked,
                                 base.mismatches, base.first_mismatch, self.codes_compared,
                                 self.codes_moved, self.drawn.variation.to_dict(),
                                 base.sim_wall_s, base.total_sim_cycles)
