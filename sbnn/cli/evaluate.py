"""``sbnn eval``: the final evaluation, on the test set. Test error per latency budget on the
hardware-exact path, for one model, or as the results table over seeds: from a manifest
(``--manifest models/results.toml``, what ``nox -s results`` runs) or one model per row
(``--baseline/--case-i/--case-ii/--pruned/--also``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sbnn.fileio import atomic_write_text, check_output_path, staged_folder

from .arguments import add_command, add_config_option, add_data_dir_option, add_model_option
from .errors import CliError
from .loaders import load_model, model_from_args, model_path

__all__ = ["add_parser", "run", "portable_command"]

#: The named models of the results table, one option each (``--case-i`` ...).
TABLE_ROLES = ("baseline", "case_i", "case_ii", "pruned")
#: The results.json entries printed after the table is built.
_TABLE_SUMMARY_KEYS = ("baseline_error_pct", "case_i_error_pct", "case_i_control_error_pct",
                       "case_ii_error_pct", "case_ii_control_error_pct",
                       "support_columns_pruned_pct", "pruned_error_pct", "mcnemar_p", "seeds",
                       "test_images", "targets_met", "targets_reasons")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn eval``."""
    sp = add_command(subparsers, "eval", run,
                     "test error per latency budget, hardware-exact path",
                     add_config_option, add_data_dir_option, add_model_option)
    sp.add_argument("--json", type=Path, help="also write the table as JSON")
    sp.add_argument("--manifest", type=Path,
                    help="results table over seeds: the manifest of its rows' committed "
                         "models and summaries (models/results.toml)")
    for role in TABLE_ROLES:
        sp.add_argument(f"--{role.replace('_', '-')}", dest=role, type=Path,
                        help=f"results table: the {role.replace('_', ' ')} model .npz")
    sp.add_argument("--also", action="append", metavar="NAME=MODEL",
                    help="results table: one more run to evaluate and list (repeatable)")
    sp.add_argument("--out", type=Path, default=Path("docs"),
                    help="results table: folder for results.json and the plots (default docs)")
    return sp


def _table_models(args: argparse.Namespace) -> dict[str, Path]:
    """The results table's models by name (empty: evaluate one model)."""
    table = {r: getattr(args, r) for r in TABLE_ROLES if getattr(args, r) is not None}
    for item in args.also or ():
        name, sep, path = item.partition("=")
        if not sep or not name or not path or name in table:
            raise CliError(f"--also takes NAME=MODEL.npz with a new name, got {item!r}")
        table[name] = Path(path)
    return table


def run(args: argparse.Namespace) -> int:
    """Evaluate one model, or build the results table when any table model is named."""
    table = _table_models(args)
    if table or args.manifest is not None:
        if args.model is not None or args.json is not None:
            raise CliError("--model/--json evaluate one model; --manifest or --baseline/"
                           "--case-i/--case-ii/--pruned build the results table: use one "
                           "form or the other")
        if table and args.manifest is not None:
            raise CliError("--manifest names every row's models: drop --baseline/--case-i/"
                           "--case-ii/--pruned/--also, or drop --manifest")
        return _results_table(args, table)
    return _evaluate_one(args)


def portable_command(argv: list[str]) -> str:
    """The command line as results.json records it: without ``--data-dir`` (a folder of
    one machine; the data is found through SBNN_MNIST_DIR or ../shared/data/mnist)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--data-dir":
            skip = True
        elif not arg.startswith("--data-dir="):
            kept.append(arg)
    return "sbnn " + " ".join(kept)


def _results_table(args: argparse.Namespace, table: dict[str, Path]) -> int:
    """Every run of the manifest (or of the named models) evaluated on the test set;
    results.json, results.md and the plots in ``--out``."""
    from sbnn.studies.mnist import load_mnist
    from sbnn.studies.results import build_seeded_results
    from sbnn.studies.results_manifest import (
        ManifestError,
        load_manifest,
        manifest_from_models,
    )
    from sbnn.studies.results_report import check_markers

    for path in table.values():
        load_model(path, None)  # clear error for a missing or bad file, before the work
    try:
        manifest = load_manifest(args.manifest) if args.manifest else manifest_from_models(table)
    except ManifestError as exc:
        raise CliError(str(exc)) from None
    for row in manifest.rows.values():
        for run in row.runs:
            load_model(run.model, None)
    check_output_path(args.out, "--out", folder=True)
    page_path = Path(args.out) / "results.md"
    page = page_path.read_text() if page_path.is_file() else None
    try:  # before minutes of evaluation: a page whose generated section lost a marker
        check_markers(page)
    except ValueError as exc:
        raise CliError(f"{page_path}: {exc}") from None
    images, labels = load_mnist("test", args.data_dir)
    print(f"results table on {len(labels)} test images, hardware-exact path; writing "
          f"{args.out}/results.json, results.md and plots", flush=True)
    with staged_folder(args.out) as stage:  # results.json, .md and plots appear together
        res = build_seeded_results(manifest, images, labels, stage,
                                   eval_command=portable_command(args.argv), page=page,
                                   plots_folder=Path(args.out).as_posix(),
                                   log=lambda m: print(m, flush=True))
    print(json.dumps({k: res[k] for k in _TABLE_SUMMARY_KEYS}, indent=2))
    return 0


def _evaluate_one(args: argparse.Namespace) -> int:
    """One model's error and cycles per budget (float path beside it where its twin is)."""
    from sbnn.studies.evaluate import evaluate_model, float_model_for
    from sbnn.studies.mnist import load_mnist

    path = model_path(args)
    model = model_from_args(args)
    cfg = model.config
    if args.json is not None:
        check_output_path(args.json, "--json", folder=False)
    images, labels = load_mnist("test", args.data_dir)
    net = float_model_for(path, model)
    print(f"model {path}: layers {list(cfg.layers)}, "
          f"K={cfg.num_supports}, {len(labels)} test images, hardware-exact path"
          + ("" if net is None else " (float path beside it)"))
    ev = evaluate_model(model, images, labels, net)
    rows = []
    for row in ev["budgets"]:
        b, err, cyc = row["budget"], row["hw_error_pct"], row["cycles"]
        rows.append({"budget": b, "error_pct": round(err, 2), "cycles": cyc,
                     "float_error_pct": row["float_error_pct"]})
        fl = "" if net is None else f", float {row['float_error_pct']:.2f} %"
        print(f"  budget {b}: error {err:.2f} %{fl}, {cyc} cycles "
              f"({cyc / cfg.clock_mhz:.2f} us at {cfg.clock_mhz:g} MHz)")
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
    return 0
