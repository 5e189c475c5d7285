import json
import math

import pytest

from sbnn.cli import main
from sbnn.config import ConfigError, SbnnConfig, load_config


def test_default_is_valid_and_derives_sizes():
    cfg = SbnnConfig()
    assert cfg.planes == cfg.num_supports + 1
    assert cfg.neurons_per_tile == cfg.macro_cols // cfg.planes
    assert cfg.plane_gains == tuple(1 << (cfg.num_supports - k) for k in range(cfg.planes))
    assert len(cfg.adc_steps) == cfg.num_layers
    assert cfg.total_tiles * cfg.active_rows <= cfg.macro_rows


@pytest.mark.parametrize("changes, field, words", [
    ({"layers": (784,)}, "layers", "at least 2"),
    ({"layers": (784, 0, 10)}, "layers", "entry 1"),
    ({"layers": (784, 10, 1)}, "layers", "2 classes"),
    ({"num_supports": -1}, "num_supports", "0..7"),
    ({"num_supports": 40}, "num_supports", "0..7"),
    ({"macro_cols": 2, "num_supports": 3, "plane_gains": (8, 4, 2, 1), "gain_bits": 4},
     "num_supports", "columns"),
    ({"macro_rows": 100}, "macro_rows", "multiple of active_rows"),
    ({"macro_rows": 128}, "macro_rows", "tiles"),
    ({"dac_bits": 0}, "dac_bits", "1..8"),
    ({"dac_bits": 9}, "dac_bits", "1..8"),
    ({"adc_bits": 1}, "adc_bits", "2..16"),
    ({"plane_gains": (2,)}, "plane_gains", "2 integers"),
    ({"plane_gains": (9, 1)}, "plane_gains", "1..7"),
    ({"adc_steps": (3, 1)}, "adc_steps", "power of two"),
    ({"adc_steps": (4,)}, "adc_steps", "one ADC step per weight layer"),
    ({"macro_latency": 1}, "macro_latency", "2..64"),
    ({"clock_mhz": 0}, "clock_mhz", "(0, 5000]"),
    ({"input_lanes": 0}, "input_lanes", "1..256"),
    ({"active_rows": 2.5}, "active_rows", "integer"),
    ({"num_supports": 3, "gain_bits": 3}, "gain_bits", "gain_bits > K"),
])
def test_invalid_fields_name_field_and_rule(changes, field, words):
    with pytest.raises(ConfigError) as err:
        SbnnConfig(**changes)
    assert err.value.field_name == field
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_field_lists_allowed():
    with pytest.raises(ConfigError, match="unknown field.*allowed fields are"):
        SbnnConfig.from_dict({"layerz": [1, 2]})


def test_json_and_toml_round_trip(tmp_path):
    cfg = SbnnConfig(layers=(64, 32, 10), num_supports=2, macro_rows=4096, adc_bits=6)
    j = tmp_path / "c.json"
    cfg.write_snapshot(j)
    assert load_config(j) == cfg
    t = tmp_path / "c.toml"
    t.write_text("[sbnn]\nlayers = [64, 32, 10]\nnum_supports = 2\nmacro_rows = 4096\n"
                 "adc_bits = 6\n")
    assert load_config(t) == cfg
    assert json.loads(cfg.to_json())["layers"] == [64, 32, 10]


def test_unparsable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("layers = [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.json")


