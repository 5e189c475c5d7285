"""The design space of ``sbnn explore``: a TOML file of fixed and varied fields.

Format::

    [design]                 # SbnnConfig fields every point shares
    layers = [784, 128, 10]
    [recipe]                 # TrainSettings fields of every point's short training run
    joint_epochs = 2
    [vary]                   # per field (design or recipe): a list of values, or a range
    num_supports = [0, 1, 2]
    adc_bits = {from = 4, to = 8, step = 2}      # 4, 6, 8 (integers, "to" included)
    active_rows = [32, 64]
    [explore]
    case = "ii"              # training: "ii" (joint, default) or "i" (BNN, then supports)
    confirm_images = 20      # RTL cosim images of each point on the front (0: none)

The points are the cartesian product of ``[vary]`` in file order. ``macro_rows`` and
``macro_cols``, when neither the design nor ``[vary]`` gives them, follow each point: the
fewest rows that hold its tiles and ``32 * (K+1)`` columns (32 neurons per tile); its ADC
steps, unless given, are chosen from data by its training (golden/adc_calibration.py). A point the
config rejects is kept as ``invalid`` with the config's reason, not dropped silently.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbnn.config import ConfigError, SbnnConfig
from sbnn.params import parse_record_text

from .recipe import TrainSettings, TrainSettingsError

__all__ = ["SpaceError", "Space", "Point", "load_space", "NEURONS_PER_TILE"]

#: Neurons per tile when the space leaves ``macro_cols`` to each point.
NEURONS_PER_TILE = 32
_TABLES = {"design", "recipe", "vary", "explore"}
_EXPLORE_KEYS = {"case", "confirm_images"}


class SpaceError(ValueError):
    """The space file is malformed (one line naming the table and field)."""


@dataclass(frozen=True)
class Point:
    """One point of the space: its id (a hash of everything that defines it), the values
    of the varied fields, and the full design and recipe it trains and evaluates."""

    id: str
    varied: dict[str, Any]
    design: dict[str, Any] | None  # None: the config rejected it (``invalid`` says why)
    recipe: dict[str, Any]
    case: str
    invalid: str | None = None


@dataclass(frozen=True)
class Space:
    path: Path
    points: tuple[Point, ...]
    varied_fields: tuple[str, ...]
    case: str
    confirm_images: int


def _values(field: str, spec: Any) -> list:
    if isinstance(spec, list):
        if not spec:
            raise SpaceError(f"[vary] {field}: an empty list gives no point")
        return spec
    if isinstance(spec, dict):
        extra = set(spec) - {"from", "to", "step"}
        ints = [spec.get(k) for k in ("from", "to")]
        if extra or not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
            raise SpaceError(f"[vary] {field}: a range is {{from = A, to = B, step = S}} with "
                             f"integers, got {spec!r}")
        step = spec.get("step", 1)
        if not isinstance(step, int) or step < 1 or ints[1] < ints[0]:
            raise SpaceError(f"[vary] {field}: needs from <= to and an integer step >= 1, "
                             f"got {spec!r}")
        return list(range(ints[0], ints[1] + 1, step))
    raise SpaceError(f"[vary] {field}: give a list of values or a range table, got {spec!r}")


def _sized(design: dict[str, Any], fixed: set[str]) -> dict[str, Any]:
    """``design`` with the macro's rows and columns fitted to the point where the space
    leaves them open."""
    out = dict(design)
    k = out.get("num_supports", SbnnConfig.model_fields["num_supports"].default)
    if "macro_cols" not in fixed:
        out["macro_cols"] = NEURONS_PER_TILE * (k + 1)
    if "macro_rows" not in fixed:
        rows = out.get("active_rows", SbnnConfig.model_fields["active_rows"].default)
        # the most rows a config takes, in whole word-line groups: only the tiling is read
        probe = SbnnConfig.model_construct(**{**out, "macro_rows": rows * ((1 << 20) // rows)})
        out["macro_rows"] = max(1, probe.tiling.total_tiles) * rows
    return out


def _point_id(design: dict | None, varied: dict, recipe: dict, case: str) -> str:
    key = json.dumps({"design": design, "varied": varied, "recipe": recipe, "case": case},
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def load_space(path: str | Path) -> Space:
    """Read and check the space at ``path``; every point's design is validated now."""
    path = Path(path)
    try:
        data = parse_record_text(path.read_text(), toml=True)
    except OSError as exc:
        raise SpaceError(f"--space {str(path)!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SpaceError(f"--space {str(path)!r} is not valid TOML: {exc}") from None
    extra = set(data) - _TABLES
    if extra:
        raise SpaceError(f"--space: unknown table [{sorted(extra)[0]}] (known: "
                         f"{', '.join(sorted(_TABLES))})")
    design, recipe = dict(data.get("design", {})), dict(data.get("recipe", {}))
    vary, options = dict(data.get("vary", {})), dict(data.get("explore", {}))
    config_fields, recipe_fields = set(SbnnConfig.model_fields), set(TrainSettings.model_fields)
    for table, fields, known in (("design", design, config_fields),
                                 ("recipe", recipe, recipe_fields),
                                 ("vary", vary, config_fields | recipe_fields),
                                 ("explore", options, _EXPLORE_KEYS)):
        bad = sorted(set(fields) - known)
        if bad:
            raise SpaceError(f"--space [{table}]: unknown field {bad[0]!r}")
    both = sorted(set(vary) & (set(design) | set(recipe)))
    if both:
        raise SpaceError(f"--space: {both[0]!r} is both fixed and varied; keep one")
    case = options.get("case", "ii")
    if case not in ("i", "ii"):
        raise SpaceError(f"--space [explore] case: 'i' or 'ii', got {case!r}")
    confirm = options.get("confirm_images", 0)
    if not isinstance(confirm, int) or isinstance(confirm, bool) or not 0 <= confirm <= 1000:
        raise SpaceError(f"--space [explore] confirm_images: an integer in 0..1000, got "
                         f"{confirm!r}")
    try:
        TrainSettings.from_dict(recipe)
    except TrainSettingsError as exc:
        raise SpaceError(f"--space [recipe]: {exc}") from None
    names = list(vary)
    axes = [_values(n, vary[n]) for n in names]
    fixed = set(design) | set(vary)
    points = []
    for combo in itertools.product(*axes):
        varied = dict(zip(names, combo))
        point_design = {**design, **{k: v for k, v in varied.items() if k in config_fields}}
        point_recipe = {**recipe, **{k: v for k, v in varied.items() if k in recipe_fields}}
        invalid, effective = None, point_recipe
        try:
            point_design = SbnnConfig.from_dict(_sized(point_design, fixed)).to_dict()
            if "adc_steps" not in fixed:  # left to the data: training calibrates them
                del point_design["adc_steps"]
            # the id hashes the recipe with every default filled in: a default that changes
            # (or a new recipe field) gives new points, never a stale point read back
            effective = TrainSettings.from_dict(point_recipe).to_dict()
        except (ConfigError, TrainSettingsError) as exc:
            point_design, invalid = None, str(exc)
        points.append(Point(_point_id(point_design, varied, effective, case), varied,
                            point_design, point_recipe, case, invalid))
    return Space(path, tuple(points), tuple(names), case, confirm)
