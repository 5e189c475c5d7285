"""results.json ``anytime``: the dynamic accuracy-latency trade-off of the anytime rows.

For every seed of the rows in :data:`ANYTIME_ROWS`: test error and mean cycles at each
budget without exit, and at the full budget with the exit margin ``sbnn exit-margin``
calibrated on the validation split (the manifest's ``exit``), each with what the RTL agreed
on where a committed ``sbnn sim --report`` covers it (the manifest's ``rtl``). Every other
calibration tried (the manifest's ``exit_variants``) gives an entry of its own marked
``exit_variant``: results.json lists those apart (``anytime_exit_variants``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sbnn.golden.qmodel import QuantizedModel

from .exit_calibration import exit_outcome
from .results_manifest import RunEntry

__all__ = ["ANYTIME_ROWS", "anytime_records", "rtl_outcomes", "exit_targets"]

#: The rows whose every budget is a model of its own (issue "Anytime inference").
ANYTIME_ROWS = ("case_i", "case_ii")


def rtl_outcomes(reports: tuple[Path, ...]) -> dict[tuple[int, int | None], tuple[int, int]]:
    """(budget, exit margin) -> (images the RTL ran, images with any mismatch), summed over
    the committed ``sbnn sim --report`` files (which record their exit margin)."""
    out: dict[tuple[int, int | None], tuple[int, int]] = {}
    for path in reports:
        report = json.loads(Path(path).read_text())
        margin = report.get("exit_margin")
        for run in report["runs"]:
            if run.get("run") != "budget":
                continue
            key = (run["budget"], margin)
            images, bad = out.get(key, (0, 0))
            out[key] = (images + run["images"], bad + run["images"] - run["agree"])
    return out


def anytime_records(row: str, run: RunEntry, qm: QuantizedModel, seed: int | None,
                    budgets: list[dict], pixels: np.ndarray, labels: np.ndarray) -> list[dict]:
    """One entry per budget (no exit) and one for the calibrated exit, for one seed;
    ``budgets`` are the evaluation's per-budget rows (``hw_error_pct``, ``cycles``)."""
    rtl = rtl_outcomes(run.rtl)

    def entry(budget: int, margin: int | None, error: float, cycles: float,
              extra: dict | None = None) -> dict:
        images, bad = rtl.get((budget, margin), (None, None))
        return {"model": row, "seed": seed, "budget": budget, "exit_margin": margin,
                "error_pct": round(error, 4), "mean_cycles": round(cycles, 2),
                "rtl_images": images, "rtl_mismatches": bad, **(extra or {})}

    out = [entry(b["budget"], None, b["hw_error_pct"], b["cycles"]) for b in budgets]
    calibrations = [] if run.exit is None else [run.exit, *run.exit_variants]
    for i, path in enumerate(calibrations):
        calib = json.loads(Path(path).read_text())
        margin, budget = calib["exit_margin"], calib["budget"]
        point = exit_outcome(qm, pixels, labels, margin, budget)
        out.append(entry(budget, margin, point.error_pct, point.mean_cycles, {
            "exit_early_pct": point.exit_early_pct, "changed_pct": point.changed_pct,
            "calibration": {"file": Path(path).name, "split": calib["split"],
                            # files written before the agreement rule bound the error
                            "criterion": calib.get("criterion", "error"),
                            "tolerance_pp": calib["tolerance_pp"],
                            "val_error_pct": calib["chosen"]["error_pct"],
                            "val_changed_pct": calib["chosen"].get("changed_pct"),
                            "val_no_exit_error_pct": calib["no_exit"]["error_pct"]},
            **({"exit_variant": True} if i else {})}))
    return out


def exit_targets(entries: list[dict], tolerance_pp: float = 0.05,
                 cycles_saved_pct: float = 45.0) -> dict:
    """Per row (means over seeds): the exit's error against the full budget's and the
    cycles it saves; ``met`` None where a row has no calibrated exit."""
    out = {}
    for row in ANYTIME_ROWS:
        seeds = sorted({e["seed"] for e in entries if e["model"] == row
                        and e["exit_margin"] is not None}, key=str)
        if not seeds:
            out[row] = {"met": None}
            continue
        full, ext = [], []
        for s in seeds:
            mine = [e for e in entries if e["model"] == row and e["seed"] == s]
            top = max(e["budget"] for e in mine)
            full.append(next(e for e in mine if e["budget"] == top
                             and e["exit_margin"] is None))
            ext.append(next(e for e in mine if e["exit_margin"] is not None))
        d_err = float(np.mean([x["error_pct"] - f["error_pct"] for x, f in zip(ext, full)]))
        saved = float(np.mean([100 * (1 - x["mean_cycles"] / f["mean_cycles"])
                               for x, f in zip(ext, full)]))
        out[row] = {"seeds": seeds, "error_above_full_pp": round(d_err, 4),
                    "cycles_saved_pct": round(saved, 2),
                    "met": d_err <= tolerance_pp + 1e-9 and saved >= cycles_saved_pct}
    return out
