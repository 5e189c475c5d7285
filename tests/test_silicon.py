"""Silicon flow (gen/silicon.py): liberty resolution, the macro .lib in OpenSTA, the
decision logic, and the whole flow on a small config (Yosys + OpenSTA + docs)."""

import json
import random
import shutil
import subprocess

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.gen import silicon
from sbnn.gen.macro_views import lib_text
from sbnn.gen.silicon import LibertyError, parse_sta, resolve_liberty, sequential_cells
from sbnn.gen.silicon_report import JSON_KEYS
from sbnn.rtl.exit import top_two

# Small: converts in about a second, maps and times in well under a minute.
CFG = SbnnConfig(layers=(20, 9, 4), active_rows=8, macro_cols=6, macro_rows=256,
                 num_supports=2, input_lanes=8, adc_bits=6)
needs_sta = pytest.mark.skipif(shutil.which("sta") is None,
                               reason="OpenSTA ('sta') not installed: apt-get install opensta")


def _have_liberty() -> bool:
    try:
        resolve_liberty(None)
    except LibertyError:
        return False
    return True


# the flow maps onto the SKY130 library of ../shared/pdk (or $SBNN_LIBERTY)
needs_liberty = pytest.mark.skipif(not _have_liberty(),
                                   reason="no Liberty library: set SBNN_LIBERTY or put "
                                          "the SKY130 one in ../shared/pdk")


def test_liberty_option_then_env_then_shared(tmp_path, monkeypatch):
    lib = tmp_path / "a.lib"
    lib.write_text("library (a) { }\n")
    assert resolve_liberty(lib, env={}) == lib
    assert resolve_liberty(None, env={"SBNN_LIBERTY": str(lib)}) == lib
    monkeypatch.setattr(silicon, "SHARED_PDK", tmp_path / "nothing")
    with pytest.raises(LibertyError, match="--liberty FILE.*SBNN_LIBERTY"):
        resolve_liberty(None, env={})
    with pytest.raises(LibertyError, match="from SBNN_LIBERTY"):
        resolve_liberty(None, env={"SBNN_LIBERTY": str(tmp_path / "gone.lib")})
    monkeypatch.setattr(silicon, "SHARED_PDK", tmp_path)
    assert resolve_liberty(None, env={}) == lib