@pytest.mark.parametrize("command", ["gen", "lint", "train"])
def test_cli_bad_config_is_one_line_exit_2(tmp_path, capsys, command):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"adc_bits": 40}))
    out = tmp_path / "out"
    assert main([command, "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("sbnn: error: config field 'adc_bits'")
    assert not out.exists()  # nothing half-written


@pytest.mark.parametrize("changes, field", [
    ({"plane_gains": ()}, "plane_gains"),          # was an IndexError deriving adc_steps
    ({"plane_gains": (0, 0)}, "plane_gains"),      # was a math domain error
    ({"plane_gains": "21"}, "plane_gains"),
    ({"dac_bits": "4"}, "dac_bits"),               # was a TypeError deriving adc_steps
    ({"adc_bits": None}, "adc_bits"),
    ({"active_rows": None}, "active_rows"),
    ({"num_supports": "1"}, "num_supports"),       # was a TypeError deriving plane_gains
    ({"layers": (784, "10")}, "layers"),
    # a derived default obeys the range of a given value (the snapshot must load again)
    ({"num_supports": 2, "gain_bits": 8, "plane_gains": (255, 1, 1), "adc_bits": 2,
      "active_rows": 1024, "macro_rows": 4096}, "adc_steps"),
])
def test_fields_are_checked_before_defaults_are_derived(changes, field):
    with pytest.raises(ConfigError) as err:
        SbnnConfig(**changes)
    assert err.value.field_name == field and "\n" not in str(err.value)


def test_activation_buffers_grow_with_the_design_not_an_lcm():
    """Issue 19: buffers were sized by lcm(active_rows, neurons_per_tile, input_lanes)."""
    default = SbnnConfig()
    assert (default.pixel_buffer_rows, default.hidden_buffer_rows) == (832, 256)  # unchanged
    coprime = SbnnConfig(layers=(784, 10), active_rows=13, macro_cols=34, input_lanes=251,
                         macro_rows=13 * 122)
    assert math.lcm(13, coprime.neurons_per_tile, 251) * coprime.x_bits > 1 << 16
    assert coprime.pixel_buffer_rows == 4 * 251  # 4 beats of 251 lanes cover 784 pixels
    assert coprime.pixel_buffer_rows * coprime.x_bits <= 1 << 16


def test_coprime_config_generates():
    """A config the validator accepts converts: the old sizing made a 277,355-bit wire here."""
    from amaranth.back import rtlil

    from sbnn.rtl.controller import Controller

    cfg = SbnnConfig(layers=(784, 10), active_rows=13, macro_cols=34, input_lanes=251,
                     macro_rows=13 * 122, adc_bits=6)
    text = rtlil.convert(Controller(cfg))
    assert f"wire width {cfg.pixel_buffer_rows * cfg.x_bits} " in text


@pytest.mark.parametrize("changes, field, words", [
    ({"layers": (65536, 10), "macro_rows": 65536}, "layers", "activation buffer"),
    ({"layers": (784, 20000, 10), "active_rows": 1024, "macro_cols": 64,
      "macro_rows": 1 << 20}, "layers", "hidden layer"),
    ({"active_rows": 1024, "macro_cols": 128, "macro_rows": 8192}, "macro_cols",
     "bitcell word"),
])
def test_configs_the_rtl_cannot_hold_are_refused(changes, field, words):
    with pytest.raises(ConfigError) as err:
        SbnnConfig(**changes)
    assert err.value.field_name == field and words in str(err.value)
    assert "65536 bits" in str(err.value)


@pytest.mark.parametrize("text, fmt, words", [
    ('{"layers": [64, 10], "layers": [64, 10]}', "json", "duplicate key 'layers'"),
    ('{"train": {"lr": 0.1}, "train": {"lr": 0.2}}', "json", "duplicate key 'train'"),
    ("layers = [64, 10]\nlayers = [64, 10]\n", "toml", "cannot parse"),
    ("num_supports = 0\n[sbnn]\nlayers = [64, 10]\n", "toml", "'num_supports': given at top"),
    ("[sbnn]\n[extra]\n", "toml", "unknown table [extra]"),
    ("[layers]\n", "toml", "unknown table [layers]"),
    ("sbnn = 3\n", "toml", "'sbnn': in"),
    ('{"clock_mhz": Infinity}', "json", "Infinity is not a number"),
])
def test_strict_config_files(tmp_path, text, fmt, words):
    path = tmp_path / f"c.{fmt}"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_empty_file_is_the_default_design_and_train_table_is_read(tmp_path):
    from sbnn.config import load_train_table

    (tmp_path / "e.toml").write_text("# nothing set\n")
    (tmp_path / "e.json").write_text("{}")
    assert load_config(tmp_path / "e.toml") == load_config(tmp_path / "e.json") == SbnnConfig()
    t = tmp_path / "t.toml"
    t.write_text("[sbnn]\nnum_supports = 0\n[train]\nlr = 0.01\n")
    assert load_config(t) == SbnnConfig(num_supports=0)
    assert load_train_table(t) == {"lr": 0.01}
    top = tmp_path / "top.toml"
    top.write_text("num_supports = 0\n[train]\nlr = 0.01\n")  # fields at top level + recipe
    assert load_config(top) == SbnnConfig(num_supports=0) and load_train_table(top)["lr"] == 0.01
    assert load_train_table(None) == {}
    (tmp_path / "bad.toml").write_text("[train\n")
    with pytest.raises(ConfigError, match="'--config': cannot parse"):
        load_train_table(tmp_path / "bad.toml")


def test_default_snapshot_text_is_unchanged():
    """Every model file and cache key holds this text: its bytes must never drift."""
    assert SbnnConfig().to_json() == (
        '{\n  "active_rows": 64,\n  "adc_bits": 8,\n  "adc_steps": [\n    4,\n    1\n  ],\n'
        '  "clock_mhz": 100.0,\n  "dac_bits": 4,\n  "gain_bits": 3,\n  "input_lanes": 16,\n'
        '  "layers": [\n    784,\n    256,\n    10\n  ],\n  "macro_cols": 32,\n'
        '  "macro_latency": 4,\n  "macro_rows": 16384,\n  "num_supports": 1,\n'
        '  "plane_gains": [\n    2,\n    1\n  ]\n}\n')


def test_configs_are_frozen_hashable_and_equal_by_value():
    a = SbnnConfig(layers=[64, 32, 10], macro_rows=4096)
    b = SbnnConfig(layers=(64, 32, 10), macro_rows=4096, plane_gains=(2, 1))
    assert a == b and hash(a) == hash(b) and {a: "x"}[b] == "x"
    assert a != SbnnConfig(layers=(64, 32, 10), macro_rows=8192)
    with pytest.raises(ValueError):
        a.adc_bits = 6
    assert SbnnConfig(clock_mhz=50).clock_mhz == 50.0  # an integer clock is a number
    assert isinstance(SbnnConfig(clock_mhz=50).clock_mhz, float)


def test_replace_keeps_derived_fields_unless_changed():
    small = SbnnConfig(layers=(64, 32, 10), macro_rows=4096)
    assert small.replace(adc_bits=6).adc_steps == small.adc_steps  # as dataclasses.replace
    assert small.replace(adc_bits=6, adc_steps=None).adc_steps != small.adc_steps
    with pytest.raises(ConfigError, match="'adc_bits': must be an integer in 2..16, got 1"):
        small.replace(adc_bits=1)


#: The integer ranges a config has always accepted (the schema must state the same).
INT_RANGES = {
    "num_supports": (0, 7), "active_rows": (1, 1024), "macro_cols": (1, 1024),
    "macro_rows": (1, 1 << 20), "dac_bits": (1, 8), "gain_bits": (1, 8),
    "adc_bits": (2, 16), "macro_latency": (2, 64), "input_lanes": (1, 256),
}


def test_committed_schemas_are_current():
    from sbnn.schema import SCHEMA_DIR, schema_texts

    for name, text in schema_texts().items():
        committed = SCHEMA_DIR / name
        assert committed.is_file(), f"{committed} is missing: run python -m sbnn.schema"
        assert committed.read_text() == text, f"{committed} is stale: run python -m sbnn.schema"


def test_config_schema_carries_the_ranges_and_the_file_layout():
    from sbnn.schema import SCHEMA_DIR

    schema = json.loads((SCHEMA_DIR / "sbnn-config.schema.json").read_text())
    props = schema["properties"]
    for name, (lo, hi) in INT_RANGES.items():
        assert (props[name]["type"], props[name]["minimum"], props[name]["maximum"]) == \
            ("integer", lo, hi), name
        assert props[name]["description"]
    assert props["clock_mhz"]["exclusiveMinimum"] == 0 and props["clock_mhz"]["maximum"] == 5000
    assert props["layers"]["minItems"] == 2 and props["layers"]["items"]["maximum"] == 65536
    assert {"sbnn", "train", "$schema"} <= set(props) and schema["additionalProperties"] is False
    assert schema["$defs"]["SbnnConfig"]["additionalProperties"] is False
    variation = json.loads((SCHEMA_DIR / "sbnn-variation.schema.json").read_text())
    assert variation["properties"]["frac_bits"]["maximum"] == 12
    assert "variation" in variation["properties"]


def test_files_that_name_their_schema_load(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"$schema": "../docs/schema/sbnn-config.schema.json",
                             "num_supports": 0}))
    assert load_config(j) == SbnnConfig(num_supports=0)
    t = tmp_path / "c.toml"
    t.write_text("#:schema ../docs/schema/sbnn-config.schema.json\n[sbnn]\nnum_supports = 0\n")
    assert load_config(t) == SbnnConfig(num_supports=0)
    j.write_text(json.dumps({"$schema": 3}))  # only a string names a schema
    with pytest.raises(ConfigError, match="'\\$schema': unknown field"):
        load_config(j)
