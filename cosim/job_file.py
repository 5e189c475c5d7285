"""The job file: what a runner (cosim/runner.py, cosim/fast.py) tells a testbench to run.

The runner writes a JSON file and names it in ``$SBNN_COSIM_JOB`` of the simulator process;
the cocotb test reads it back. Kept free of cocotb, so that the runners import it cheaply.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbnn.config import SbnnConfig
from sbnn.golden.qmodel import QuantizedModel

__all__ = ["JOB_ENV", "read_job", "job_config", "BenchJob"]

#: Environment variable naming the job file of a testbench run.
JOB_ENV = "SBNN_COSIM_JOB"


def read_job() -> dict:
    """The job file of this run (``$SBNN_COSIM_JOB``) as written by cosim/runner.py."""
    return json.loads(Path(os.environ[JOB_ENV]).read_text())


def job_config(job: dict) -> SbnnConfig:
    """The config snapshot a job file names."""
    return SbnnConfig.from_dict(json.loads(Path(job["config"]).read_text()))


@dataclass(frozen=True)
class BenchJob:
    """What a regression bench runs: the job file's entries, with the config, the models
    and the images loaded."""

    entries: dict  # the job file as written (its path entries, budgets, report, ...)
    config: SbnnConfig
    model: QuantizedModel  # programmed into the design
    golden_model: QuantizedModel  # the expectations' model (``model`` unless told otherwise)
    images: np.ndarray  # (count, ...) uint8
    labels: np.ndarray
    pixels: np.ndarray  # (count, layers[0]): the images flattened

    @classmethod
    def load(cls, entries: dict | None = None) -> BenchJob:
        job = read_job() if entries is None else entries
        cfg = job_config(job)
        model = QuantizedModel.load(job["model"], cfg)
        golden = QuantizedModel.load(job["golden_model"], cfg) if job.get("golden_model") \
            else model
        with np.load(job["images"]) as data:
            images = data["images"][: job["count"]]
            labels = data["labels"][: job["count"]]
        return cls(job, cfg, model, golden, images, labels, images.reshape(len(images), -1))

    @property
    def stop_on_mismatch(self) -> bool:
        return self.entries.get("stop_on_mismatch", True)

    @property
    def exit_margin(self) -> int | None:
        return self.entries.get("exit_margin")

    @property
    def random_seed(self) -> int | None:
        return self.entries.get("random_seed")

    @property
    def report_path(self) -> Path:
        return Path(self.entries["report"])
