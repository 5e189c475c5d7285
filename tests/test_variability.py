"""Process variability: parameters, draws, golden paths, and the varied RTL macro (pysim)."""

import json

import numpy as np
import pytest
import rtl_harness
from amaranth.sim import Simulator
from rtl_harness import random_images, run_pysim

from sbnn.cli import _default_model, _default_sample
from sbnn.config import SbnnConfig
from sbnn.cosim.codec import Codec
from sbnn.cosim.scoreboard import Scoreboard
from sbnn.cosim.variability_runner import mismatch_table
from sbnn.gen.image import build_image
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.golden.variability import (
    DrawnVariation,
    FloatMacro,
    IntegerMacro,
    Variation,
    VariationError,
    draw,
    load_variation,
)
from sbnn.rtl.macro import BehavioralMacro, MismatchTable
from sbnn.rtl.top import SimTop

TINY = SbnnConfig(layers=(12, 7, 5, 6), active_rows=4, macro_cols=4, macro_rows=128,
                  num_supports=1, input_lanes=5, adc_bits=5, macro_latency=3,
                  adc_steps=(8, 1, 2))
K2 = SbnnConfig(layers=(20, 9, 6), active_rows=8, macro_cols=9, macro_rows=112, num_supports=2,
                gain_bits=3, input_lanes=4, adc_bits=6, macro_latency=2, dac_bits=4)
ALL = Variation(seed=3, cell_sigma=0.15, dac_gain_sigma=0.1, adc_offset_sigma=0.7)


def _model_and_pixels(cfg, seed=1, count=30):
    rng = np.random.default_rng(seed)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.6)
    return model, rng.integers(0, 256, (count, cfg.layers[0]), dtype=np.uint8)


# ------------------------------------------------------------------ parameters

@pytest.mark.parametrize("field,value,fragment", [
    ("cell_sigma", -0.1, "variation field 'cell_sigma'"),
    ("cell_sigma", float("nan"), "variation field 'cell_sigma'"),
    ("dac_gain_sigma", 2.0, "variation field 'dac_gain_sigma'"),
    ("adc_offset_sigma", "1", "variation field 'adc_offset_sigma'"),
    ("seed", -1, "variation field 'seed'"),
    ("seed", True, "variation field 'seed'"),
    ("frac_bits", 0, "variation field 'frac_bits'"),
    ("alpha", 3.0, "variation field 'alpha'"),
    ("overdrive_mv", 1.0, "variation field 'overdrive_mv'"),
])
def test_invalid_parameter_names_the_field(field, value, fragment):
    with pytest.raises(VariationError, match=fragment) as info:
        Variation(**{field: value})
    assert info.value.field_name == field
    assert "\n" not in str(info.value)


def test_cell_sigma_and_vth_sigma_are_exclusive_and_unknown_fields_rejected(tmp_path):
    with pytest.raises(VariationError, match="'vth_sigma_mv'.*not both"):
        Variation(cell_sigma=0.1, vth_sigma_mv=20)
    with pytest.raises(VariationError, match="'cel_sigma': unknown field"):
        Variation.from_dict({"cel_sigma": 0.1})
    bad = tmp_path / "v.json"
    bad.write_text("{")
    with pytest.raises(VariationError, match="'--variation': cannot parse"):
        load_variation(bad)


def test_json_round_trip_and_toml(tmp_path):
    assert Variation.from_dict(json.loads(ALL.to_json())) == ALL
    path = ALL.write_snapshot(tmp_path / "variation.json")
    assert load_variation(path) == ALL
    toml = tmp_path / "v.toml"
    toml.write_text("[variation]\nseed = 4\nvth_sigma_mv = 25.0\n")
    assert load_variation(toml) == Variation(seed=4, vth_sigma_mv=25.0)


# ------------------------------------------------------------------ draws

