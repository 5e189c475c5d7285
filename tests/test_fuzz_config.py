"""Fuzzing malformed config files (TOML and JSON) through ``sbnn gen``.

Each example starts from a valid design and breaks it in exactly one way (a field of the
wrong type or out of its range, an unknown field or table, a duplicate key, a field shadowed
by ``[sbnn]``, NaN, damaged syntax); ``sbnn gen`` must exit with status 2 and one
``sbnn: error:`` line naming the field (or ``--config`` for a file that does not parse), with
no traceback and nothing written. The budget is bounded for CI (``FUZZ``).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.cosim.equivalence import MAX_MACRO_WORD, random_config

FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

BASE = {"layers": [16, 8, 4], "active_rows": 4, "macro_cols": 8, "macro_rows": 64}
FIELDS = set(SbnnConfig.model_fields)
#: Integer fields: (lowest, highest) allowed value (the ranges docs/architecture.md gives).
INT_FIELDS: dict[str, tuple[int, int]] = {
    "num_supports": (0, 7), "active_rows": (1, 1024), "macro_cols": (1, 1024),
    "macro_rows": (1, 1 << 20), "dac_bits": (1, 8), "gain_bits": (1, 8),
    "adc_bits": (2, 16), "macro_latency": (2, 64), "input_lanes": (1, 256),
}
JUNK = st.one_of(st.text(max_size=5), st.booleans(), st.none(),
                 st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers()),
                 st.fixed_dictionaries({"x": st.integers()}))


def _toml_value(v) -> str:
    if v is None:  # TOML has no null: an empty string is as wrong for every field
        return '""'
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):  # JSON escapes, minus surrogate pairs (TOML has none)
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if v != v else
                                                 ("inf" if v > 0 else "-inf"))
    return str(v)


def _toml(fields: dict, table: str | None = "sbnn") -> str:
    head = f"[{table}]\n" if table else ""
    return head + "".join(f"{k} = {_toml_value(v)}\n" for k, v in fields.items())


@st.composite
def bad_files(draw):
    """(file name, text, field the error must name)."""
    fields = dict(BASE)
    kind = draw(st.sampled_from(["int-range", "int-type", "list-type", "layers", "unknown",
                                 "duplicate", "shadowed", "table", "nan", "syntax",
                                 "gains", "steps"]))
    fmt = draw(st.sampled_from(["toml", "json"]))
    name = f"c.{fmt}"
    if kind == "int-range":
        field = draw(st.sampled_from(sorted(INT_FIELDS)))
        lo, hi = INT_FIELDS[field]
        fields[field] = draw(st.one_of(st.integers(max_value=lo - 1),
                                       st.integers(min_value=hi + 1, max_value=2**62)))
    elif kind == "int-type":
        field = draw(st.sampled_from(sorted(INT_FIELDS) + ["clock_mhz"]))
        number = (int, float) if field == "clock_mhz" else int  # 5.0 MHz is a valid clock
        fields[field] = draw(JUNK.filter(lambda v: not isinstance(v, (number, dict))
                                         or isinstance(v, bool)))
    elif kind == "list-type":
        field = draw(st.sampled_from(["layers", "plane_gains", "adc_steps"]))
        fields[field] = draw(st.one_of(st.text(max_size=4), st.integers(), st.booleans(),
                                       st.lists(st.text(max_size=2), min_size=1)))
    elif kind == "layers":
        field = "layers"
        fields[field] = draw(st.one_of(
            st.lists(st.integers(1, 99), max_size=1),
            st.lists(st.integers(max_value=0), min_size=2, max_size=4),
            st.lists(st.integers(min_value=65537), min_size=2, max_size=3),
            st.tuples(st.integers(1, 64), st.just(1)).map(list)))
    elif kind == "unknown":
        field = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
                     .filter(lambda k: k not in FIELDS | {"sbnn", "train"}))
        fields[field] = draw(st.integers(0, 9))
    elif kind in ("duplicate", "shadowed", "table", "nan"):
        field = {"duplicate": "--config", "nan": "--config"}.get(kind)
        key = draw(st.sampled_from(sorted(BASE)))
        if kind == "duplicate":
            body = json.dumps(fields)[1:-1]
            text = (f'{{{body}, "{key}": {json.dumps(BASE[key])}}}' if fmt == "json"
                    else _toml(fields, None) + f"{key} = {_toml_value(BASE[key])}\n")
        elif kind == "shadowed":
            field = key
            text = (json.dumps({key: BASE[key], "sbnn": fields}) if fmt == "json"
                    else f"{key} = {_toml_value(BASE[key])}\n" + _toml(fields))
        elif kind == "table":
            field = draw(st.sampled_from(["sbnnn", "design", "Sbnn", "trainer", "variation"]))
            text = (json.dumps({"sbnn": fields, field: {"a": 1}}) if fmt == "json"
                    else _toml(fields) + f"[{field}]\na = 1\n")
        else:  # NaN / infinity: JSON must refuse them at parse time; TOML ranges refuse them
            field = "--config" if fmt == "json" else "clock_mhz"
            const = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
            text = (json.dumps(fields)[:-1] + f', "clock_mhz": {const}}}' if fmt == "json"
                    else _toml(fields | {"clock_mhz": float(const.lower().replace(
                        "infinity", "inf"))}))
        return name, text, field
    elif kind == "syntax":
        text = json.dumps(fields) if fmt == "json" else _toml(fields)
        cut = draw(st.integers(1, len(text) - 2))
        # JSON cut anywhere is incomplete; TOML gets a line that is never valid TOML.
        text = text[:cut] if fmt == "json" else text[:cut] + "\n= = ]\n"
        return name, text, "--config"
    elif kind == "gains":
        field = "plane_gains"
        fields[field] = draw(st.one_of(st.lists(st.integers(1, 7), max_size=1),
                                       st.lists(st.integers(1, 7), min_size=3, max_size=5),
                                       st.lists(st.integers(max_value=0), min_size=2,
                                                max_size=2),
                                       st.lists(st.integers(min_value=8), min_size=2,
                                                max_size=2)))
    else:
        field = "adc_steps"
        fields[field] = draw(st.one_of(
            st.lists(st.sampled_from([1, 2, 4]), min_size=1, max_size=1),
            st.lists(st.integers(3, 1000).filter(lambda s: s & (s - 1)), min_size=2,
                     max_size=2),
            st.lists(st.integers(max_value=0), min_size=2, max_size=2)))
    text = json.dumps(fields) if fmt == "json" else _toml(fields)
    return name, text, field


def _run(tmp: Path, name: str, text: str, capsys) -> tuple[int, str]:
    cfg = tmp / name
    cfg.write_text(text)
    status = main(["gen", "--config", str(cfg), "--out", str(tmp / "out")])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert sorted(p.name for p in tmp.iterdir()) == [name]  # nothing written
    return status, err


@FUZZ
@given(case=bad_files())
def test_malformed_config_files(case, capsys):
    name, text, field = case
    with tempfile.TemporaryDirectory() as tmp:
        status, err = _run(Path(tmp), name, text, capsys)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1, (text, err)
    assert lines[0].startswith(f"sbnn: error: config field '{field}'"), (text, err)


@settings(max_examples=30, deadline=None, database=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_configs_are_valid_and_bounded(seed):
    cfg = random_config(seed)
    assert SbnnConfig.from_dict(cfg.to_dict()) == cfg  # the validator accepts it
    assert cfg.active_rows * cfg.macro_cols <= MAX_MACRO_WORD


def test_random_configs_cover_the_valid_space():
    """The equivalence run draws coprime sizes, wide lanes, many columns and many rows
    driven at once, K up to 7 (issue 19: it never drew the configs that broke)."""
    cfgs = [random_config(s) for s in range(300)]
    coprime = [c for c in cfgs if math.gcd(c.active_rows, c.neurons_per_tile) == 1
               and math.gcd(c.active_rows, c.input_lanes) == 1 and c.active_rows > 2]
    assert len(coprime) > 20
    # configs the old lcm(active_rows, neurons_per_tile, lanes) buffer sizing could not build
    assert sum(math.lcm(c.active_rows, c.neurons_per_tile, c.input_lanes) * c.x_bits
               > 1 << 16 for c in cfgs) > 5
    assert max(c.input_lanes for c in cfgs) > 200
    assert max(c.macro_cols for c in cfgs) > 500
    assert max(c.active_rows for c in cfgs) > 500
    assert max(c.num_supports for c in cfgs) == 7
    assert max(c.macro_latency for c in cfgs) > 32


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_valid_file_still_loads(tmp_path, fmt):
    """The fuzzer's base design is valid in both formats (so each defect is the cause)."""
    from sbnn.config import load_config

    path = tmp_path / f"c.{fmt}"
    path.write_text(json.dumps({"sbnn": BASE}) if fmt == "json" else _toml(BASE))
    assert load_config(path) == SbnnConfig.from_dict(BASE)


