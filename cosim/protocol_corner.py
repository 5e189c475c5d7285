"""The frame of a protocol corner: each scenario of tb_protocol becomes a cocotb test that
sets up the bench, runs the scenario and a quiet tail, and adds its entry to the report.

Also the scenarios' shared helpers (an exit margin that splits the images, an image picker,
programming a model through the protocol bench).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import cocotb
import numpy as np

from sbnn.config import SbnnConfig
from sbnn.gen.image import build_image
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel

from .bench import start_clock
from .job_file import job_config, read_job
from .protocol_bench import ProtocolBench
from .report import CornerReport, ProtocolReport

__all__ = ["corner", "split_margin", "image_picker", "program_model", "Scenario"]

#: A corner's scenario: (bench, model A, model B, images) -> None.
Scenario = Callable[[ProtocolBench, QuantizedModel, QuantizedModel, np.ndarray],
                    Awaitable[None]]
#: Entries of a corner's error list kept in the report.
REPORTED_ERRORS = 20


def _setup(job: dict) -> tuple[SbnnConfig, QuantizedModel, QuantizedModel, np.ndarray, dict]:
    """(config, model A (the job's), model B, images, wrong-golden map) of a corner."""
    cfg = job_config(job)
    model_a = QuantizedModel.load(job["model"], cfg)
    # A second model for reprogramming: same config, independent weights and masks, and
    # thresholds that differ between passes (a pass reading another pass's row shows).
    model_b = QuantizedModel.random(cfg, np.random.default_rng(job["random_seed"] + 1),
                                    mask_keep=0.6, per_pass=True)
    with np.load(job["images"]) as data:
        images = data["images"][: job["count"]].reshape(-1, cfg.layers[0])
    wrong = {}
    if job.get("golden_model"):
        wrong[id(model_a)] = QuantizedModel.load(job["golden_model"], cfg)
    return cfg, model_a, model_b, images, wrong


def _add_to_report(path: str, name: str, entry: CornerReport) -> None:
    """Each corner is its own cocotb test: the report file gathers them one by one."""
    report = ProtocolReport.read(path) if Path(path).exists() else ProtocolReport()
    report.add(name, entry)
    report.write(path, default=str)


def _corner_report(bench: ProtocolBench, error: str | None, wall_s: float) -> CornerReport:
    chk = bench.checker
    checked = [i for i in bench.images if i.taken is not None and i.taken >= 0]
    return CornerReport(
        errors=chk.errors[:REPORTED_ERRORS] + ([error] if error and error not in chk.errors
                                               else []),
        timeout_or_abort=error,
        images_sent=len(bench.images), results=len(chk.finished),
        results_checked=chk.sb.results, transactions_checked=chk.sb.transactions,
        mutated_images=sum(i.mutated for i in checked),
        mismatched_images=sum(not i.ok for i in checked),
        stall_cycles=chk.stall_cycles,
        load_gaps=[b.first_beat - a.taken for a, b in zip(checked, checked[1:])
                   if b.first_beat is not None and a.taken is not None],
        load_spans=[i.last_beat - i.first_beat for i in checked],
        exit_planes=[i.expected_result.get("exit_plane") for i in checked],
        sim_cycles=bench.cycle, wall_s=wall_s, details={**bench.stats, **bench.extra})


def corner(func: Scenario):
    """Wrap a scenario as a cocotb test: clock, reset, the scenario, a quiet tail, report."""

    async def test(dut):
        job = read_job()
        cfg, model_a, model_b, images, wrong = _setup(job)
        bench = ProtocolBench(dut, cfg, seed=job["random_seed"], wrong=wrong,
                              keep_going=bool(wrong))
        start_clock(dut, cfg)
        await bench.reset()
        t0, error = time.time(), None
        try:
            await func(bench, model_a, model_b, images)
            await bench.flush("the scenario's last results")
            await bench.idle(2 * cfg.macro_latency + 16)  # nothing may follow the results
        except Exception as exc:  # reported per corner; a wrong-golden run goes on
            error = str(exc) if isinstance(exc, AssertionError) else \
                f"{type(exc).__name__}: {exc}"
        entry = _corner_report(bench, error, round(time.time() - t0, 2))
        _add_to_report(job["report"], func.__name__, entry)
        if not wrong:
            assert not entry.errors, entry.errors[0]

    # cocotb names a test by its function's module: the scenario's (tb_protocol).
    test.__module__, test.__qualname__ = func.__module__, func.__name__
    test.__doc__ = func.__doc__
    return cocotb.test(name=func.__name__)(test)


def split_margin(model: QuantizedModel, images: np.ndarray, budget: int) -> int:
    """An exit margin that some of ``images`` reach after pass 0 and some do not."""
    m = hwpath.margins(hwpath.run_hw(model, images, budget, None).pass_logits[0])
    return int(np.median(m)) + 1 if m.max() > m.min() else int(m.max())


def image_picker(images: np.ndarray) -> Callable[[Callable, str], int]:
    """pick(pred, what): the index of the first unused image satisfying ``pred``."""
    used: set[int] = set()

    def pick(pred, what: str) -> int:
        for i, img in enumerate(images):
            if i not in used and pred(img):
                used.add(i)
                return i
        raise AssertionError(f"no test image {what} (test setup)")
    return pick


async def program_model(bench: ProtocolBench, model: QuantizedModel, extra=()) -> None:
    """The model's whole hardware image (then ``extra`` ops) through the prog stream."""
    bench.queue_prog(build_image(model).program() + list(extra), model)
    await bench.flush("programming a model")
