"""SRAM macros for the big stores (``sram_min_bits``, rtl/sram.py): config, Verilog, stubs,
behavioral models, lint, simulation (Amaranth and Verilator) and synthesis.

Expected values come from the spec (docs/architecture.md, "SRAM macros"): a store with a
registered read (thresholds: planes * total_col_blocks words of neurons_per_tile *
threshold_bits; the first layer's kept sums: col_blocks(0) words of neurons_per_tile *
acc_bits; depth at least 2; the image's row codes: row_blocks(0) words of active_rows *
x_bits, active_rows / input_lanes lanes, where a beat falls in one row block, the first
layer has two row blocks or more and there is one macro) of at least ``sram_min_bits`` bits
is a macro ``sbnn_sram_<store>_<words>x<bits>``; the column-enable store never is.
"""

import json
import shutil
import subprocess

import numpy as np
import pytest
from amaranth.sim import Simulator
from rtl_harness import random_images, run_pysim
from test_rtl import matches_golden

from sbnn.config import ConfigError, SbnnConfig
from sbnn.gen.image import build_image
from sbnn.gen.lint import lint
from sbnn.gen.verilog import CONTROLLER_TOP, SIM_TOP, emit_all, macro_stub, top_verilog
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.sram import SramMacro, SramSpec
from sbnn.rtl.stores import pixel_sram_fits, sram_macros

#: 20-9-4, K=2: thresholds 3 passes x 7 column blocks = 21 words of 2 x 12 bits (504 bits);
#: first-layer sums 5 blocks of 2 x 11 bits (110 bits); column enables 7 x 6 (42 bits).
SMALL = SbnnConfig(layers=(20, 9, 4), active_rows=8, macro_cols=6, macro_rows=256,
                   num_supports=2, input_lanes=8, adc_bits=6)
THRESHOLDS = "sbnn_sram_thresholds_21x24"
SUMS = "sbnn_sram_first_layer_sums_5x22"
#: the image: ceil(20 / 8) = 3 row blocks of 8 rows x 5-bit codes (120 bits), one beat each
PIXELS = "sbnn_sram_pixels_3x40"


def _sizes(cfg):
    """(threshold bits, first-layer-sum bits) from the spec's formulas."""
    nt = cfg.neurons_per_tile
    thr = max(2, cfg.planes * cfg.total_col_blocks) * nt * cfg.threshold_bits
    acc = max(2, cfg.col_blocks(0)) * nt * cfg.acc_bits
    return thr, acc


