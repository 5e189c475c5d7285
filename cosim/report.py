"""Typed reports of the two cosim engines, in the form they are written as JSON.

* the per-cycle bench (cosim/bench.py; cocotb tests in tb_inference, tb_variability,
  tb_protocol): :class:`BenchReport`, :class:`VariedBenchReport`, :class:`ProtocolReport`;
* the fast signature engine (cosim/fast.py; cocotb test in tb_fast): one
  :class:`WorkerReport` per simulator process, merged into a :class:`FastReport`.

``to_dict()`` gives the JSON form: keys in field order (the files keep their layout, and
``sbnn sim --report`` writes the same bytes as before these types existed); ``from_dict()``
reads it back (the testbench writes the report in the simulator process, the runner reads
it in the caller's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["JsonRecord", "RunSummary", "BenchRunSummary", "VariedRunSummary", "BenchReport",
           "VariedBenchReport", "CornerReport", "ProtocolReport", "ImageOutcome",
           "WorkerReport", "FastReport", "EquivalenceRunReport", "RawRunReport",
           "summarize_images"]

#: Field metadata: a ``None`` value is left out of the JSON form (keys written only when set).
OMIT_NONE = {"omit_none": True}
#: Field metadata: a dict whose entries are written inline, after the fields before it.
INLINE = {"inline": True}


def _to_json(value: Any) -> Any:
    if isinstance(value, JsonRecord):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


class JsonRecord:
    """Mixin of the report dataclasses: the JSON form and back. ``nested`` names the fields
    that hold records (or lists or dicts of records) and their record class."""

    nested: ClassVar[dict[str, type[JsonRecord]]] = {}

    def to_dict(self) -> dict:
        out: dict = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.metadata.get("inline"):
                out.update(_to_json(value))
            elif not (value is None and f.metadata.get("omit_none")):
                out[f.name] = _to_json(value)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Any:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        kwargs: dict = {}
        inline = [f.name for f in fields(cls) if f.metadata.get("inline")]  # type: ignore
        for key, value in data.items():
            if key not in names:
                if not inline:
                    raise ValueError(f"{cls.__name__}: no field for the report key {key!r}")
                kwargs.setdefault(inline[0], {})[key] = value
                continue
            record = cls.nested.get(key)
            if record is not None and isinstance(value, list):
                value = [record.from_dict(v) for v in value]
            elif record is not None and isinstance(value, dict):
                value = {k: record.from_dict(v) for k, v in value.items()}
            kwargs[key] = value
        return cls(**kwargs)

    def write(self, path: str | Path, indent: int | None = 2, **dumps: Any) -> None:
        """The JSON form into ``path`` (one line with ``indent=None``)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=indent, **dumps) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> Any:
        return cls.from_dict(json.loads(Path(path).read_text()))


# ---------------------------------------------------------------------------- runs

@dataclass
class RunSummary(JsonRecord):
    """One run of a job (a budget, or the random-controls run) as ``sbnn sim`` prints it."""

    run: str  # "budget", "random", "equiv"
    budget: int | None  # None for the random-controls run
    images: int
    agree: int  # images with no mismatch
    rtl_correct: int  # images the RTL classified as labelled
    rtl_accuracy_pct: float
    cycles_per_inference: float
    exit_planes: list[int]


@dataclass
class BenchRunSummary(RunSummary):
    """A run of the per-cycle bench: also its macro evaluations and simulated cycles."""

    macro_evals: int
    sim_cycles: int


@dataclass
class VariedRunSummary(JsonRecord):
    """A run of the variability bench (the varied macro's results are not MNIST accuracy)."""

    run: str
    budget: int | None
    images: int
    agree: int
    rtl_correct: int
    exit_planes: list[int]
    sim_cycles: int


# ---------------------------------------------------------------------------- per-cycle bench

@dataclass
class BenchReport(JsonRecord):
    """The inference regression of the per-cycle bench (tb_inference)."""

    nested: ClassVar = {"runs": BenchRunSummary}
    runs: list[BenchRunSummary]
    transactions_checked: int
    results_checked: int
    mismatches: int
    first_mismatch: str | None
    sim_wall_s: float
    total_sim_cycles: int