def test_missing_liberty_is_one_line_exit_2(tmp_path, capsys):
    assert main(["synth", "--liberty", str(tmp_path / "none.lib")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none.lib" in err[0] and err[0].startswith("sbnn: error:")


def test_sequential_cells_reads_ff_groups():
    text = ('cell ("x__dfxtp_1") {\n  ff ("IQ","IQN") { next_state : "D"; }\n}\n'
            'cell ("x__nand2_1") {\n  pin ("Y") { function : "!(A&B)"; }\n}\n'
            'cell ("x__dlxtp_1") {\n  latch ("IQ","IQN") { }\n}\n')
    assert sequential_cells(text) == {"x__dfxtp_1", "x__dlxtp_1"}


def test_parse_sta_reads_slacks_path_and_power():
    out = "\n".join([
        "=== setup", "Startpoint: _5_ (rising edge-triggered flip-flop clocked by clk)",
        "Endpoint: _9_ (rising edge-triggered flip-flop clocked by clk)",
        "  0.000 0.000 0.000 ^ _5_/CLK (sky130_fd_sc_hd__dfxtp_1)",
        "  0.100 0.300 0.300 ^ _5_/Q (sky130_fd_sc_hd__dfxtp_1)",
        "    7    0.015                              ctrl.logit0[6] (net)",
        "  0.100 0.200 0.500 v _6_/Y (sky130_fd_sc_hd__nand2_1)",
        "    2    0.005                              _00_ (net)",
        "   0.500   data arrival time", "   9.600   data required time", "   9.100   slack (MET)",
        "=== hold", "=== summary", "wns 0.000", "tns 0.000", "worst slack 9.100",
        "worst slack min 0.051", "=== power",
        "Total                1.9968e-02 8.2017e-04 3.3567e-08 2.0788e-02 100.0%",
        "=== violators", "max_transition", "_1_/B  1.50  9.03  -7.53 (VIOLATED)"])
    sta = parse_sta(out)
    assert (sta["wns_ns"], sta["worst_slack_ns"], sta["whs_ns"]) == (0.0, 9.1, 0.051)
    path = sta["critical_path"]
    assert path["start_net"] == "ctrl.logit0[6]" and path["stages"] == 2
    assert path["max_fanout"] == 7 and path["slack_ns"] == 9.1
    assert sta["power_mw"] == pytest.approx(20.788) and sta["max_slew_violations"] == 1
    with pytest.raises(silicon.SynthError, match="stopped early"):
        parse_sta("Error: something\n")


@needs_sta
def test_macro_lib_reads_without_errors_or_warnings(tmp_path):
    (tmp_path / "m.lib").write_text(lib_text(CFG))
    (tmp_path / "r.tcl").write_text("read_liberty m.lib\nputs DONE\nexit\n")
    proc = subprocess.run(["sta", "-no_splash", "-exit", "r.tcl"], cwd=tmp_path,
                          capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "DONE" in out
    assert "Warning" not in out and "Error" not in out, out


def _reference(values: list[int], low: int) -> tuple[int, int, int]:
    best = max(range(len(values)), key=lambda j: (values[j], -j))
    ordered = sorted(values, reverse=True)
    return ordered[0], ordered[1] if len(values) > 1 else low, best


@pytest.mark.parametrize("n", [1, 2, 3, 10, 17])
def test_top_two_matches_a_sort(n):
    """The decision's top-two tree: largest value, runner-up, first index of the largest."""
    m = Module()
    values = [Signal(signed(6), name=f"v{i}") for i in range(n)]
    t1, t2, best = top_two(m, values, 6)
    rng = random.Random(n)
    sim = Simulator(m)

    async def bench(ctx):
        for _ in range(200):
            # Narrow draws too, so that ties (and repeated maxima) are frequent.
            draw = [rng.randint(-32, 31) if rng.random() < 0.5 else rng.randint(-2, 2)
                    for _ in range(n)]
            for sig, x in zip(values, draw):
                ctx.set(sig, x)
            assert (ctx.get(t1), ctx.get(t2), ctx.get(best)) == _reference(draw, -32), draw

    sim.add_testbench(bench)
    sim.run()


@needs_sta
@needs_liberty
def test_flow_on_a_small_config(tmp_path):
    """sbnn synth end to end: every silicon.json key, sane numbers, docs written."""
    cfg_file = tmp_path / "small.json"
    cfg_file.write_text(CFG.to_json())
    out = tmp_path / "docs"
    assert main(["synth", "--config", str(cfg_file), "--out", str(out),
                 "--keep", str(tmp_path / "work")]) == 0
    rows = json.loads((out / "silicon.json").read_text())
    assert len(rows) == 1 and list(rows[0])[:len(JSON_KEYS)] == list(JSON_KEYS)
    r = rows[0]
    assert r["config"] == "small" and r["clock_mhz"] == CFG.clock_mhz
    assert r["black_boxes"] == {"sbnn_macro": 1}
    assert 0 < r["flip_flops"] < r["cells"] and 0 < r["logic_area_um2"] <= r["area_um2"]
    assert r["flip_flops"] >= r["memory_bits"] > 0
    # Fmax is the period at which the worst path closes: consistent with the slack.
    period = 1000.0 / r["clock_mhz"]
    assert r["fmax_mhz"] == pytest.approx(1000.0 / (period - r["critical_path"]["slack_ns"]),
                                          rel=1e-2)
    assert r["wns_ns"] <= 0 and r["tns_ns"] <= r["wns_ns"] + 1e-9
    md = (out / "silicon.md").read_text()
    assert "| small |" in md and "Critical paths" in md
    assert (tmp_path / "work" / "small" / "net.v").is_file()