def test_seed_determinism_and_independent_sources():
    a, b = draw(ALL, K2), draw(ALL, K2)
    for name in ("cell_int", "row_gain_int", "adc_offset_int", "cell", "adc_offset"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    c = draw(ALL.replace(seed=4), K2)
    assert not np.array_equal(a.cell_int, c.cell_int)
    # Changing one sigma leaves the other sources' draws alone (own child streams) and
    # scales the same pattern (common random numbers).
    d = draw(ALL.replace(cell_sigma=0.3), K2)
    assert np.array_equal(a.row_gain, d.row_gain) and np.array_equal(a.adc_offset, d.adc_offset)
    assert np.allclose(d.cell - 1, 2 * (a.cell - 1))
    assert a.cell.shape == (K2.macro_rows, K2.macro_cols)
    assert a.row_gain.shape == (K2.active_rows,) and a.adc_offset.shape == (K2.macro_cols,)


def test_vth_mapping_follows_the_alpha_power_law():
    v = Variation(seed=1, vth_sigma_mv=30.0, overdrive_mv=200.0, alpha=1.3)
    d = draw(v, K2)
    z = np.random.default_rng(np.random.SeedSequence(1).spawn(3)[0]).standard_normal(
        (K2.macro_rows, K2.macro_cols))
    assert np.allclose(d.cell, np.clip(1 - 30.0 * z / 200.0, 0, None) ** 1.3)
    # small-signal: relative sigma ~ alpha * sigma_Vth / overdrive
    assert abs(np.std(d.cell) - 1.3 * 30 / 200) < 0.03


def test_drawn_tables_save_and_load(tmp_path):
    a = draw(ALL, K2)
    b = DrawnVariation.load(a.save(tmp_path / "m.npz"))
    assert b.config == K2 and b.variation == ALL
    assert np.array_equal(a.cell_int, b.cell_int) and np.array_equal(a.cell, b.cell)


# ------------------------------------------------------------------ golden paths

@pytest.mark.parametrize("cfg", [TINY, K2], ids=["tiny", "k2"])
def test_zero_sigma_reproduces_hwpath_exactly(cfg):
    model, pixels = _model_and_pixels(cfg)
    ideal = hwpath.run_hw(model, pixels, keep_adc=True, exit_margin=5)
    for macro in (IntegerMacro, FloatMacro):
        varied = hwpath.run_hw(model, pixels, keep_adc=True, exit_margin=5,
                               variation=macro(draw(Variation(seed=9), cfg)))
        assert np.array_equal(ideal.logits, varied.logits)
        assert np.array_equal(ideal.exit_pass, varied.exit_pass)
        assert ideal.adc.keys() == varied.adc.keys()
        assert all(np.array_equal(ideal.adc[k], varied.adc[k]) for k in ideal.adc)


def test_zero_sigma_reproduces_hwpath_on_the_default_model():
    model = QuantizedModel.load(_default_model())
    with np.load(_default_sample()) as data:
        pixels = data["images"][:100].reshape(100, -1)
    ideal = hwpath.run_hw(model, pixels)
    varied = hwpath.run_hw(model, pixels,
                           variation=IntegerMacro(draw(Variation(), model.config)))
    assert all(np.array_equal(ideal.pass_logits[p], varied.pass_logits[p])
               for p in ideal.pass_logits)


def _reference_codes(cfg, model, drawn, pixels, budget):
    """Every evaluation's codes from the *tiled image* (gen/image.py) with Python ints and
    the macro equation of rtl/macro.MismatchTable: independent of physical_index."""
    image = build_image(model)
    res = hwpath.run_hw(model, pixels, budget, keep_adc=True, variation=IntegerMacro(drawn))
    sched = hwpath.schedule(model, budget)
    f, a = drawn.frac_bits, cfg.active_rows
    for b in range(len(pixels)):
        for ev in sched.upto(budget):
            n = cfg.layers[ev.layer]
            lo = ev.row_block * a
            x = list(res.inputs[(ev.pass_, ev.layer)][b, lo:min(n, lo + a)])
            x += [0] * (a - len(x))
            got = hwpath.expected_trace(model, sched, res, b)[ev.index]["adc"]
            for c in range(cfg.macro_cols):
                if not ev.col_en >> c & 1:
                    assert got[c] == 0
                    continue
                s = 0
                for r in range(a):
                    row = ev.tile * a + r
                    sign = 1 if image.bitcells[row, c] else -1
                    s += sign * int(x[r]) * int(drawn.row_gain_int[r]) * \
                        int(drawn.cell_int[row, c])
                t = ev.gain * s + (int(drawn.adc_offset_int[c]) << (f + ev.adc_shift))
                want = min(cfg.adc_max, max(cfg.adc_min, t >> (2 * f + ev.adc_shift)))
                assert got[c] == want, (b, ev, c)


@pytest.mark.parametrize("cfg", [TINY, K2], ids=["tiny", "k2"])
def test_integer_path_is_the_macro_equation_on_the_physical_tiles(cfg):
    model, pixels = _model_and_pixels(cfg, count=3)
    _reference_codes(cfg, model, draw(ALL, cfg), pixels, cfg.num_supports)


@pytest.mark.parametrize("variation", [ALL, Variation(seed=5, vth_sigma_mv=40.0,
                                                      adc_offset_sigma=0.3)],
                         ids=["cell", "vth"])
def test_integerized_and_float_paths_agree(variation):
    cfg = K2.replace(adc_steps=(4, 1))
    model, pixels = _model_and_pixels(cfg, count=200)
    drawn = draw(variation, cfg)
    q_int = hwpath.run_hw(model, pixels, keep_adc=True, variation=IntegerMacro(drawn)).adc
    q_flt = hwpath.run_hw(model, pixels, keep_adc=True, variation=FloatMacro(drawn)).adc
    same = total = 0
    for key in q_int:
        if key[1] == 0:  # later layers' inputs may differ once a hidden sign flips
            diff = np.abs(q_int[key] - q_flt[key])
            assert diff.max() <= 1  # factors rounded to 2^-F: a code moves by one at most
            same += int((diff == 0).sum())
            total += diff.size
    assert same / total > 0.97
    # the errors the two paths make differ little (the accuracy study uses the float path
    # only as the physical reference; the sweep reports both)
    r_int = hwpath.run_hw(model, pixels, variation=IntegerMacro(drawn)).classes
    r_flt = hwpath.run_hw(model, pixels, variation=FloatMacro(drawn)).classes
    assert (r_int == r_flt).mean() > 0.9


def test_variation_for_another_config_is_refused():
    model, pixels = _model_and_pixels(TINY, count=2)
    with pytest.raises(ValueError, match="different config"):
        hwpath.run_hw(model, pixels, variation=IntegerMacro(draw(ALL, K2)))


# ------------------------------------------------------------------ RTL (Amaranth pysim)

def test_mismatch_table_is_checked_against_the_config():
    good = mismatch_table(draw(ALL, K2))
    BehavioralMacro(K2, good)._MustUse__silence = True  # construction is what is tested
    with pytest.raises(ValueError, match="row_gain needs active_rows"):
        BehavioralMacro(K2, MismatchTable.of(8, good.cell, good.row_gain[:-1],
                                             good.adc_offset))
    with pytest.raises(ValueError, match="cell must be macro_rows x macro_cols"):
        BehavioralMacro(K2, MismatchTable.of(8, good.cell[:-1], good.row_gain,
                                             good.adc_offset))
    with pytest.raises(ValueError, match="factors must be in 0..1023"):
        BehavioralMacro(K2, MismatchTable.of(8, good.cell, (1024,) * K2.active_rows,
                                             good.adc_offset))


def test_varied_macro_columns_match_the_golden_equation():
    """The macro alone: random bitcells, row codes, gains, shifts and masks."""
    cfg = SbnnConfig(layers=(6, 3), active_rows=6, macro_cols=5, macro_rows=18,
                     num_supports=1, adc_bits=6, adc_steps=(8,), macro_latency=3,
                     dac_bits=4, gain_bits=3)
    drawn = draw(Variation(seed=2, cell_sigma=0.25, dac_gain_sigma=0.1,
                           adc_offset_sigma=1.5, frac_bits=6), cfg)
    dut = BehavioralMacro(cfg, mismatch_table(drawn))
    codec = Codec(cfg)
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (cfg.macro_rows, cfg.macro_cols))
    f, a, xw = drawn.frac_bits, cfg.active_rows, cfg.x_bits
    cases = [(int(rng.integers(0, 3)), rng.integers(-15, 16, a), int(rng.integers(1, 8)),
              int(rng.integers(0, 1 << cfg.macro_cols)), int(rng.integers(0, 4)))
             for _ in range(25)]

    def expect(group, x, gain, col_en, shift, tables=drawn):
        out = []
        for c in range(cfg.macro_cols):
            s = sum((1 if bits[group * a + r, c] else -1) * int(x[r])
                    * int(tables.row_gain_int[r]) * int(tables.cell_int[group * a + r, c])
                    for r in range(a))
            t = gain * s + (int(tables.adc_offset_int[c]) << (f + shift))
            q = min(cfg.adc_max, max(cfg.adc_min, t >> (2 * f + shift)))
            out.append(q if col_en >> c & 1 else 0)
        return tuple(out)

    seen = []

    async def bench(ctx):
        bus = dut.bus
        for row in range(cfg.macro_rows):
            ctx.set(bus.wr_en, 1)
            ctx.set(bus.wr_group, row // a)
            ctx.set(bus.wr_row, row % a)
            ctx.set(bus.wr_data, sum(int(b) << c for c, b in enumerate(bits[row])))
            await ctx.tick()
        ctx.set(bus.wr_en, 0)
        for group, x, gain, col_en, shift in cases:
            ctx.set(bus.start, 1)
            ctx.set(bus.group, group)
            ctx.set(bus.row_x.as_value(),
                    sum((int(v) & ((1 << xw) - 1)) << (xw * i) for i, v in enumerate(x)))
            ctx.set(bus.gain, gain)
            ctx.set(bus.col_en, col_en)
            ctx.set(bus.adc_shift, shift)
            await ctx.tick()
            ctx.set(bus.start, 0)
            for _ in range(cfg.macro_latency - 1):
                await ctx.tick()
            assert ctx.get(bus.done)
            seen.append(codec.adc(ctx.get(bus.adc.as_value())))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    wanted = [expect(*case) for case in cases]
    assert seen == wanted
    ideal = [expect(*case, tables=draw(Variation(frac_bits=6), cfg)) for case in cases]
    assert wanted != ideal  # the variation moved codes: the check is not the ideal one


@pytest.mark.parametrize("variation", [ALL, Variation(seed=8, vth_sigma_mv=35.0,
                                                      adc_offset_sigma=1.0, frac_bits=5)],
                         ids=["cell", "vth-F5"])
def test_controller_and_varied_macro_match_golden_cycle_by_cycle(variation, monkeypatch):
    cfg = TINY
    rng = np.random.default_rng(5)
    model = QuantizedModel.random(cfg, rng, mask_keep=0.5)
    images = random_images(cfg, rng, 4)
    budgets = [1, 0, 1, 1]
    drawn = draw(variation, cfg)
    monkeypatch.setattr(rtl_harness, "SimTop", lambda c: SimTop(c, mismatch_table(drawn)))
    out = run_pysim(cfg, build_image(model).program(), images, budgets)
    sb = Scoreboard()
    moved = 0
    for i, (image, budget) in enumerate(zip(images, budgets)):
        sched = hwpath.schedule(model, budget)
        gold = hwpath.run_hw(model, image[None], budget, keep_adc=True,
                             variation=IntegerMacro(drawn))
        trace = hwpath.expected_trace(model, sched, gold, 0)
        assert sb.check_image(i, trace, out[i][0],
                              hwpath.expected_result(sched, gold, 0, trace), out[i][1]), \
            str(sb.first)
        ideal = hwpath.expected_trace(model, sched,
                                      hwpath.run_hw(model, image[None], budget, keep_adc=True), 0)
        moved += sum(e["adc"] != n["adc"] for e, n in zip(trace, ideal))
    assert moved > 0


# ------------------------------------------------------------------ sweep and CLI

def test_crossing_interpolates_the_half_point_loss():
    from sbnn.studies.variability_sweep import crossing

    assert crossing([0, 0.1, 0.2], [2.0, 2.2, 3.0]) == pytest.approx(0.1375)
    assert crossing([0, 0.1], [2.0, 2.3]) is None
    assert crossing([0.1, 0.2], [2.0, 3.0]) is None  # no sigma-0 reference


def test_sweep_cli_runs_resumes_and_reports(tmp_path, capsys):
    from sbnn.cli import main

    args = ["variability", "--images", str(_default_sample()), "--count", "40",
            "--sigmas", "0,0.2", "--seeds", "2", "--float-seeds", "1", "--workers", "1",
            "--work", str(tmp_path / "work"), "--out", str(tmp_path / "docs")]
    assert main(args) == 0
    files = sorted((tmp_path / "work").rglob("*.json"))
    # own mask (sigma 0: 1 seed; 0.2: 2 seeds) + pruned to 50 %, same
    assert len(files) == 6
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main(args) == 0  # resumed: every job is read back, none rerun
    assert [f.stat().st_mtime_ns for f in files] == stamps
    data = json.loads((tmp_path / "docs" / "variability.json").read_text())
    labels = [c["label"] for c in data["cell_sigma"]["curves"]]
    assert len(labels) == 3 and "baseline BNN" in labels[0] and "pruned" in labels[2]
    point = data["cell_sigma"]["curves"][1]["points"][1]
    assert point["exact"]["n"] == 2 and point["float"]["n"] == 1
    md = (tmp_path / "docs" / "variability.md").read_text()
    assert md.count("<!-- sweep cell_sigma: begin -->") == 1
    assert (tmp_path / "docs" / "variability_cell_sigma.png").stat().st_size > 1000
    rec = json.loads(files[0].read_text())
    assert set(rec["exact_error_pct"]) == {"0", "1"} and rec["images"] == 40
    # a changed parameter is a different job: its old file is not reused
    assert main(args[:-4] + ["--variation", str(Variation(dac_gain_sigma=0.01)
                                                .write_snapshot(tmp_path / "v.json")),
                             "--seeds", "1", "--keeps", "", "--float-seeds", "0",
                             "--work", str(tmp_path / "work"),
                             "--out", str(tmp_path / "docs")]) == 0
    capsys.readouterr()


def test_sweep_files_are_the_same_bytes_on_one_and_two_workers(tmp_path):
    """Every job carries its seed: a local Dask cluster of two workers writes the very
    files one process writes, and returns the records in job order."""
    from sbnn.studies.variability_sweep import ModelSpec, plan, run_all

    jobs = plan([ModelSpec("default", str(_default_model()))], Variation(), "cell_sigma",
                [0, 0.2], seeds=2, images=str(_default_sample()), count=20, float_seeds=1,
                work=tmp_path)
    seen = []
    one = run_all(jobs, workers=1, progress=lambda i, n, r: seen.append(i))
    files = {f: f.read_bytes() for f in sorted(tmp_path.rglob("*.json"))}
    assert len(files) == 3 and seen == [0, 1, 2]
    assert all("wall_s" not in json.loads(b) for b in files.values())  # time: not a result
    for f in files:
        f.unlink()
    two = run_all(jobs, workers=2)
    assert {f: f.read_bytes() for f in sorted(tmp_path.rglob("*.json"))} == files
    strip = [{k: v for k, v in r.items() if k != "wall_s"} for r in one]
    assert [{k: v for k, v in r.items() if k != "wall_s"} for r in two] == strip
    # resumed: read back, nothing run, no cluster started (no wall_s: nothing ran)
    assert run_all(jobs, workers=2) == strip


def test_sweep_cli_unreachable_scheduler_is_one_line(tmp_path, capsys, monkeypatch):
    import socket

    from sbnn import engine
    from sbnn.cli import main

    monkeypatch.setattr(engine, "CONNECT_TIMEOUT", "1s")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    assert main(["variability", "--images", str(_default_sample()), "--count", "10",
                 "--sigmas", "0,0.2", "--seeds", "1", "--keeps", "", "--scheduler", address,
                 "--work", str(tmp_path / "work"), "--out", str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sbnn: error: cannot reach the Dask scheduler")
    assert address in err[0] and "--scheduler" in err[0]
    assert not (tmp_path / "docs").exists()


@pytest.mark.parametrize("args,fragment", [
    (["--sigmas", "0,-1"], "--sigmas must be finite and >= 0"),
    (["--sigmas", "0,2"], "variation field 'cell_sigma'"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--workers", "0"], "--workers must be in 1..256"),
    (["--jobs", "0"], "--workers must be in 1..256"),  # the option's older name
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "give one of them"),
    (["--scheduler", " "], "--scheduler needs the scheduler's address"),
    (["--model", "nopath"], "--model must be NAME=PATH"),
    (["--model", "x=/nonexistent.npz"], "does not exist"),
    (["--keeps", "1.5"], "--keeps fractions must be in (0, 1]"),
    (["--count", "100000"], "--count must be in 1..300"),
    (["--param", "gain"], "invalid choice"),
])
def test_sweep_cli_bad_input_is_one_line(args, fragment, tmp_path, capsys):
    from sbnn.cli import main

    base = ["variability", "--images", str(_default_sample()), "--work", str(tmp_path)]
    try:
        code = main(base + args)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert fragment in err[-1] and "Traceback" not in "\n".join(err)
