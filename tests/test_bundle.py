"""Tapeout bundle: contents, determinism, constraints, macro views, flow config, lint, synthesis."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.gen import bundle as bundle_mod
from sbnn.gen.bundle import BUNDLE_FILES, IMAGE_FILES, verilog_ports, write_bundle
from sbnn.gen.lint import VERILATOR_WAIVERS, VERILATOR_WALL_WAIVERS, lint
from sbnn.gen.synth import SynthError, run_yosys, synthesize
from sbnn.gen.verilog import CONTROLLER_TOP, SIM_TOP
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.top import MACRO_MODULE, macro_port_list

# Small enough to convert in about a second; a clock other than the default so the SDC test
# can tell the config's clock from a constant.
CFG = SbnnConfig(layers=(20, 9, 4), active_rows=8, macro_cols=6, macro_rows=256,
                 num_supports=2, input_lanes=8, adc_bits=6, clock_mhz=125.0)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.npz"
    return QuantizedModel.random(CFG, np.random.default_rng(5)).save(path)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, model_path):
    out = tmp_path_factory.mktemp("bundle") / "b"
    files = write_bundle(CFG, out, QuantizedModel.load(model_path, CFG))
    return out, files


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bundle_has_every_file(bundle):
    out, files = bundle
    assert set(files) == set(BUNDLE_FILES) | set(IMAGE_FILES)
    assert all(p.is_file() and p.stat().st_size for p in files.values())
    controller = files["controller"].read_text()
    assert f"module {CONTROLLER_TOP}(" in controller and "module top(" not in controller
    assert f"{MACRO_MODULE} macro (" in controller
    assert "(* blackbox *)" in files["macro_stub"].read_text()
    for role in ("macro_lef", "macro_lib"):
        assert "PLACEHOLDER" in files[role].read_text()
    man = json.loads(files["manifest"].read_text())
    assert man["config"] == CFG.to_dict() and man["bundle"]["image"]
    assert all((out / rel).is_file() for rel in man["bundle"]["files"].values())
    assert (out / man["tops"][CONTROLLER_TOP]["file"]).is_file()
    assert files["program"].read_text().startswith("WEIGHT_ROW 0x0 ")


def test_manifest_says_how_thresholds_are_laid_out_per_pass(bundle):
    out, files = bundle
    man = json.loads(files["manifest"].read_text())
    layout = man["image_layout"]["thresholds"]
    words = CFG.planes * CFG.total_col_blocks  # one word per pass and column block
    lines = files["thresholds"].read_text().split()
    assert layout["hex_words"] == words == len(lines)
    memory = man["memories"]["thresholds"]  # the store the words fill, and its cost
    assert memory["words"] == words and memory["word_bits"] == 2 * CFG.threshold_bits
    assert memory["bits"] == words * CFG.neurons_per_tile * CFG.threshold_bits
    # 3 passes, 7 column blocks, 2 neurons per tile: 1 neuron bit, 3 block bits, 2 pass bits
    assert (CFG.planes, CFG.total_col_blocks, CFG.neurons_per_tile) == (3, 7, 2)
    assert layout["prog_addr_fields"] == {"neuron": [0, 1], "col_block": [1, 3], "pass": [4, 2]}


def test_bundle_is_byte_identical_and_cached(bundle, model_path, tmp_path):
    out, files = bundle
    # A fresh process with another hash seed: set or dict order leaking into the output
    # (Amaranth's Verilog included) would show up here.
    cfg_path = CFG.write_snapshot(tmp_path / "cfg.json")
    other = tmp_path / "again"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    proc = subprocess.run([sys.executable, "-m", "sbnn.cli", "gen", "--config", str(cfg_path),
                           "--model", str(model_path), "--bundle", str(other)],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _tree(other) == _tree(out)
    # Rewriting an unchanged bundle touches nothing.
    stamps = {p: p.stat().st_mtime_ns for p in other.rglob("*") if p.is_file()}
    write_bundle(CFG, other, QuantizedModel.load(model_path, CFG))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # Without a model the image goes: a stale one would not match the bundle.
    write_bundle(CFG, other)
    assert not any((other / rel).exists() for rel in IMAGE_FILES.values())


def test_failed_generation_leaves_the_bundle_as_it_was(bundle, monkeypatch, tmp_path):
    out, _ = bundle
    copy = tmp_path / "copy"
    for rel, data in _tree(out).items():
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(data)
    before = _tree(copy)

    def broken(cfg):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle_mod, "lib_text", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_bundle(CFG.replace(clock_mhz=50.0), copy)
    assert _tree(copy) == before


def test_sdc_clock_and_io_delays_follow_config_and_ports(bundle):
    out, files = bundle
    sdc = files["sdc"].read_text()
    period = float(re.search(r"create_clock -name clk -period ([\d.]+) \[get_ports clk\]",
                             sdc).group(1))
    assert period == pytest.approx(1000.0 / CFG.clock_mhz)  # 8 ns at 125 MHz
    ports = verilog_ports(files["controller"].read_text(), CONTROLLER_TOP)
    constrained = {}
    for kind in ("input", "output"):
        line = re.search(rf"set_{kind}_delay .* \[get_ports {{(.*)}}\]", sdc).group(1)
        constrained[kind] = set(line.split())
    assert constrained["input"] == {n for n, d, _ in ports if d == "input"} - {"clk"}
    assert constrained["output"] == {n for n, d, _ in ports if d == "output"}
    # The ports read back from the Verilog are the component's signature plus clk and rst.
    man = json.loads(files["manifest"].read_text())
    signature = {p["name"] for p in man["tops"][CONTROLLER_TOP]["ports"]}
    assert {n for n, _, _ in ports} == signature | {"clk", "rst"}


def test_lef_and_lib_stubs_list_every_macro_port(bundle, tmp_path):
    _, files = bundle
    lef, lib = files["macro_lef"].read_text(), files["macro_lib"].read_text()
    ports = macro_port_list(CFG)
    lef_pins = dict(re.findall(r"^  PIN (\S+)\n    DIRECTION (\w+) ;", lef, re.M))
    want = {}
    for name, direction, width in ports:
        bits = [name] if width == 1 else [f"{name}[{i}]" for i in range(width)]
        want.update({b: direction.upper() for b in bits})
        assert re.search(rf"^ \*   {name} +{direction} +{width}$", lib, re.M)  # header
    assert lef_pins == want
    # Yosys reads the Liberty model into a black box with exactly the macro's ports.
    # (relative names: the YoWASP runtime mounts a scratch folder of its own over /tmp)
    (tmp_path / "m.lib").write_text(lib)
    proc = run_yosys(["-q", "-p", "read_liberty -lib m.lib; write_json lib.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    mod = json.loads((tmp_path / "lib.json").read_text())["modules"][MACRO_MODULE]
    got = {n: (p["direction"], len(p["bits"])) for n, p in mod["ports"].items()}
    assert got == {n: (d, w) for n, d, w in ports}


def test_flow_config_names_existing_files(bundle):
    out, files = bundle
    flow = json.loads(files["flow_config"].read_text())
    paths = [v for v in flow.values() if isinstance(v, str)] + \
        [x for v in flow.values() if isinstance(v, list) for x in v]
    named = [p.removeprefix("dir::") for p in paths if p.startswith("dir::")]
    assert len(named) >= 6 and all((out / p).is_file() for p in named)
    assert flow["DESIGN_NAME"] == CONTROLLER_TOP and flow["CLOCK_PORT"] == "clk"
    assert flow["CLOCK_PERIOD"] == pytest.approx(1000.0 / CFG.clock_mhz)
    assert {f"dir::{BUNDLE_FILES[r]}" for r in ("controller", "macro_stub", "sdc", "macro_lef",
                                                "macro_lib")} <= set(paths)


def test_wall_lint_clean_on_both_tops(bundle, verilator):
    _, files = bundle
    sim = lint([files["controller"], files["sim_top"]], SIM_TOP, wall=True)
    assert sim.returncode == 0, sim.stderr
    ctl = lint([files["controller"], files["macro_stub"]], CONTROLLER_TOP, wall=True)
    assert ctl.returncode == 0, ctl.stderr
    # -Wall waivers are extra: the default lint is unchanged. Each one is documented.
    assert not set(VERILATOR_WALL_WAIVERS) & set(VERILATOR_WAIVERS)
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for name, why in {**VERILATOR_WAIVERS, **VERILATOR_WALL_WAIVERS}.items():
        assert why and f"| {name} |" in doc


def test_synthesis_leaves_only_the_macro_unresolved(bundle):
    _, files = bundle
    res = synthesize([files["controller"], files["macro_stub"]], CONTROLLER_TOP)
    assert res.black_boxes == {MACRO_MODULE: 1}
    assert res.latches == 0 and 0 < res.memory_bits < res.flip_flops < res.cells
    assert not any(t.startswith("$") and not t.startswith("$_") and t != "$scopeinfo"
                   for t in res.cells_by_type)  # everything mapped to gates
    # Without the stub the macro is unresolved and the hierarchy check fails.
    with pytest.raises(SynthError, match=rf"{MACRO_MODULE}.*not part of the design"):
        synthesize([files["controller"]], CONTROLLER_TOP)


@pytest.mark.parametrize("extra, words", [
    (["--model", "OTHER"], "different config"),
    (["--out", "o"], "either --out"),
    (["--bundle", "FILE"], "not a folder"),
])
def test_cli_bundle_errors_one_line_nothing_written(extra, words, tmp_path, capsys,
                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg_path = CFG.write_snapshot(tmp_path / "cfg.json")
    other = QuantizedModel.random(CFG.replace(adc_bits=7), np.random.default_rng(3))
    other.save(tmp_path / "other.npz")
    (tmp_path / "file").write_text("x")
    extra = [{"OTHER": "other.npz", "FILE": "file"}.get(a, a) for a in extra]
    argv = ["gen", "--config", str(cfg_path), *extra]
    if "--bundle" not in argv:
        argv += ["--bundle", "b"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sbnn: error:") and err.count("\n") == 0 and words in err
    assert not (tmp_path / "b").exists() and not (tmp_path / "o").exists()


def test_cli_bundle_model_defaults(tmp_path, capsys, monkeypatch):
    seen = []
    monkeypatch.setattr(bundle_mod, "write_bundle",
                        lambda cfg, out, model: seen.append((cfg, model)) or {})
    assert main(["gen", "--bundle", str(tmp_path / "d")]) == 0
    assert seen[-1][0] == SbnnConfig() and seen[-1][1].config == SbnnConfig()
    cfg_path = CFG.write_snapshot(tmp_path / "cfg.json")
    assert main(["gen", "--config", str(cfg_path), "--bundle", str(tmp_path / "s")]) == 0
    assert seen[-1] == (CFG, None)
    assert "no hardware image" in capsys.readouterr().out
