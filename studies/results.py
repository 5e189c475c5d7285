"""The results table over seeds: every committed model of the manifest evaluated on the
hardware-exact path on the test set (the final evaluation: the only place the test set is
read), aggregated per row (mean, sample std, every seed), paired exact McNemar tests, and
each target checked only where its figures exist.

Writes ``results.json``, ``results.md`` (the generated section, see
:mod:`sbnn.studies.results_report`) and the two plots.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from sbnn.golden.qmodel import QuantizedModel

from .evaluate import PAPER, evaluate_model, float_model_for, hw_pass_predictions
from .mnist import VALIDATION_IMAGES
from .results_anytime import ANYTIME_ROWS, anytime_records, exit_targets
from .results_manifest import ROWS, Manifest, RunEntry
from .results_targets import TARGETS, check_targets
from .stats import Disagreements, binomial_se_pct, disagreements, mean_and_std

__all__ = ["PROTOCOL", "TARGETS", "build_seeded_results", "evaluate_run", "relative_path"]

#: How the table is made, written into results.json and results.md.
PROTOCOL = (f"every choice (checkpoint, recipe variant, pruning count and tolerance, threshold "
            f"re-fit, exit margins) on the validation split: the last {VALIDATION_IMAGES} of "
            "the 60,000 MNIST training digits; the test set is read only by this evaluation")
#: McNemar comparisons: (name, row A, row B).
COMPARISONS = (("case_i_vs_case_i_control", "case_i", "case_i_control"),
               ("case_i_vs_baseline", "case_i", "baseline"),
               ("case_ii_vs_case_ii_control", "case_ii", "case_ii_control"))
POOLING = ("pooled: the disagreement counts of every seed pair (row A seed s against row B "
           "seed s, same test images) summed into one exact test; per-seed p-values beside")


def relative_path(path: Path | str | None) -> str | None:
    """``path`` relative to the current folder where it lies below it (as the docs name
    files: models/..., docs/...), else as given."""
    if path is None:
        return None
    path = Path(path)
    try:
        return path.absolute().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def _read_json(path: Path | None) -> dict:
    return json.loads(Path(path).read_text()) if path is not None else {}


def _prune_record(meta: dict) -> dict:
    """What sbnn prune recorded, in this table's words; the split its limit was on
    ("test" for summaries written before the validation split existed)."""
    split = meta.get("split", "test")
    key = "" if split == "test" else "val_"
    return {"prune_split": split, "prune_command": meta.get("command"),
            "prune_minutes": meta.get("prune_minutes"),
            "tolerance_pp": meta.get("tolerance_pp"),
            "unpruned_prune_split_error_pct": meta.get(f"base_{key}error_pct"),
            "pruned_prune_split_error_pct": meta.get(f"{key}error_pct"),
            "finetune_epochs": meta.get("finetune_epochs"),
            "trials": [{"pruned": t["pruned"], "error_pct": t.get(f"{key}error_pct"),
                        "finetuned": t.get("finetuned", False)}
                       for t in meta.get("trials", [])],
            "support_columns_total": meta.get("support_columns_total")}


def evaluate_run(run: RunEntry, pixels: np.ndarray, labels: np.ndarray,
                 base_plane_only: bool = False,
                 anytime_row: str | None = None) -> tuple[dict, np.ndarray]:
    """One committed model on the test set: its record for results.json (with its
    ``anytime`` entries when ``anytime_row`` names its row) and its final (every plane)
    hardware-exact predictions (for the paired tests)."""
    qm = QuantizedModel.load(run.model)
    if base_plane_only:  # the baseline is the base plane alone: no support column
        qm = qm.with_mask(tuple(np.zeros_like(m) for m in qm.support_mask))
    passes = hw_pass_predictions(qm, pixels)
    ev = evaluate_model(qm, pixels, labels, float_model_for(run.model, qm),
                        pass_predictions=passes)
    summary = _read_json(run.summary)
    seed = run.seed if run.seed is not None else summary.get("settings", {}).get("seed")
    record = {"seed": seed, "model": relative_path(run.model),
              "summary": relative_path(run.summary), "command": summary.get("command"),
              "train_minutes": summary.get(run.minutes), "minutes_field": run.minutes,
              "train_device": summary.get("device", "cpu"),
              "settings": summary.get("settings"), **ev}
    if anytime_row is not None:
        record["anytime"] = anytime_records(anytime_row, run, qm, seed, ev["budgets"],
                                            pixels.reshape(len(pixels), -1), labels)
    if run.prune_summary is not None:
        record.update(_prune_record(_read_json(run.prune_summary)),
                      prune_summary=relative_path(run.prune_summary),
                      source_model=relative_path(run.source_model))
    return record, passes[max(passes)]


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _aggregate(name: str, runs: list[dict], key: str = "hw_error_pct") -> dict:
    """``<name>_<stat>`` entries: mean over seeds, sample std (None with one seed), every
    seed's value."""
    values = [r[key] for r in runs if r.get(key) is not None]
    mean, std = mean_and_std(values)
    return {name: _rounded(mean), f"{name.removesuffix('_pct')}_std_pct": _rounded(std),
            f"{name.removesuffix('_pct')}_per_seed_pct": [round(v, 4) for v in values]}