def _pixel_bits(cfg):
    """The image's row codes: whole row blocks of ``active_rows`` codes of ``x_bits``."""
    return -(-cfg.layers[0] // cfg.active_rows) * cfg.active_rows * (cfg.dac_bits + 1)


def test_small_config_sizes_are_the_spec_ones():
    assert (SMALL.neurons_per_tile, SMALL.threshold_bits, SMALL.acc_bits) == (2, 12, 11)
    assert _sizes(SMALL) == (504, 110)
    assert _pixel_bits(SMALL) == 120


@pytest.mark.parametrize("value", [0, -1, "8k", 1.5, True, 1 << 31])
def test_sram_min_bits_is_validated_by_name(value):
    with pytest.raises(ConfigError, match="sram_min_bits"):
        SbnnConfig(sram_min_bits=value)


def test_sram_min_bits_defaults_to_none_and_is_in_every_snapshot_that_sets_it(tmp_path):
    """Absent reads as None, and None is left out (earlier snapshots keep their bytes)."""
    assert SbnnConfig().sram_min_bits is None
    assert "sram_min_bits" not in json.loads(SbnnConfig().to_json())
    assert SbnnConfig.from_dict({"sram_min_bits": None}) == SbnnConfig()
    cfg = SMALL.replace(sram_min_bits=100)
    assert json.loads(cfg.to_json())["sram_min_bits"] == 100
    files = emit_all(cfg, tmp_path)
    assert json.loads(files["config"].read_text())["sram_min_bits"] == 100
    assert json.loads(files["manifest"].read_text())["config"]["sram_min_bits"] == 100
    assert SbnnConfig.load_file(files["config"], "--config", "sbnn") == cfg


def test_no_store_large_enough_gives_the_register_verilog_byte_for_byte():
    """None, and a threshold above every store, give the same text: no macro, no stub."""
    big = SMALL.replace(sram_min_bits=505)  # one bit more than the threshold store
    for top in (CONTROLLER_TOP, SIM_TOP):
        text = top_verilog(SMALL, top)
        assert top_verilog(big, top) == text
        assert "sbnn_sram" not in text
    assert macro_stub(big) == macro_stub(SMALL)
    assert "sbnn_sram" not in macro_stub(SMALL)


@pytest.mark.parametrize("min_bits, macros", [(504, [THRESHOLDS]), (120, [THRESHOLDS, PIXELS]),
                                              (110, [THRESHOLDS, SUMS, PIXELS]),
                                              (1, [THRESHOLDS, SUMS, PIXELS])])
def test_big_stores_become_macro_instances_with_stub_and_model(tmp_path, min_bits, macros):
    cfg = SMALL.replace(sram_min_bits=min_bits)
    files = emit_all(cfg, tmp_path)
    ctl = files["controller"].read_text()
    stub = files["macro_stub"].read_text()
    sim = files["sim_top"].read_text()
    for module in (THRESHOLDS, SUMS, PIXELS):
        used = module in macros
        # instantiated, never defined, in the controller
        assert (f"\n  {module} " in ctl) == used
        assert f"module {module}" not in ctl
        # a ports-only black box in the stub file, the behavioral model in the sim top
        assert (f"(* blackbox *)\nmodule {module} (" in stub) == used
        assert (f"module {module} (" in sim) == used
    # the column-enable store (combinational read) stays registers, whatever the threshold
    assert "sbnn_sram_column" not in ctl
    man = json.loads(files["manifest"].read_text())
    assert [s["module"] for s in man["sram_macros"]] == macros
    assert man["tops"][CONTROLLER_TOP]["black_boxes"] == ["sbnn_macro", *macros]
    entry = {s["module"]: s for s in man["sram_macros"]}
    want = {"words": 21, "word_bits": 24, "bits": 504, "write_lanes": 2, "lane_bits": 12}
    assert {k: entry[THRESHOLDS][k] for k in want} == want
    if SUMS in macros:
        assert entry[SUMS]["bits"] == 110 and entry[SUMS]["write_lanes"] == 1
    if PIXELS in macros:
        assert (entry[PIXELS]["bits"], entry[PIXELS]["write_lanes"]) == (120, 1)
    stub_ports = {p["name"]: (p["direction"], p["width"]) for p in entry[THRESHOLDS]["ports"]}
    assert stub_ports == {"clk": ("input", 1), "we": ("input", 2), "waddr": ("input", 5),
                          "wdata": ("input", 24), "re": ("input", 1), "raddr": ("input", 5),
                          "rdata": ("output", 24)}


@pytest.mark.parametrize("wall", [False, True], ids=["default", "Wall"])
def test_sram_verilog_lints_clean(tmp_path, verilator, wall):
    files = emit_all(SMALL.replace(sram_min_bits=1), tmp_path)
    sim = lint([files["controller"], files["sim_top"]], SIM_TOP, wall=wall)
    assert sim.returncode == 0, sim.stderr
    ctl = lint([files["controller"], files["macro_stub"]], CONTROLLER_TOP, wall=wall)
    assert ctl.returncode == 0, ctl.stderr


@pytest.mark.parametrize("change, fits", [
    ({}, True),
    ({"input_lanes": 3}, False),  # 3 does not divide 8: a beat would straddle two words
    ({"layers": (8, 9, 4)}, False),  # one row block: the last beat writes word 0
    ({"num_macros": 2}, False),  # two macros read two row blocks a cycle
])
def test_image_goes_to_sram_only_where_one_read_port_and_lane_writes_do(change, fits):
    cfg = SMALL.replace(**change)
    assert pixel_sram_fits(cfg) == fits
    stores = [spec.store for spec in sram_macros(cfg.replace(sram_min_bits=1))]
    assert ("pixels" in stores) == fits


def test_amaranth_sram_model_is_lane_written_read_first_and_held():
    """The spec's macro semantics, cycle by cycle, on the Amaranth model."""
    spec = SramSpec("t", words=3, word_bits=8, lanes=2)
    dut = SramMacro(spec, instance=False)
    seen = []

    async def bench(ctx):
        assert ctx.get(dut.rdata) == 0  # every word and the read register start at 0
        ctx.set(dut.re, 1)
        ctx.set(dut.raddr, 2)
        ctx.set(dut.waddr, 2)
        ctx.set(dut.wdata, 0xAB)
        ctx.set(dut.we, 0b01)  # low lane only
        await ctx.tick()
        seen.append(ctx.get(dut.rdata))  # read-first: the word before the write
        ctx.set(dut.we, 0b10)
        ctx.set(dut.wdata, 0xCD)
        await ctx.tick()
        seen.append(ctx.get(dut.rdata))  # the low lane's write, not yet the high one's
        ctx.set(dut.we, 0)
        await ctx.tick()
        seen.append(ctx.get(dut.rdata))
        ctx.set(dut.re, 0)
        ctx.set(dut.raddr, 0)
        await ctx.tick()
        seen.append(ctx.get(dut.rdata))  # re low: held
        ctx.set(dut.re, 1)
        await ctx.tick()
        seen.append(ctx.get(dut.rdata))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [0x00, 0x0B, 0xCB, 0xCB, 0x00]


def test_tournament_runs_one_level_fewer_after_a_threshold_macro():
    from sbnn.rtl.exit import ExitDecision

    cfg = SbnnConfig(layers=(20, 9, 8), active_rows=8, macro_cols=16, macro_rows=256,
                     num_supports=1, input_lanes=4, adc_bits=6)
    assert ExitDecision(cfg).stage_levels == 2
    assert ExitDecision(cfg.replace(sram_min_bits=1)).stage_levels == 1
    assert ExitDecision(SMALL.replace(sram_min_bits=1)).stage_levels == 1  # never below 1


@pytest.mark.parametrize("cfg, pixel_lanes", [
    (SMALL, 1),
    # 4-lane beats: each row block's word is written in 2 lanes
    (SMALL.replace(input_lanes=4), 2),
    # 3 layers (hidden buffers read between image reads), K=1, a pipelined macro
    (SbnnConfig(layers=(24, 7, 5, 3), active_rows=8, macro_cols=4, macro_rows=256,
                num_supports=1, input_lanes=2, adc_bits=6, macro_latency=3,
                macro_interval=1), 4),
    # 8 classes in one output block: the tournament runs 1 of its 3 levels in the score
    # cycle with the thresholds in SRAM (2 with flip-flops)
    (SbnnConfig(layers=(20, 9, 8), active_rows=8, macro_cols=16, macro_rows=256,
                num_supports=1, input_lanes=4, adc_bits=6), 2),
], ids=["one-lane", "two-lane", "pipelined", "late-thresholds"])
def test_amaranth_controller_with_srams_matches_golden(cfg, pixel_lanes):
    """The Amaranth SimTop (stores as the macros' Amaranth models, the image's row codes
    read a row block ahead) runs the spec's cycles."""
    cfg = cfg.replace(sram_min_bits=1)
    macros = {spec.store: spec for spec in sram_macros(cfg)}
    assert macros["pixels"].lanes == pixel_lanes
    assert macros["pixels"].words == -(-cfg.layers[0] // cfg.active_rows)
    rng = np.random.default_rng(17)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.6, per_pass=True)
    images = random_images(cfg, rng, 3)
    budgets = [min(2, cfg.num_supports), 1, 0]
    out = run_pysim(cfg, build_image(model).program(), images, budgets)
    assert matches_golden(cfg, model, images, budgets, out)


@pytest.mark.cosim
@pytest.mark.parametrize("engine", ["fast", "per-cycle"])
def test_cosim_passes_with_sram_macros(cosim_build_root, tmp_path, verilator, engine):
    """The tapeout Verilog with both stores as macro instances, simulated with the
    generator's behavioral models, against the golden model (transactions and results)."""
    from sbnn.cosim.fast import run_fast
    from sbnn.cosim.runner import CosimJob, run_cosim

    cfg = SMALL.replace(sram_min_bits=1)
    rng = np.random.default_rng(2025)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.5, per_pass=True)
    count = 12
    images = rng.integers(0, 256, (count, cfg.layers[0]), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", images=images, labels=np.zeros(count, np.uint8))
    job = CosimJob(cfg, model.save(tmp_path / "m.npz"), tmp_path / "img.npz", count=count,
                   budgets=(2, 1, 0), random_seed=7)
    rep = run_fast(job, cosim_build_root, workers=1) if engine == "fast" else \
        run_cosim(job, cosim_build_root)
    assert rep.mismatches == 0, rep.first_mismatch
    assert rep.results_checked == 4 * count


def test_a_model_loads_under_another_arrangement_but_not_another_network(tmp_path):
    """sram_min_bits, num_macros and macro_interval say how the controller is built, not
    what it computes: a model takes them from the config it is loaded with."""
    from sbnn.golden.qmodel import ModelFileError

    model = QuantizedModel.random(SMALL, np.random.default_rng(1))
    path = model.save(tmp_path / "m.npz")
    chip = SMALL.replace(sram_min_bits=64, macro_interval=2)
    loaded = QuantizedModel.load(path, chip)
    assert loaded.config == chip
    assert all((a == b).all() for a, b in zip(loaded.thresholds, model.thresholds))
    with pytest.raises(ModelFileError, match=r"fields differ: adc_bits\)"):
        QuantizedModel.load(path, chip.replace(adc_bits=5))


def test_bundle_has_sram_views_in_manifest_flow_config_and_readme(tmp_path):
    from sbnn.gen.bundle import write_bundle

    cfg = SMALL.replace(sram_min_bits=1)
    files = write_bundle(cfg, tmp_path / "b")
    views = {f"macro/{m}.{ext}" for m in (THRESHOLDS, SUMS, PIXELS) for ext in ("lef", "lib")}
    assert views <= {str(p.relative_to(tmp_path / "b")) for p in files.values()}
    assert all((tmp_path / "b" / v).is_file() for v in views)
    man = json.loads(files["manifest"].read_text())
    assert views <= set(man["bundle"]["placeholders"])
    assert {e["instance"] for e in man["sram_macros"]} == {
        "ctrl.thresholds.sram.macro", "ctrl.first_layer_sums.sram.macro",
        "ctrl.activations.sram.macro"}
    flow = json.loads(files["flow_config"].read_text())
    assert {f"dir::macro/{m}.lef" for m in (THRESHOLDS, SUMS)} <= set(flow["EXTRA_LEFS"])
    assert {f"dir::macro/{m}.lib" for m in (THRESHOLDS, SUMS)} <= set(flow["EXTRA_LIBS"])
    assert THRESHOLDS in files["readme"].read_text()
    lef = (tmp_path / "b" / f"macro/{THRESHOLDS}.lef").read_text()
    assert f"MACRO {THRESHOLDS}" in lef and "PIN wdata[23]" in lef and "PIN rdata[0]" in lef
    # the same folder without SRAM macros: their views are gone, the rest as without them
    files = write_bundle(SMALL, tmp_path / "b")
    assert not list((tmp_path / "b" / "macro").glob("sbnn_sram_*"))
    assert json.loads(files["manifest"].read_text())["sram_macros"] == []
    plain = write_bundle(SMALL, tmp_path / "plain")
    for role, path in plain.items():
        assert files[role].read_bytes() == path.read_bytes(), role


@pytest.mark.skipif(shutil.which("sta") is None, reason="OpenSTA ('sta') not installed")
def test_sram_libs_read_in_opensta_without_errors_or_warnings(tmp_path):
    from sbnn.gen.macro_views import sram_area_um2, sram_lib_text
    from sbnn.rtl.stores import sram_macros

    specs = sram_macros(SMALL.replace(sram_min_bits=1))
    for spec in specs:
        (tmp_path / f"{spec.module}.lib").write_text(sram_lib_text(SMALL, spec))
        assert f"area : {sram_area_um2(spec):.3f};" in sram_lib_text(SMALL, spec)
    (tmp_path / "r.tcl").write_text("".join(f"read_liberty {s.module}.lib\n" for s in specs)
                                    + "puts DONE\nexit\n")
    proc = subprocess.run(["sta", "-no_splash", "-exit", "r.tcl"], cwd=tmp_path,
                          capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "DONE" in out
    assert "Warning" not in out and "Error" not in out, out


def test_synthesis_keeps_the_macros_as_black_boxes_and_drops_their_flip_flops():
    from sbnn.gen.synth import synthesize_config

    regs = synthesize_config(SMALL)
    srams = synthesize_config(SMALL.replace(sram_min_bits=1))
    thr, acc = _sizes(SMALL)
    assert regs.black_boxes == {"sbnn_macro": 1}
    assert srams.black_boxes == {"sbnn_macro": 1, THRESHOLDS: 1, SUMS: 1, PIXELS: 1}
    # every stored bit and both read registers (one word each) leave the flip-flops; the
    # image's row codes were registers, not a memory, before: their live bits (an input's
    # dac_bits; the sign bit is always 0, rows past the inputs are never read) go too
    assert regs.memory_bits - srams.memory_bits == thr + acc
    live_pixels = SMALL.layers[0] * SMALL.dac_bits
    assert regs.flip_flops - srams.flip_flops >= thr + acc + 24 + 22 + live_pixels
    assert srams.cells < regs.cells


@pytest.mark.skipif(shutil.which("sta") is None, reason="OpenSTA ('sta') not installed")
def test_silicon_flow_reports_sram_bits_and_logic_area(tmp_path):
    from sbnn.gen.macro_views import SRAM_UM2_PER_BIT
    from sbnn.gen.silicon import resolve_liberty, synthesize_silicon

    try:
        liberty = resolve_liberty(None)
    except ValueError as exc:
        pytest.skip(str(exc))
    res, _ = synthesize_silicon(SMALL.replace(sram_min_bits=1), liberty, "small-sram")
    thr, acc = _sizes(SMALL)
    pix = _pixel_bits(SMALL)
    assert res.sram_bits == thr + acc + pix
    assert res.black_boxes == {"sbnn_macro": 1, THRESHOLDS: 1, SUMS: 1, PIXELS: 1}
    assert res.area_um2 == pytest.approx(
        res.logic_area_um2 + (thr + acc + pix) * SRAM_UM2_PER_BIT, abs=0.02)
    assert res.memory_bits == SMALL.total_col_blocks * SMALL.macro_cols  # column enables
