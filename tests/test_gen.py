import json

import numpy as np
import pytest

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.gen.image import HardwareImage, build_image
from sbnn.gen.lint import VERILATOR_WAIVERS, lint
from sbnn.gen.verilog import CONTROLLER_TOP, SIM_TOP, emit_all, macro_stub
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import ProgOp, Sizes
from sbnn.rtl.top import macro_port_list

SMALL = SbnnConfig(layers=(20, 9, 4), active_rows=8, macro_cols=6, macro_rows=256,
                   num_supports=2, input_lanes=8, adc_bits=6)


def test_tiling_places_every_weight_bit():
    cfg = SMALL
    model = QuantizedModel.random(cfg, np.random.default_rng(0), mask_keep=0.5)
    img = build_image(model)
    a, nt = cfg.active_rows, cfg.neurons_per_tile
    tile = cbg = 0
    for layer in range(cfg.num_layers):
        n, m = cfg.layers[layer], cfg.layers[layer + 1]
        for cb in range(cfg.col_blocks(layer)):
            for rb in range(cfg.row_blocks(layer)):
                for r in range(a):
                    for i in range(nt):
                        for k in range(cfg.planes):
                            j, x = cb * nt + i, rb * a + r
                            bit = img.bitcells[tile * a + r, k * nt + i]
                            want = model.planes[layer][k, j, x] > 0 if j < m and x < n else 0
                            assert bit == want
                tile += 1
            for i in range(nt):
                j = cb * nt + i
                assert img.col_enables[cbg, i] == (j < m)
                for k in range(1, cfg.planes):
                    want = j < m and model.support_mask[layer][j, k - 1]
                    assert img.col_enables[cbg, k * nt + i] == want
                if j < m:
                    assert img.thresholds[cbg, i] == model.thresholds[layer][0, j]
            cbg += 1


def test_program_sequence_and_image_file(tmp_path):
    model = QuantizedModel.random(SMALL, np.random.default_rng(1))
    img = build_image(model)
    ops = img.program(budget=1)
    counts = {op: sum(1 for o, _, _ in ops if o == op) for op in ProgOp}
    assert counts[ProgOp.WEIGHT_ROW] == SMALL.total_tiles * SMALL.active_rows
    assert counts[ProgOp.THRESHOLD] == SMALL.total_col_blocks * SMALL.neurons_per_tile
    assert counts[ProgOp.COL_MASK] == SMALL.total_col_blocks
    assert ops[-1] == (ProgOp.BUDGET, 0, 1)
    sz = Sizes(SMALL)
    assert all(addr < 1 << sz.addr_bits and data < 1 << sz.data_bits for _, addr, data in ops)
    back = HardwareImage.load(img.save(tmp_path / "image.npz"))
    np.testing.assert_array_equal(back.bitcells, img.bitcells)
    files = img.write_readmemh(tmp_path)
    lines = files[0].read_text().split()
    assert len(lines) == len(img.bitcells) and all(len(x) == 2 for x in lines)


def test_emit_writes_tops_stub_manifest_and_is_cached(tmp_path):
    files = emit_all(SMALL, tmp_path)
    text = files["sim_top"].read_text()
    assert f"module {SIM_TOP} (" in text and "module sbnn_macro (" in text
    assert files["sim_top"].name == "sbnn_sim_top.sv"
    assert f"module {CONTROLLER_TOP}(" in files["controller"].read_text()
    assert "sbnn_macro macro" in files["controller"].read_text()
    man = json.loads(files["manifest"].read_text())
    assert man["config"] == SMALL.to_dict()
    assert [p["name"] for p in man["macro"]["ports"]] == [n for n, _, _ in
                                                          macro_port_list(SMALL)]
    ports = {p["name"] for p in man["tops"][SIM_TOP]["ports"]}
    assert {"prog__payload", "pixels__valid", "result__payload", "probe__adc"} <= ports
    assert json.loads(files["config"].read_text()) == SMALL.to_dict()
    stamp = {k: p.stat().st_mtime_ns for k, p in files.items()}
    files2 = emit_all(SMALL, tmp_path)
    assert {k: p.stat().st_mtime_ns for k, p in files2.items()} == stamp


def test_stub_declares_every_macro_port():
    stub = macro_stub(SMALL)
    for name, direction, width in macro_port_list(SMALL):
        decl = f"{direction} wire [{width - 1}:0] {name}" if width > 1 else \
            f"{direction} wire {name}"
        assert decl in stub


@pytest.mark.parametrize("cfg", [SMALL, SMALL.replace(num_supports=1, plane_gains=None),
                                 SbnnConfig(layers=(10, 5), active_rows=4, macro_cols=9,
                                            macro_rows=32, num_supports=2, input_lanes=3)],
                         ids=["K2", "K1", "single-layer"])
def test_generated_verilog_lints_clean(tmp_path, verilator, cfg):
    files = emit_all(cfg, tmp_path)
    sim = lint([files["controller"], files["sim_top"]], SIM_TOP)
    assert sim.returncode == 0, sim.stderr
    ctl = lint([files["controller"], files["macro_stub"]], CONTROLLER_TOP)
    assert ctl.returncode == 0, ctl.stderr
    assert set(VERILATOR_WAIVERS) == {"WIDTHEXPAND", "WIDTHTRUNC", "CASEINCOMPLETE"}


def test_cli_gen_with_model_writes_image(tmp_path, capsys):
    cfg_path = SMALL.write_snapshot(tmp_path / "cfg.json")
    model_path = QuantizedModel.random(SMALL, np.random.default_rng(3)).save(tmp_path / "m.npz")
    out = tmp_path / "rtl"
    assert main(["gen", "--config", str(cfg_path), "--model", str(model_path),
                 "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"sbnn_sim_top.sv", "sbnn_controller.v", "sbnn_macro_stub.v", "manifest.json",
            "config.json", "bitcells.hex", "col_enables.hex", "thresholds.hex",
            "program.txt"} <= names
    assert (out / "program.txt").read_text().startswith("WEIGHT_ROW 0x0 ")


def test_cli_gen_rejects_model_of_other_config(tmp_path, capsys):
    cfg_path = SMALL.write_snapshot(tmp_path / "cfg.json")
    other = SMALL.replace(adc_bits=7)
    model_path = QuantizedModel.random(other, np.random.default_rng(3)).save(tmp_path / "m.npz")
    out = tmp_path / "rtl"
    assert main(["gen", "--config", str(cfg_path), "--model", str(model_path),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "adc_bits" in err
    assert not out.exists()
