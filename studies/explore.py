"""Design-space exploration: every point of a space trained briefly, measured, and ranked.

Each point (studies/explore_space.py) is one job of the engine (sbnn/engine.py, Dask):

1. a short training run (case ii by default) on the fit split, checkpointed;
2. validation error at every budget on the hardware-exact path (the choices: the front is
   drawn on validation error), and the test error beside it (reported, never chosen on);
3. cycles per inference (timing contract) and mean energy per inference (golden/energy.py
   on 1,000 validation images) at every budget;
4. controller area: ``sbnn synth --liberty`` figures (um^2, Fmax) when a liberty is given,
   else generic Yosys cells; and a Verilator lint of the tapeout Verilog.

A point's record is written to ``points/<id>/point.json`` when it is done: a rerun skips
finished points, and any point reruns alone with ``--point ID``. The seeds come from the
recipe (every point trains with the same seed), so the records do not depend on how many
workers ran them or in which order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbnn.fileio import atomic_write_text

from .explore_space import Point

__all__ = ["PointJob", "point_file", "finished_point", "evaluate_point", "confirm_point",
           "pareto_front", "OBJECTIVES", "ENERGY_IMAGES"]

#: Validation images the mean energy per inference is measured on.
ENERGY_IMAGES = 1000


@dataclass(frozen=True)
class PointJob:
    """Everything a worker needs for one point (picklable; paths absolute)."""

    point: Point
    work: str  # the exploration's folder
    data_dir: str | None
    liberty: str | None
    threads: int = 1


def point_file(work: str | Path, point_id: str) -> Path:
    return Path(work) / "points" / point_id / "point.json"


def finished_point(job: PointJob) -> dict | None:
    """The record of a finished point, or None (the engine's ``finished``)."""
    path = point_file(job.work, job.point.id)
    return json.loads(path.read_text()) if path.is_file() else None


_DATA: dict = {}


def _data(data_dir: str | None) -> dict:
    """MNIST splits, loaded once per worker process."""
    if data_dir not in _DATA:
        from .mnist import load_mnist

        _DATA[data_dir] = {s: load_mnist(s, data_dir) for s in ("fit", "val", "test")}
    return _DATA[data_dir]


def _errors(qm, pixels: np.ndarray, labels: np.ndarray) -> list[float]:
    from .evaluate import evaluate_model, hw_pass_predictions

    ev = evaluate_model(qm, pixels, labels, pass_predictions=hw_pass_predictions(qm, pixels))
    return [b["hw_error_pct"] for b in ev["budgets"]]


def _energy(qm, pixels: np.ndarray) -> list[float]:
    """Mean energy per inference (pJ) at every budget, no exit."""
    from sbnn.golden.energy import EnergyModel
    from sbnn.golden.hwpath import schedule

    from .sweep import pass_counters

    energy = EnergyModel()
    out = []
    for budget in range(qm.config.num_supports + 1):
        sched = schedule(qm, budget)
        counters = pass_counters(qm, sched, pixels)[sched.passes[-1]]
        out.append(round(float(np.mean(energy.energy_pj(**counters))), 2))
    return out


def _area(cfg, liberty: str | None) -> dict:
    if liberty is not None:
        from sbnn.gen.silicon import synthesize_silicon

        result, _ = synthesize_silicon(cfg, Path(liberty), name="explore")
        return {"area": result.area_um2, "area_unit": "um2", "logic_area_um2":
                result.logic_area_um2, "fmax_mhz": result.fmax_mhz, "wns_ns": result.wns_ns,
                "flip_flops": result.flip_flops}
    from sbnn.gen.synth import synthesize_config

    result = synthesize_config(cfg)
    return {"area": result.cells, "area_unit": "yosys cells", "flip_flops": result.flip_flops,
            "memory_bits": result.memory_bits}


def _lint(cfg, folder: Path) -> dict:
    """Verilator lint of the simulation top and of the tapeout controller."""
    from sbnn.gen.lint import lint
    from sbnn.gen.verilog import CONTROLLER_TOP, SIM_TOP, emit_all
    from sbnn.toolchain import setup_toolchain

    setup_toolchain()
    files = emit_all(cfg, folder)
    first = None
    for top, srcs in ((SIM_TOP, [files["controller"], files["sim_top"]]),
                      (CONTROLLER_TOP, [files["controller"], files["macro_stub"]])):
        proc = lint(srcs, top)
        if proc.returncode and first is None:
            lines = (proc.stdout + proc.stderr).strip().splitlines()
            first = f"{top}: {lines[0] if lines else 'failed'}"
    return {"lint_ok": first is None, "lint_error": first}


def confirm_point(job: PointJob, images: int) -> dict:
    """The point's model on the RTL (fast cosim engine, one simulator process) on the first
    ``images`` validation images at every budget: {"rtl_images", "rtl_mismatches"}."""
    from sbnn.cosim.fast import run_fast
    from sbnn.cosim.runner import CosimJob
    from sbnn.golden.qmodel import QuantizedModel

    folder = Path(job.work) / "points" / job.point.id
    done = folder / "rtl.json"
    if done.is_file():
        return json.loads(done.read_text())
    # the trained model's config: the point's design leaves the ADC steps to the training,
    # which calibrates them from data (the model file holds the chosen ones)
    cfg = QuantizedModel.load(folder / "train" / "model.npz").config
    x, y = _data(job.data_dir)["val"]
    sample = folder / "rtl_images.npz"
    np.savez(sample, images=x[:images], labels=y[:images])
    cos = CosimJob(cfg, folder / "train" / "model.npz", sample, images,
                   tuple(range(cfg.num_supports, -1, -1)))
    report = run_fast(cos, folder / "rtl_build", workers=1).to_dict()
    runs = [r for r in report["runs"] if r["run"] == "budget"]
    out = {"rtl_images": sum(r["images"] for r in runs),
           "rtl_mismatches": sum(r["images"] - r["agree"] for r in runs),
           "rtl_first_mismatch": report["first_mismatch"]}
    atomic_write_text(done, json.dumps(out, indent=2) + "\n")
    return out


def evaluate_point(job: PointJob) -> dict:
    """Train and measure one point; its record (also written to ``point.json``)."""
    point = job.point
    record: dict = {"id": point.id, **point.varied, "varied": point.varied,
                    "case": point.case}
    if point.design is None:
        record.update(status="invalid", reason=point.invalid)
        atomic_write_text(point_file(job.work, point.id), json.dumps(record, indent=2) + "\n")
        return record
    from sbnn.config import SbnnConfig
    from sbnn.golden.hwpath import schedule
    from sbnn.golden.qmodel import QuantizedModel

    from .recipe import TrainSettings
    from .train import train

    t0 = time.time()
    cfg = SbnnConfig.from_dict(point.design)
    folder = Path(job.work) / "points" / point.id
    data = _data(job.data_dir)
    settings = TrainSettings.from_dict({"threads": job.threads, **point.recipe})
    summary = train(point.case, cfg, data["fit"], data["val"], folder / "train", settings,
                    log=lambda m: None)
    qm = QuantizedModel.load(folder / "train" / "model.npz")
    val_x = data["val"][0].reshape(len(data["val"][0]), -1)
    test_x, test_y = data["test"][0].reshape(len(data["test"][0]), -1), data["test"][1]
    train_s = time.time() - t0
    t1 = time.time()
    val = summary["val_hw_error_pct_by_budget"]
    test = _errors(qm, test_x, test_y)  # reported beside, never chosen on
    cycles = [schedule(qm, b).total_cycles() for b in range(cfg.num_supports + 1)]
    energy = _energy(qm, val_x[:ENERGY_IMAGES])
    hardware = {**_area(qm.config, job.liberty), **_lint(qm.config, folder / "verilog")}
    record.update(
        status="ok", design=qm.config.to_dict(), recipe=settings.to_dict(),
        val_error_pct=val[-1], test_error_pct=test[-1], cycles=cycles[-1],
        energy_pj=energy[-1], area=hardware.pop("area"),
        val_error_pct_by_budget=val, test_error_pct_by_budget=test,
        cycles_by_budget=cycles, energy_pj_by_budget=energy,
        float_val_error_pct=summary["val_float_error_pct"], **hardware,
        adc_steps=list(qm.config.adc_steps), train_s=round(train_s, 1),
        measure_s=round(time.time() - t1, 1),
        model=str((folder / "train" / "model.npz").relative_to(job.work)))
    atomic_write_text(point_file(job.work, point.id), json.dumps(record, indent=2) + "\n")
    return record


OBJECTIVES = ("val_error_pct", "cycles", "energy_pj", "area")


def pareto_front(records: list[dict], objectives: tuple[str, ...] = OBJECTIVES) -> list[bool]:
    """Per record, whether no other valid record is at least as good in every objective
    and better in one (all minimized); invalid records are never on the front."""
    ok = [r.get("status") == "ok" for r in records]
    values = [tuple(r[k] for k in objectives) if good else None
              for r, good in zip(records, ok)]
    front = []
    for i, v in enumerate(values):
        if v is None:
            front.append(False)
            continue
        dominated = any(w is not None and j != i and all(a <= b for a, b in zip(w, v))
                        and any(a < b for a, b in zip(w, v)) for j, w in enumerate(values))
        front.append(not dominated)
    return front



@dataclass(frozen=True)
class ConfirmJob:
    """An RTL confirmation of one point on ``images`` validation images."""

    job: PointJob
    images: int


def run_confirm(confirm: ConfirmJob) -> dict:
    """The engine's function for :class:`ConfirmJob` (module level: workers import it)."""
    return confirm_point(confirm.job, confirm.images)
