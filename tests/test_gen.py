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
    model = QuantizedModel.random(cfg, np.random.default_rng(0), mask_keep=0.5, per_pass=True)
    img = build_image(model)
    a, nt = cfg.active_rows, cfg.neurons_per_tile
    assert img.thresholds.shape == (cfg.planes, cfg.total_col_blocks, nt)
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
                for p in range(cfg.planes):  # pass p's slot holds pass p's threshold
                    want = model.thresholds[layer][p, j] if j < m else 0
                    assert img.thresholds[p, cbg, i] == want
            cbg += 1


def test_program_sequence_and_image_file(tmp_path):
    model = QuantizedModel.random(SMALL, np.random.default_rng(1), per_pass=True)
    img = build_image(model)
    ops = img.program(budget=1)
    counts = {op: sum(1 for o, _, _ in ops if o == op) for op in ProgOp}
    assert counts[ProgOp.WEIGHT_ROW] == SMALL.total_tiles * SMALL.active_rows
    assert counts[ProgOp.THRESHOLD] == \
        SMALL.planes * SMALL.total_col_blocks * SMALL.neurons_per_tile
    assert counts[ProgOp.COL_MASK] == SMALL.total_col_blocks
    assert ops[-1] == (ProgOp.BUDGET, 0, 1)
    sz = Sizes(SMALL)
    assert all(addr < 1 << sz.addr_bits and data < 1 << sz.data_bits for _, addr, data in ops)
    back = HardwareImage.load(img.save(tmp_path / "image.npz"))
    np.testing.assert_array_equal(back.bitcells, img.bitcells)
    np.testing.assert_array_equal(back.thresholds, img.thresholds)
    # an image saved before the pass dimension (one (blocks, slots) row) loads as every pass's
    with np.load(tmp_path / "image.npz") as d:
        arrays = dict(d)
    arrays["thresholds"] = img.thresholds[1]
    np.savez(tmp_path / "old.npz", **arrays)
    old = HardwareImage.load(tmp_path / "old.npz")
    assert old.thresholds.shape == img.thresholds.shape
    assert all(np.array_equal(row, img.thresholds[1]) for row in old.thresholds)
    files = img.write_readmemh(tmp_path)
    lines = files[0].read_text().split()
    assert len(lines) == len(img.bitcells) and all(len(x) == 2 for x in lines)


def test_thresholds_are_programmed_and_exported_per_pass(tmp_path):
    """docs/architecture.md: THRESHOLD addr = (pass << cb_bits | col_block) << nt_bits |
    neuron; thresholds.hex has one word per (pass, column block), pass-major, neuron 0 low."""
    cfg, sz = SMALL, Sizes(SMALL)  # 3 passes, 2 neurons per tile, 7 column blocks
    assert (cfg.planes, cfg.neurons_per_tile, cfg.total_col_blocks) == (3, 2, 7)
    assert (sz.pass_bits, sz.cb_bits, sz.nt_bits) == (2, 3, 1)
    assert sz.threshold_addr(2, 5, 1) == 0b10_101_1
    model = QuantizedModel.random(cfg, np.random.default_rng(4), per_pass=True)
    img = build_image(model)
    tmask = (1 << cfg.threshold_bits) - 1
    got = {addr: data for op, addr, data in img.program() if op == ProgOp.THRESHOLD}
    # neuron 7 of layer 0 (9 neurons) is slot 1 of global column block 3
    for p in range(3):
        assert got[(p << 3 | 3) << 1 | 1] == int(model.thresholds[0][p, 7]) & tmask
        # neuron 2 of the output layer: slot 0 of its second block, global block 6
        assert got[(p << 3 | 6) << 1 | 0] == int(model.thresholds[1][p, 2]) & tmask
    assert len(got) == 3 * 7 * 2 and max(got) < 1 << sz.addr_bits
    hex_lines = (tmp_path / "thresholds.hex").read_text().split() if \
        img.write_readmemh(tmp_path) else []
    digits = -(-cfg.threshold_bits // 4)
    assert len(hex_lines) == 3 * 7 and all(len(x) == 2 * digits for x in hex_lines)
    line = hex_lines[2 * 7 + 3]  # pass 2, block 3: slot 1 in the high digits
    assert int(line[:digits], 16) == int(model.thresholds[0][2, 7]) & tmask
    assert int(line[digits:], 16) == int(model.thresholds[0][2, 6]) & tmask


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
    # the threshold store: a word per (pass, column block): 3 passes x 7 blocks, 2 neurons
    tb = SMALL.threshold_bits
    assert man["memories"]["thresholds"] == {
        "words": 21, "word_bits": 2 * tb, "bits": 42 * tb, "passes": 3, "col_blocks": 7,
        "neurons_per_word": 2, "bits_per_neuron": tb,
        "word_address": "pass * total_col_blocks + col_block"}
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
    # thresholds that differ between passes: gen takes them (one row per pass)
    model = QuantizedModel.random(SMALL, np.random.default_rng(3), per_pass=True)
    assert model.per_pass_thresholds
    model_path = model.save(tmp_path / "m.npz")
    out = tmp_path / "rtl"
    assert main(["gen", "--config", str(cfg_path), "--model", str(model_path),
                 "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"sbnn_sim_top.sv", "sbnn_controller.v", "sbnn_macro_stub.v", "manifest.json",
            "config.json", "bitcells.hex", "col_enables.hex", "thresholds.hex",
            "program.txt"} <= names
    assert (out / "program.txt").read_text().startswith("WEIGHT_ROW 0x0 ")
    lines = (out / "thresholds.hex").read_text().split()
    assert len(lines) == SMALL.planes * SMALL.total_col_blocks
    assert len(set(lines)) > SMALL.total_col_blocks  # the passes' rows differ


def test_one_row_model_image_repeats_the_row_for_every_pass(tmp_path):
    """A format-v1 model (one threshold row for every pass) gives the image it gave before
    the threshold store had a pass dimension: the same bitcells, column enables and
    per-block words, the words repeated once per pass."""
    per_pass = QuantizedModel.random(SMALL, np.random.default_rng(6), mask_keep=0.5)
    one_row = QuantizedModel(SMALL, per_pass.planes,
                             tuple(t[0] for t in per_pass.thresholds), per_pass.support_mask)
    assert not one_row.per_pass_thresholds
    img = build_image(one_row)
    for p in range(SMALL.planes):
        np.testing.assert_array_equal(img.thresholds[p], img.thresholds[0])
    lines = (tmp_path / "thresholds.hex").read_text().split() if \
        img.write_readmemh(tmp_path) else []
    cb = SMALL.total_col_blocks
    assert lines == lines[:cb] * SMALL.planes
    # pass 0's words are the single row's (neuron j of layer l at block, slot)
    tmask = (1 << SMALL.threshold_bits) - 1
    nt = SMALL.neurons_per_tile
    digits = -(-SMALL.threshold_bits // 4)
    for layer in range(SMALL.num_layers):
        for j, theta in enumerate(one_row.thresholds[layer][0]):
            word = lines[SMALL.tiling.global_col_block(layer, j // nt)]
            slot = word[len(word) - digits * (j % nt + 1):len(word) - digits * (j % nt)]
            assert int(slot, 16) == int(theta) & tmask


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
