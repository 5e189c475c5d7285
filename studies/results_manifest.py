"""The manifest of the results table (``models/results.toml``): per row, the committed models
of its seeds and their training (and pruning) summaries; and every variant tried.

Format (paths relative to the manifest's folder)::

    [rows.case_i]
    description = "case (i): supports learned on the frozen baseline"
    [[rows.case_i.runs]]
    seed = 0
    model = "case_i.npz"
    summary = "case_i.train_summary.json"    # training summary: train_minutes, settings
    minutes = "train_minutes"                # the summary field holding this run's minutes

    [rows.pruned]
    [[rows.pruned.runs]]
    seed = 0
    model = "case_i_drop_pruned.npz"
    summary = "case_i_drop.train_summary.json"
    prune_summary = "case_i_drop_pruned.json" # written by sbnn prune
    source_model = "case_i_drop.npz"          # the model that was pruned

    [[rows.case_ii.runs]]                     # an anytime row's run may also name
    exit = "case_ii_s0.exit.json"             # its exit margin (sbnn exit-margin, on val)
    rtl = ["case_ii_s0.sim.json"]             # and RTL runs (sbnn sim --report)

    [table]                                   # optional: a study rather than the table
    targets = false                           # of record: no target checks (default true)

    [[variants]]                              # every variant tried, chosen or not
    name = "case_i_stage2_60ep"
    row = "case_i"
    description = "as the case (i) row with a 60-epoch stage 2"
    recorded_hw_error_pct = 0.95              # when its model is not committed
    selected_on = "test"                      # the split the choice among variants used

A row without runs is reported as missing (its figures null, its targets unchecked).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sbnn.params import parse_record_text

__all__ = ["ROWS", "ManifestError", "Manifest", "RowRuns", "RunEntry", "Variant",
           "load_manifest", "manifest_from_models"]

#: The rows of the results table, in table order.
ROWS = ("baseline", "case_i", "case_i_control", "case_ii", "case_ii_control", "pruned")
_RUN_KEYS = {"seed", "model", "summary", "minutes", "prune_summary", "source_model", "exit",
             "exit_variants", "rtl"}
_ROW_KEYS = {"description", "base_plane_only", "runs"}
_VARIANT_KEYS = {"name", "row", "description", "selected_on", "recorded_hw_error_pct",
                 "recorded_train_minutes"} | _RUN_KEYS


class ManifestError(ValueError):
    """The manifest is malformed or names a file that does not exist (one line)."""


@dataclass(frozen=True)
class RunEntry:
    """One seed of a row: its committed model and the summaries beside it."""

    seed: int | None
    model: Path | None  # None: a variant whose model was not committed
    summary: Path | None = None  # its training summary (train_minutes, settings)
    minutes: str = "train_minutes"  # the summary field with this run's training minutes
    prune_summary: Path | None = None  # sbnn prune's .json, for a pruned model
    source_model: Path | None = None  # the model it was pruned from
    exit: Path | None = None  # sbnn exit-margin's calibration (validation split)
    rtl: tuple[Path, ...] = ()  # sbnn sim --report files of this model
    #: other calibrations of the exit tried (another rule or allowance): measured and
    #: reported beside the chosen one (``exit``), never used for a target
    exit_variants: tuple[Path, ...] = ()


@dataclass(frozen=True)
class RowRuns:
    """A row of the table: what it is and its runs (one per seed)."""

    name: str
    description: str
    runs: tuple[RunEntry, ...]
    base_plane_only: bool = False  # evaluate with every support column masked


@dataclass(frozen=True)
class Variant:
    """A variant tried for a row: evaluated when its model is committed, else its figure
    as recorded when it ran."""

    name: str
    row: str
    description: str
    run: RunEntry
    selected_on: str | None = None
    recorded_hw_error_pct: float | None = None
    recorded_train_minutes: float | None = None


@dataclass(frozen=True)
class Manifest:
    """Every row (in :data:`ROWS` order, missing ones with no runs) and every variant."""

    path: Path | None
    rows: dict[str, RowRuns]
    variants: tuple[Variant, ...] = field(default=())
    #: check the table's targets (studies/results_targets.py); false for a side study, whose
    #: design the targets were not set for
    targets: bool = True


def _path(where: str, base: Path, value, must_exist: bool = True) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: a path must be a non-empty string, got {value!r}")
    path = Path(value) if Path(value).is_absolute() else base / value
    if must_exist and not path.is_file():
        raise ManifestError(f"{where}: {value!r} does not exist ({path})")
    return path


def _unknown(where: str, table: dict, allowed: set[str]) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ManifestError(f"{where}: unknown field {extra[0]!r} (known: "
                            f"{', '.join(sorted(allowed))})")


def _run(where: str, base: Path, table: dict, model_required: bool = True) -> RunEntry:
    seed = table.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ManifestError(f"{where}: seed must be an integer >= 0, got {seed!r}")
    if model_required and "model" not in table:
        raise ManifestError(f"{where}: a run needs its model (model = \"FILE.npz\")")
    minutes = table.get("minutes", "train_minutes")
    if not isinstance(minutes, str):
        raise ManifestError(f"{where}: minutes names a summary field, got {minutes!r}")
    rtl = table.get("rtl", [])
    if not isinstance(rtl, list):
        raise ManifestError(f"{where}: rtl lists sbnn sim --report files, got {rtl!r}")
    tried = table.get("exit_variants", [])
    if not isinstance(tried, list):
        raise ManifestError(f"{where}: exit_variants lists sbnn exit-margin files, got "
                            f"{tried!r}")
    if tried and "exit" not in table:
        raise ManifestError(f"{where}: exit_variants needs the chosen calibration too "
                            f"(exit = \"FILE.exit.json\")")
    return RunEntry(seed, _path(f"{where} model", base, table.get("model")),
                    _path(f"{where} summary", base, table.get("summary")), minutes,
                    _path(f"{where} prune_summary", base, table.get("prune_summary")),
                    _path(f"{where} source_model", base, table.get("source_model")),
                    _path(f"{where} exit", base, table.get("exit")),
                    tuple(_path(f"{where} rtl[{i}]", base, v) for i, v in enumerate(rtl)),
                    tuple(_path(f"{where} exit_variants[{i}]", base, v)
                          for i, v in enumerate(tried)))


def _row(name: str, base: Path, table: dict) -> RowRuns:
    where = f"rows.{name}"
    if not isinstance(table, dict):
        raise ManifestError(f"{where} must be a table")
    _unknown(where, table, _ROW_KEYS)
    runs = []
    for i, run in enumerate(table.get("runs", [])):
        _unknown(f"{where}.runs[{i}]", run, _RUN_KEYS)
        runs.append(_run(f"{where}.runs[{i}]", base, run))
    seeds = [r.seed for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ManifestError(f"{where}: every run needs a seed of its own, got {seeds}")
    return RowRuns(name, str(table.get("description", name)), tuple(runs),
                   bool(table.get("base_plane_only", False)))


def _variant(i: int, base: Path, table: dict) -> Variant:
    where = f"variants[{i}]"
    _unknown(where, table, _VARIANT_KEYS)
    if not isinstance(table.get("name"), str) or table.get("row") not in ROWS:
        raise ManifestError(f"{where}: needs a name and a row among {', '.join(ROWS)}")
    run = _run(where, base, table, model_required=False)
    if run.model is None and table.get("recorded_hw_error_pct") is None:
        raise ManifestError(f"{where} ({table['name']}): give its committed model or its "
                            "recorded_hw_error_pct")
    return Variant(table["name"], table["row"], str(table.get("description", "")), run,
                   table.get("selected_on"), table.get("recorded_hw_error_pct"),
                   table.get("recorded_train_minutes"))


def load_manifest(path: str | Path) -> Manifest:
    """Read and check the manifest at ``path`` (every named file must exist)."""
    path = Path(path)
    try:
        data = parse_record_text(path.read_text(), toml=True)
    except OSError as exc:
        raise ManifestError(f"manifest {str(path)!r}: {exc.strerror or exc}") from None
    except ValueError as exc:  # tomllib's TOMLDecodeError
        raise ManifestError(f"manifest {str(path)!r} is not valid TOML: {exc}") from None
    _unknown(f"manifest {path}", data, {"rows", "variants", "table"})
    table = data.get("table", {})
    _unknown(f"manifest {path} table", table, {"targets"})
    targets = table.get("targets", True)
    if not isinstance(targets, bool):
        raise ManifestError(f"manifest {path}: table.targets must be true or false, got "
                            f"{targets!r}")
    rows_table = data.get("rows", {})
    _unknown(f"manifest {path} rows", rows_table, set(ROWS))
    base = path.parent
    rows = {name: _row(name, base, rows_table.get(name, {})) for name in ROWS}
    variants = tuple(_variant(i, base, v) for i, v in enumerate(data.get("variants", [])))
    return Manifest(path, rows, variants, targets)


def manifest_from_models(models: dict[str, Path]) -> Manifest:
    """A one-seed manifest from ``sbnn eval --baseline/--case-i/...`` options: row name ->
    model (other names become variants); summaries are looked up beside each model."""
    rows: dict[str, RowRuns] = {name: RowRuns(name, name, ()) for name in ROWS}
    variants = []
    for name, model in models.items():
        model = Path(model)
        summary = next((p for p in (model.with_name(model.stem + ".train_summary.json"),
                                    model.parent / "train_summary.json") if p.is_file()), None)
        prune = model.with_suffix(".json")
        source = None
        if prune.is_file():  # sbnn prune's summary names the model it pruned
            source = json.loads(prune.read_text()).get("source_model")
        run = RunEntry(None, model, summary,
                       "base_train_minutes" if name == "baseline" else "train_minutes",
                       prune if prune.is_file() else None,
                       None if source is None else Path(source))
        if name in rows:
            rows[name] = RowRuns(name, name, (run,), base_plane_only=name == "baseline")
        else:
            variants.append(Variant(name, "case_i", name, run))
    return Manifest(None, rows, tuple(variants))
