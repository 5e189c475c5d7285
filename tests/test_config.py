import json

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