def _paired(runs_a: list[dict], runs_b: list[dict], preds: dict, labels: np.ndarray,
            row_a: str, row_b: str) -> dict | None:
    """Exact McNemar of row A against row B, seeds paired by seed number (pooled counts
    and per-seed p); None when no seed has both."""
    seeds_b = {r["seed"] for r in runs_b}
    pairs = [r["seed"] for r in runs_a if r["seed"] in seeds_b]
    if not pairs:
        return None
    per_seed = {s: disagreements(preds[row_a][s], preds[row_b][s], labels) for s in pairs}
    pooled = sum(per_seed.values(), Disagreements(0, 0, 0))
    return {"a": row_a, "b": row_b, "seeds": pairs, "pooled": pooled.to_dict(),
            "per_seed_p": {str(s): d.p_value for s, d in per_seed.items()}}


def _variant_records(manifest: Manifest, pixels: np.ndarray, labels: np.ndarray,
                     log) -> list[dict]:
    """Every variant: evaluated now when its model is committed, else as recorded."""
    out = []
    for v in manifest.variants:
        base = {"name": v.name, "row": v.row, "description": v.description,
                "selected_on": v.selected_on}
        if v.run.model is not None:
            record, _ = evaluate_run(v.run, pixels, labels)
            out.append({**base, "evaluated": True, **record})
            log(f"variant {v.name}: {record['hw_error_pct']:.2f} % hw-exact ({record['model']})")
        else:
            out.append({**base, "evaluated": False, "model": None,
                        "hw_error_pct": v.recorded_hw_error_pct,
                        "train_minutes": v.recorded_train_minutes})
    return out


def _rel(base: float | None, x: float | None) -> float | None:
    return None if base in (None, 0) or x is None else round(100 * (base - x) / base, 2)


def build_seeded_results(manifest: Manifest, pixels: np.ndarray, labels: np.ndarray,
                         out_dir: Path, eval_command: str | None = None,
                         random_fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
                         page: str | None = None, plots_folder: str = "docs",
                         log=print) -> dict:
    """Evaluate every run of ``manifest`` on (``pixels``, ``labels``), the test set; write
    results.json, results.md and the plots into ``out_dir`` (a staging folder may stand
    for ``plots_folder``, the folder results.json names them in). ``page`` is the current
    results.md, whose prose outside the generated section is kept."""
    from .results_report import write_outputs

    t0 = time.time()
    runs: dict[str, list[dict]] = {}
    preds: dict[str, dict] = {}
    for name in ROWS:
        row = manifest.rows[name]
        runs[name], preds[name] = [], {}
        for entry in row.runs:
            record, final = evaluate_run(entry, pixels, labels, row.base_plane_only,
                                         name if name in ANYTIME_ROWS else None)
            runs[name].append(record)
            preds[name][record["seed"]] = final
            log(f"{name} seed {record['seed']}: {record['hw_error_pct']:.2f} % hw-exact "
                f"({record['model']})")
    images = int(len(labels))
    results: dict = {"test_images": images, "validation_images": VALIDATION_IMAGES,
                     "protocol": PROTOCOL,
                     "path": "hardware-exact integer path (golden/hwpath.py run_hw), every "
                             "plane evaluated",
                     "seeds": {name: [r["seed"] for r in runs[name]] for name in ROWS},
                     "rows": {name: manifest.rows[name].description for name in ROWS}}
    for name in ROWS:
        results.update(_aggregate(f"{name}_error_pct", runs[name]))
        results.update(_aggregate(f"{name}_float_error_pct", runs[name], "float_error_pct"))
    results.update(_aggregate("support_columns_pruned_pct", runs["pruned"],
                              "support_columns_pruned_pct"))
    results["binomial_se_pct"] = {
        name: _rounded(binomial_se_pct(results[f"{name}_error_pct"], images))
        for name in ROWS if results[f"{name}_error_pct"] is not None}
    mcnemar = {key: _paired(runs[a], runs[b], preds, labels, a, b)
               for key, a, b in COMPARISONS}
    results["mcnemar_p"] = {k: None if v is None else v["pooled"]["p"]
                            for k, v in mcnemar.items()}
    results["mcnemar"] = {"pooling": POOLING, **mcnemar}
    base = results["baseline_error_pct"]
    results["relative_reduction_vs_baseline_pct"] = {
        "case_i": _rel(base, results["case_i_error_pct"]),
        "case_ii": _rel(base, results["case_ii_error_pct"])}
    results["paper"] = {**PAPER, "relative_reduction_from_rates_pct": {
        "case_i": _rel(PAPER["baseline_error_pct"], PAPER["case_i_error_pct"]),
        "case_ii": _rel(PAPER["baseline_error_pct"], PAPER["case_ii_error_pct"])}}
    anytime = [e for name in ANYTIME_ROWS for r in runs[name] for e in r.pop("anytime")]
    results["anytime"] = [e for e in anytime if not e.get("exit_variant")]
    results["anytime_exit_variants"] = [e for e in anytime if e.get("exit_variant")]
    results["anytime_exit"] = exit_targets(results["anytime"])
    results["targets"] = TARGETS if manifest.targets else None
    results.update(check_targets(results, runs))  # and the derived figures they use
    if not manifest.targets:  # a side study: its design is not the targets' design
        results.update({"targets_met": {}, "targets_reasons": {}})
    results["eval_command"] = eval_command
    results["manifest"] = relative_path(manifest.path)
    results["runs"] = runs
    results["variants"] = _variant_records(manifest, pixels, labels, log)
    results["plots"] = {name: f"{plots_folder}/results_{name}.png"
                        for name in ("latency", "dropout")}
    write_outputs(results, manifest, pixels, labels, Path(out_dir), random_fractions, page)
    results["eval_minutes"] = round((time.time() - t0) / 60, 2)
    (Path(out_dir) / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