@dataclass
class VariedBenchReport(JsonRecord):
    """The regression of the controller with a varied macro (tb_variability)."""

    nested: ClassVar = {"runs": VariedRunSummary}
    runs: list[VariedRunSummary]
    transactions_checked: int
    results_checked: int
    mismatches: int
    first_mismatch: str | None
    adc_codes_compared_with_ideal: int
    adc_codes_moved_by_variation: int  # proves the bench did not run the ideal macro
    variation: dict  # the Variation's parameters
    sim_wall_s: float
    total_sim_cycles: int


@dataclass
class CornerReport(JsonRecord):
    """One protocol corner (tb_protocol): what was sent, taken and checked, and the driver's
    statistics and the corner's own entries (``details``, written inline)."""

    errors: list[str]
    timeout_or_abort: str | None
    images_sent: int
    results: int
    results_checked: int
    transactions_checked: int
    mutated_images: int  # expectation from the deliberately wrong golden model
    mismatched_images: int
    stall_cycles: int  # cycles a valid result waited for ready
    load_gaps: list[int]  # cycles from a result's handshake to the next first beat
    load_spans: list[int]  # cycles from an image's first beat to its last
    exit_planes: list[int | None]
    sim_cycles: int
    wall_s: float
    details: dict = field(default_factory=dict, metadata=INLINE)


@dataclass
class ProtocolReport(JsonRecord):
    """Every protocol corner run so far; ``mismatches`` counts their errors."""

    nested: ClassVar = {"corners": CornerReport}
    corners: dict[str, CornerReport] = field(default_factory=dict)
    mismatches: int = 0

    def add(self, name: str, corner: CornerReport) -> None:
        self.corners[name] = corner
        self.mismatches = sum(len(c.errors) for c in self.corners.values())


# ---------------------------------------------------------------------------- fast engine

@dataclass
class ImageOutcome(JsonRecord):
    """One image of the fast engine: where it ran, whether it matched, what the RTL said
    (``cls``, ``cycles``, ``exit_plane`` are -1 when no result came)."""

    image: int
    run: str
    budget: int
    block: int
    ok: bool
    label: int
    cls: int
    cycles: int
    exit_plane: int


@dataclass
class WorkerReport(JsonRecord):
    """One simulator process of the fast engine (tb_fast)."""

    nested: ClassVar = {"per_image": ImageOutcome}
    images: int
    transactions_checked: int
    results_checked: int
    mismatches: int
    first_mismatch: str | None
    harness_failed: bool
    sim_cycles: int
    sim_wall_s: float
    check_wall_s: float
    per_image: list[ImageOutcome]


@dataclass
class FastReport(JsonRecord):
    """A fast-engine job: the workers' reports merged, with the run summaries."""

    nested: ClassVar = {"runs": RunSummary, "per_image": ImageOutcome}
    runs: list[RunSummary]
    engine: str
    workers: int
    images: int
    transactions_checked: int
    results_checked: int
    mismatches: int
    first_mismatch: str | None
    harness_failed: bool
    sim_cycles: int
    wall_s: float  # simulation and check, workers in parallel
    build_s: float
    sim_wall_s: float  # the slowest worker's
    check_wall_s: float
    log_bytes: int
    per_image: list[ImageOutcome]
    run_dir: str
    waves: list[str]
    expected_images: int
    #: The signature check's first mismatch when a rerun with the full log localized it.
    first_mismatch_digest: str | None = field(default=None, metadata=OMIT_NONE)


@dataclass
class EquivalenceRunReport(FastReport):
    """Cases of one random config (cosim/equivalence.py): the fast report, the config and
    the first failing case (``CONFIG_SEED:INDEX``, None when every case matched)."""

    failing_case: str | None = None
    config: dict = field(default_factory=dict)


@dataclass
class RawRunReport(JsonRecord):
    """The harness without cocotb and without checks: the simulator's own speed."""

    images: int
    sim_cycles: int
    wall_s: float
    workers: int
    failed: bool


def summarize_images(per_image: list[ImageOutcome]) -> list[RunSummary]:
    """Per-run summary of the fast engine's images, in the order the runs first appear."""
    keys = list(dict.fromkeys((p.run, p.budget if p.run == "budget" else None)
                              for p in per_image))
    out = []
    for run, budget in keys:
        rows = [p for p in per_image
                if p.run == run and (run != "budget" or p.budget == budget)]
        n = len(rows)
        correct = sum(p.cls == p.label for p in rows)
        out.append(RunSummary(run, budget, n, sum(p.ok for p in rows), correct,
                              100.0 * correct / n, sum(p.cycles for p in rows) / n,
                              [p.exit_plane for p in rows]))
    return out
