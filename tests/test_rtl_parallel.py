"""Parallel macros (``num_macros`` N > 1) in the RTL: controller + N behavioral macros follow
the golden schedule cycle by cycle (docs/architecture.md, "Parallel and pipelined macros"):
every start's cycle, macro, context, row codes and column enables, every done's cycle and
codes, and every result field. Expected values come from the golden model (golden/hwpath.py)
and the spec, never from the RTL."""

import numpy as np
import pytest
from rtl_harness import random_images, run_pysim
from test_rtl import SINGLE, TINY, TINY_K2

from sbnn.config import SbnnConfig
from sbnn.cosim.scoreboard import Scoreboard
from sbnn.gen.image import build_image
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel


def _with(cfg: SbnnConfig, **fields) -> SbnnConfig:
    return SbnnConfig(**{**cfg.model_dump(), **fields})


def expected_parallel_trace(model, sched, gold, image: int) -> list[dict]:
    """The golden trace of one image with each evaluation's macro and done cycle, in (start
    cycle, macro) order, the order the harness records the macros' starts in."""
    cfg = model.config
    trace = hwpath.expected_trace(model, sched, gold, image)
    evals = sched.upto(int(gold.exit_pass[image]))
    assert len(evals) == len(trace)
    for tx, ev in zip(trace, evals):
        tx["macro"] = ev.macro
        tx["done"] = ev.cycle + cfg.macro_latency
    return sorted(trace, key=lambda tx: (tx["cycle"], tx["macro"]))


def check_parallel(cfg, model, images, budgets, out, exit_margin=None) -> list[int]:
    """Every image's trace and result against the golden model; returns the exit passes."""
    sb = Scoreboard()
    exits = []
    for i, (image, budget) in enumerate(zip(images, budgets)):
        sched = hwpath.schedule(model, budget)
        gold = hwpath.run_hw(model, image[None], budget, exit_margin, keep_adc=True)
        trace = expected_parallel_trace(model, sched, gold, 0)
        expected = hwpath.expected_result(sched, gold, 0, trace)
        assert sb.check_image(i, trace, out[i][0], expected, out[i][1]), str(sb.first)
        exits.append(out[i][1]["exit_plane"])
    assert sb.transactions > 0 and sb.results == len(images)
    return exits


def _masked(model: QuantizedModel, blocks: tuple[int, ...]) -> QuantizedModel:
    """Every support column of these first-layer blocks masked: rethreshold steps."""
    cfg = model.config
    mask = [m.copy() for m in model.support_mask]
    nt = cfg.neurons_per_tile
    for b in blocks:
        mask[0][b * nt:(b + 1) * nt, :] = False
    return QuantizedModel(cfg, model.planes, model.thresholds, tuple(mask))