ANY = st.one_of(st.integers(-5, 70000), st.none(), JUNK)


def _mostly(strategy):
    """The strategy three times in four, else anything (junk or out of range)."""
    return st.integers(0, 3).flatmap(lambda i: strategy if i else ANY)


@st.composite
def any_fields(draw):
    """Field values anywhere in (and a little past) their ranges, or junk."""
    k = draw(st.integers(0, 7))
    widths = st.tuples(st.lists(st.integers(1, 3000), min_size=1, max_size=3),
                       st.integers(2, 100)).map(lambda t: [*t[0], t[1]])
    fields = {
        "layers": draw(_mostly(widths)),
        "num_supports": k,
        "active_rows": draw(_mostly(st.integers(1, 1024))),
        "macro_cols": draw(_mostly(st.integers(k + 1, 1024))),
        "dac_bits": draw(st.integers(0, 9)), "gain_bits": draw(st.integers(0, 9)),
        "adc_bits": draw(st.integers(1, 17)), "macro_latency": draw(st.integers(1, 65)),
        "input_lanes": draw(_mostly(st.integers(1, 256))),
        "plane_gains": draw(st.one_of(st.none(), st.lists(st.integers(0, 300), min_size=k + 1,
                                                          max_size=k + 1), ANY)),
        "adc_steps": draw(st.one_of(st.none(), st.lists(st.sampled_from(
            [1, 2, 64, 4096, 1 << 16, 1 << 17]), min_size=1, max_size=3), ANY)),
    }
    if isinstance(fields["active_rows"], int) and fields["active_rows"] > 0:
        fields["macro_rows"] = fields["active_rows"] * ((1 << 20) // fields["active_rows"])
    return fields


@settings(max_examples=100, deadline=None, database=None)
@given(fields=any_fields())
def test_any_field_values_give_a_valid_config_or_a_field_error(fields):
    """Every combination either validates, round-trips through its JSON snapshot (model
    files embed it) and fits the generated RTL's widest wire, or is refused with one line
    naming a field; never another exception."""
    from sbnn.config import MAX_WIRE_BITS, ConfigError

    try:
        cfg = SbnnConfig(**fields)
    except ConfigError as exc:
        assert exc.field_name in FIELDS and "\n" not in str(exc)
        event(f"refused: {exc.field_name}")
        return
    event("valid")
    assert SbnnConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert max(cfg.pixel_buffer_rows, cfg.hidden_buffer_rows) * cfg.x_bits <= MAX_WIRE_BITS
    assert cfg.active_rows * cfg.macro_cols <= MAX_WIRE_BITS