def _intervals(cfg: SbnnConfig) -> list[int]:
    """1, a mid value and the latency (the one-evaluation-per-macro arrangement)."""
    lat = cfg.macro_latency
    return sorted({1, max(1, lat // 2), lat})


CASES = [(cfg_name, n, interval)
         for cfg_name, cfg in (("3layer-K1", TINY), ("K2-lat2", TINY_K2))
         for n in (2, 3, 4) for interval in _intervals(cfg)]
CONFIGS = {"3layer-K1": TINY, "K2-lat2": TINY_K2, "1layer": SINGLE}


@pytest.mark.parametrize("name,n,interval", CASES,
                         ids=[f"{c}-N{n}-I{i}" for c, n, i in CASES])
def test_parallel_controller_matches_golden_cycle_by_cycle(name, n, interval):
    """Rethreshold steps (masked first-layer blocks), disabled support columns, every pass,
    and an exit margin that lets some images stop early."""
    cfg = _with(CONFIGS[name], num_macros=n, macro_interval=interval)
    rng = np.random.default_rng(100 + 10 * n + interval)
    model = _masked(QuantizedModel.random(cfg, rng, mask_keep=0.6, per_pass=True), (0, 2))
    full = hwpath.schedule(model, cfg.num_supports)
    assert full.rethresholds  # the case has rethreshold steps
    assert {ev.macro for ev in full.evals} == set(range(n))
    starts = [ev.cycle for ev in full.evals]
    assert any(a == b for a, b in zip(starts, starts[1:]))  # several starts in one cycle
    images = random_images(cfg, rng, 5)
    budgets = [cfg.num_supports, 0, cfg.num_supports, min(1, cfg.num_supports),
               cfg.num_supports]
    gold = hwpath.run_hw(model, np.stack(images), cfg.num_supports)
    first = hwpath.margins(gold.pass_logits[0])
    # The largest first-pass margin of the images with a budget: that one exits after
    # pass 0, those with a smaller margin go on.
    margin = int(max(first[i] for i, b in enumerate(budgets) if b))
    out = run_pysim(cfg, build_image(model).program(), images, budgets, exit_margin=margin)
    exits = check_parallel(cfg, model, images, budgets, out, exit_margin=margin)
    assert any(e < b for e, b in zip(exits, budgets))  # an early exit happened


@pytest.mark.parametrize("n", [2, 4])
def test_parallel_single_layer_network(n):
    cfg = _with(SINGLE, num_macros=n, macro_interval=1)
    rng = np.random.default_rng(7)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.5, per_pass=True)
    images = random_images(cfg, rng, 3)
    budgets = [cfg.num_supports, 0, 1]
    out = run_pysim(cfg, build_image(model).program(), images, budgets)
    assert check_parallel(cfg, model, images, budgets, out) == budgets


@pytest.mark.cosim
@pytest.mark.parametrize("n,interval", [
    (3, 1),
    # a second Verilator build: slow-marked to keep CI short (the random-config equivalence
    # subset of CI runs N = 4 as well)
    pytest.param(2, 2, marks=pytest.mark.slow)], ids=["N3-I1", "N2-I2"])
def test_fast_cosim_parallel_macros(tmp_path, verilator, n, interval):
    """The generated Verilog with N SystemVerilog macros on Verilator (the digest check, and
    one image rerun with the full per-transaction log), budgets 1 and 0, an exit margin and
    random controls (masks with rethreshold steps), against the golden model."""
    from sbnn.cosim.fast import execute, plan_job, run_fast
    from sbnn.cosim.runner import CosimJob

    cfg = _with(TINY, num_macros=n, macro_interval=interval)
    model = QuantizedModel.random(cfg, np.random.default_rng(3), mask_keep=0.5, per_pass=True)
    images = np.random.default_rng(4).integers(0, 256, (40, cfg.layers[0]), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", images=images, labels=np.zeros(40, dtype=np.int64))
    job = CosimJob(cfg, model.save(tmp_path / "m.npz"), tmp_path / "s.npz", count=40,
                   budgets=(1, 0), exit_margin=5, random_seed=11)
    rep = run_fast(job, tmp_path / "build", workers=1)
    assert rep.mismatches == 0, rep.first_mismatch
    assert rep.results_checked == 120 and rep.transactions_checked > 0
    # The full log (every field of every transaction, macros included) agrees too.
    full = execute(cfg, tmp_path / "build", plan_job(job, model, 8), tmp_path / "s.npz", model,
                   job.model, workers=1, full=True)
    assert full.mismatches == 0, full.first_mismatch
    assert full.transactions_checked > 0


def _verilog_body(text: str) -> str:
    """The Verilog without its generator comment lines (sbnn's version, Amaranth's)."""
    return "\n".join(line for line in text.splitlines()
                     if not line.startswith(("// Generated by sbnn", "/* Generated by Amaranth")))


#: sha256 of the one-macro controller Verilog (generator lines left out) as it was before
#: rtl/parallel.py existed (main 06870a4): the default design, and TINY with a pipelined
#: macro (macro_interval 1). They change only when the one-macro controller is meant to
#: change; update them in that commit.
ONE_MACRO_VERILOG_SHA256 = {
    "default": "932bd06d5427af00653591122fc38768176bfe23a469e98b12e24e1605a9ed4e",
    "tiny-I1": "ef64edaf40b2a066490e3a95580d112157954e2370381090b2c8cc47ba4277b2",
}


@pytest.mark.parametrize("name", sorted(ONE_MACRO_VERILOG_SHA256))
def test_one_macro_verilog_is_unchanged(tmp_path, name):
    import hashlib

    from sbnn.gen.verilog import emit_all

    cfg = SbnnConfig() if name == "default" else _with(TINY, macro_interval=1)
    files = emit_all(cfg, tmp_path)
    body = _verilog_body(files["controller"].read_text())
    assert hashlib.sha256(body.encode()).hexdigest() == ONE_MACRO_VERILOG_SHA256[name]


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_bundle_and_manifest_list_every_macro(tmp_path, verilator):
    """N = 3: three macro instances in the controller Verilog, each probed by the simulation
    top, listed in the manifest and the bundle README, and both tops lint clean."""
    import json

    from sbnn.gen.bundle import macro_instances, write_bundle
    from sbnn.gen.lint import lint
    from sbnn.gen.verilog import CONTROLLER_TOP, SIM_TOP
    from sbnn.rtl.top import MACRO_MODULE

    # (interval = latency: the pipelined SystemVerilog macro leaves a parameter unused,
    # which the -Wall lint reports for one macro as well)
    cfg = _with(TINY, num_macros=3)
    files = write_bundle(cfg, tmp_path / "b")
    controller = files["controller"].read_text()
    names = ["macro_0", "macro_1", "macro_2"]
    assert macro_instances(controller) == names
    man = json.loads(files["manifest"].read_text())
    assert man["macro"]["count"] == 3 and man["macro"]["instances"] == names
    assert "instance" not in man["macro"]
    sim = files["sim_top"].read_text()
    for j, name in enumerate(names):
        assert f"assign probe__{j}__start = u_controller.{name}.start;" in sim
        assert f"`{name}`" in files["readme"].read_text()
    assert sim.count(f"module {MACRO_MODULE} (") == 1  # one module, instantiated 3 times
    assert lint([files["controller"], files["sim_top"]], SIM_TOP, wall=True).returncode == 0
    assert lint([files["controller"], files["macro_stub"]], CONTROLLER_TOP,
                wall=True).returncode == 0


def test_random_configs_draw_macros_and_intervals():
    """The random-config equivalence run draws N = 1 .. 4 and intervals below the latency,
    from a stream of their own (the other fields of a seed are unchanged)."""
    from sbnn.cosim.equivalence import random_config

    cfgs = [random_config(s) for s in range(60)]
    assert {c.num_macros for c in cfgs} == {1, 2, 3, 4}
    assert any(c.interval == 1 < c.macro_latency for c in cfgs)
    assert any(1 < c.interval < c.macro_latency for c in cfgs)
    assert any(c.macro_interval is None for c in cfgs)
    assert any(c.num_macros > 1 and c.interval < c.macro_latency for c in cfgs)


def test_a_model_runs_on_any_macro_arrangement(tmp_path):
    """``--config`` may arrange the macros otherwise than the model's design (implementation
    fields: the cycles change, not the results); any other field must match."""
    from sbnn.cli.loaders import load_model
    from sbnn.golden.qmodel import ModelFileError

    model = QuantizedModel.random(TINY, np.random.default_rng(1))
    path = model.save(tmp_path / "m.npz")
    arranged = _with(TINY, num_macros=4, macro_interval=1)
    loaded = load_model(path, arranged)
    assert loaded.config == arranged
    assert all(np.array_equal(a, b) for a, b in zip(loaded.planes[0], model.planes[0]))
    with pytest.raises(ModelFileError, match="different config"):
        load_model(path, _with(TINY, num_macros=4, adc_bits=6))


def test_cycle_engine_refuses_several_macros(tmp_path, capsys):
    from sbnn.cli import main

    config = tmp_path / "c.toml"
    config.write_text("[sbnn]\nnum_macros = 2\n")
    assert main(["sim", "--config", str(config), "--engine", "cycle", "--count", "1",
                 "--build", str(tmp_path / "b")]) != 0
    assert "--engine fast" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.cosim
def test_fast_cosim_default_design_four_macros(cosim_build_root, verilator):
    """The target arrangement (docs/latency.json): the default model on 4 macros starting
    every cycle, 100 images at budgets 1 and 0 with random controls, on Verilator; 129
    cycles per inference at budget 1 (<= 0.1 x 1,722), every macro busy >= 90 %."""
    from sbnn.cli import _default_model, _default_sample
    from sbnn.cli.loaders import load_model
    from sbnn.cosim.fast import run_fast
    from sbnn.cosim.runner import CosimJob

    cfg = SbnnConfig(num_macros=4, macro_interval=1)
    model = load_model(_default_model(), cfg)
    sched = hwpath.schedule(model, 1)
    assert sched.total_cycles() == 129 <= 0.1 * 1722
    assert min(sched.macro_utilization()) >= 0.9
    path = model.save(cosim_build_root / "default_model_n4_i1.npz")
    job = CosimJob(cfg, path, _default_sample(), count=100, budgets=(1, 0), random_seed=5)
    rep = run_fast(job, cosim_build_root, workers=2)
    assert rep.mismatches == 0, rep.first_mismatch
    assert rep.results_checked == 300
    full = next(r for r in rep.runs if r.run == "budget" and r.budget == 1)
    assert full.images == 100
    assert {p.cycles for p in rep.per_image if p.run == "budget" and p.budget == 1} == {129}


@pytest.mark.parametrize("interval", [1, None])
def test_parallel_macros_with_sram_stores(interval):
    """N = 3 with the stores in SRAM macros (sram_min_bits): the thresholds and the first
    layer's kept sums (one read per cycle: the sums are read for the block that ends); the
    image's row codes stay flip-flops with several macros (stores.pixel_sram_fits)."""
    from sbnn.rtl.stores import sram_macros

    cfg = _with(TINY, num_macros=3, macro_interval=interval, sram_min_bits=1)
    assert {s.store for s in sram_macros(cfg)} == {"thresholds", "first_layer_sums"}
    rng = np.random.default_rng(31)
    model = _masked(QuantizedModel.random(cfg, rng, mask_keep=0.6, per_pass=True), (1,))
    images = random_images(cfg, rng, 3)
    budgets = [1, 0, 1]
    out = run_pysim(cfg, build_image(model).program(), images, budgets)
    assert check_parallel(cfg, model, images, budgets, out) == budgets
