"""gen/sim_macro.py against the Amaranth reference: the SystemVerilog macro must give the same
``done`` and ADC codes as ``BehavioralMacro`` in every cycle of a random sequence (writes,
starts back to back and in the done cycle, idle gaps, resets), ideal and with a mismatch
table; ``sbnn_sim_top`` (tapeout controller Verilog + SV macro) must give every output of
the Amaranth ``SimTop`` in every cycle, lint clean and have SimTop's ports.

One Verilator build holds every unit (a macro module per config, each with its own mismatch
plusarg, and the sim top); the ideal and the varied run are two runs of that binary.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import re
import subprocess
from pathlib import Path

import pytest
from amaranth.back import verilog
from amaranth.hdl import ClockDomain, Module, Value
from amaranth.sim import Simulator

from sbnn.config import SbnnConfig
from sbnn.cosim.variability_runner import mismatch_table
from sbnn.gen.lint import lint, waiver_flags
from sbnn.gen.sim_macro import macro_sv, sim_top_ports, sim_top_sv, write_mismatch_files
from sbnn.gen.verilog import CONTROLLER_TOP, top_verilog
from sbnn.golden.variability import Variation, draw
from sbnn.rtl.interfaces import ProgOp, Sizes
from sbnn.rtl.macro import BehavioralMacro, MismatchTable
from sbnn.rtl.top import SimTop, macro_port_list

#: One build and one set of run folders per test process. The xdist_group mark below asks
#: --dist loadgroup to keep the module on one worker, but CI showed both workers running it
#: (each module-scoped fixture then rebuilt and reran into the same folders: truncated
#: objects at link time, out files deleted under a reader), so the folder is the worker's.
BUILD = Path(__file__).resolve().parents[1] / "out" / "test_sim_macro" / \
    os.environ.get("PYTEST_XDIST_WORKER", "main")
pytestmark = pytest.mark.xdist_group("sim_macro")
CYCLES = 700

#: Small configs covering the shape parameters: one word-line group (memory depth 2), 20
#: groups (addresses past the memory), active_rows not a power of two (writes to rows past
#: it), 5-bit adc_shift, latency 2..5, K = 0..2, gain_bits 1..8, adc_bits 4..12, dac_bits
#: 2..8. (macro_latency 1 is rejected by SbnnConfig: 2 is the minimum.)
CONFIGS = [
    SbnnConfig(layers=(8, 2), num_supports=0, active_rows=8, macro_rows=8, macro_cols=2,
               adc_bits=4, macro_latency=2, gain_bits=1, dac_bits=3),
    SbnnConfig(layers=(20, 10, 4), num_supports=1, active_rows=5, macro_rows=100,
               macro_cols=6, adc_bits=6, macro_latency=3, gain_bits=3, dac_bits=4),
    SbnnConfig(layers=(32, 9, 3), num_supports=2, active_rows=16, macro_rows=128,
               macro_cols=9, adc_bits=8, macro_latency=5, gain_bits=4, dac_bits=8,
               adc_steps=(1 << 16, 2)),
    SbnnConfig(layers=(6, 4, 2), num_supports=1, active_rows=3, macro_rows=24, macro_cols=4,
               adc_bits=12, macro_latency=2, gain_bits=8, dac_bits=2),
]


def _random_table(cfg: SbnnConfig, frac_bits: int, seed: int) -> MismatchTable:
    """Factors over their whole range (0 and the maximum included) and offsets past the
    ADC range, so that every term of the arithmetic is exercised."""
    rng = random.Random(seed)
    top = (1 << (frac_bits + 2)) - 1
    lim = 1 << (cfg.adc_bits + frac_bits)

    def factor() -> int:
        return rng.choice([0, top, 1 << frac_bits, rng.randint(0, top)])

    return MismatchTable.of(frac_bits, [[factor() for _ in range(cfg.macro_cols)]
                                        for _ in range(cfg.macro_rows)],
                            [factor() for _ in range(cfg.active_rows)],
                            [rng.randint(-lim, lim) for _ in range(cfg.macro_cols)])


def _tables() -> list[MismatchTable]:
    drawn = draw(Variation(seed=7, cell_sigma=0.3, dac_gain_sigma=0.2, adc_offset_sigma=3.0,
                           frac_bits=6), CONFIGS[1])
    return [_random_table(CONFIGS[0], 1, 1), mismatch_table(drawn),
            _random_table(CONFIGS[2], 12, 2), _random_table(CONFIGS[3], 14, 3)]


# ---------------------------------------------------------------- stimulus

def stimulus(cfg: SbnnConfig, cycles: int, seed: int) -> list[dict[str, int]]:
    """Random cycles; a model of the macro's counter steers starts into the done cycle, the
    cycle after a start (back to back) and idle gaps, with resets at random cycles."""
    rng = random.Random(seed)
    sz = Sizes(cfg)
    groups = 1 << sz.group_bits  # every address, past the memory's depth too
    lat, xb = cfg.macro_latency, cfg.x_bits
    cnt, out = 0, []
    for t in range(cycles):
        p_start = 0.8 if cnt == 1 else 0.4 if cnt == lat else 0.15
        group = rng.randrange(groups)
        cyc = {
            "rst": int(rng.random() < 0.02), "start": int(rng.random() < p_start),
            "group": group, "gain": rng.randrange(1 << cfg.gain_bits),
            "row_x": sum((rng.randrange(1 << xb)) << (i * xb) for i in range(cfg.active_rows)),
            "wr_data": rng.randrange(1 << cfg.macro_cols),
            "col_en": rng.choice([(1 << cfg.macro_cols) - 1,
                                  rng.randrange(1 << cfg.macro_cols)]),
            "adc_shift": rng.randrange(1 << sz.shift_bits),
            # many writes early (fill the array), then fewer; half into the group read now
            "wr_en": int(rng.random() < (0.9 if t < cycles // 4 else 0.3)),
            "wr_group": group if rng.random() < 0.5 else rng.randrange(groups),
            "wr_row": rng.randrange(1 << sz.row_bits),
        }
        out.append(cyc)
        cnt = 0 if cyc["rst"] else lat if cyc["start"] else max(0, cnt - 1)
    return out


def amaranth_outputs(dut, stim: list[dict[str, int]], inputs: list[tuple[str, int]],
                     outputs: list[tuple[str, int]]) -> list[tuple[int, ...]]:
    """Drive the Amaranth ``dut`` (ports named as in Verilog, a macro's without ``bus__``)
    with ``stim``; its ``outputs`` in every cycle, read after the inputs are set."""
    m = Module()
    m.domains.sync = cd = ClockDomain("sync")
    m.submodules.dut = dut
    values = {"__".join(map(str, p)).removeprefix("bus__"): Value.cast(v)
              for p, _m, v in dut.signature.flatten(dut)}
    values["rst"] = cd.rst
    sim = Simulator(m)
    sim.add_clock(1e-6, domain="sync")
    out: list[tuple[int, ...]] = []

    async def bench(ctx):
        for cyc in stim:
            for name, _w in inputs:
                ctx.set(values[name], cyc[name])
            out.append(tuple(ctx.get(values[n]) for n, _w in outputs))
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    return out


def compare(expected: list[tuple[int, int]], got: list[tuple[int, int]],
            cfg: SbnnConfig) -> list[str]:
    """One line per cycle whose ``done`` or any ADC code differs (empty: equal)."""
    if len(expected) != len(got):
        return [f"length: expected {len(expected)} cycles, got {len(got)}"]
    ab, errors = cfg.adc_bits, []
    for t, ((d0, a0), (d1, a1)) in enumerate(zip(expected, got)):
        if d0 != d1:
            errors.append(f"cycle {t}: done expected {d0}, got {d1}")
        bad = [c for c in range(cfg.macro_cols) if (a0 >> c * ab ^ a1 >> c * ab) & ((1 << ab) - 1)]
        if bad:
            errors.append(f"cycle {t}: adc columns {bad} differ (expected {a0:x}, got {a1:x})")
    return errors


# ---------------------------------------------------------------- whole simulation top

#: Config of the sbnn_sim_top equivalence (latency 2: every start in a layer is in a done cycle).
TOP_K = 3


def _top_ports(cfg: SbnnConfig, direction: str) -> list[tuple[str, int]]:
    """SimTop's ports (names checked in test_sim_top_lints_clean_with_simtop_ports)."""
    return [(n, w) for n, d, w in sim_top_ports(cfg) if d == direction and n != "clk"]


def top_stimulus(cfg: SbnnConfig, cycles: int, seed: int) -> list[dict[str, int]]:
    """Random stream traffic: many prog ops early (weights, column masks at real column
    blocks, thresholds, ...), pixel beats, result back-pressure and rare resets."""
    rng, sz, out = random.Random(seed), Sizes(cfg), []
    for t in range(cycles):
        cyc = {n: rng.randrange(1 << w) for n, w in _top_ports(cfg, "input")}
        op = rng.choice([ProgOp.WEIGHT_ROW] * 3 + [ProgOp.COL_MASK] * 2 + list(ProgOp)).value
        addr = rng.randrange(cfg.total_col_blocks if op == ProgOp.COL_MASK.value
                             else 1 << sz.addr_bits)
        data = rng.randrange(1 << sz.data_bits)
        cyc["prog__payload"] = op | addr << 3 | data << (3 + sz.addr_bits)  # op, addr, data
        cyc["prog__valid"] = int(rng.random() < (0.7 if t < cycles // 5 else 0.05))
        cyc["pixels__valid"] = int(rng.random() < 0.7)
        cyc["result__ready"] = int(rng.random() < 0.6)
        cyc["rst"] = int(rng.random() < 0.004)
        out.append(cyc)
    return out


# ---------------------------------------------------------------- Verilator side

def _units() -> list[tuple[str, list[tuple[str, int]], list[tuple[str, int]]]]:
    """(module, inputs, outputs) per bench unit: the macro of each config, then sbnn_sim_top
    of CONFIGS[TOP_K] (whose macro is the plain ``sbnn_macro``)."""
    units = []
    for k, cfg in enumerate(CONFIGS):
        ports = macro_port_list(cfg)[1:]
        units.append((f"sbnn_macro_k{k}", [(n, w) for n, d, w in ports if d == "input"],
                      [(n, w) for n, d, w in ports if d == "output"]))
    top = CONFIGS[TOP_K]
    return [*units, ("sbnn_sim_top", _top_ports(top, "input"), _top_ports(top, "output"))]


def _testbench(cycles: int) -> str:
    """Top ``tb``: unit u reads ``stim_<u>.txt`` (one line of hex inputs per cycle, applied
    at negedge) and writes ``out_<u>.txt`` (its outputs as sampled before each posedge)."""
    decls, reads, writes, opens, closes = [], [], [], [], []
    for u, (module, inputs, outputs) in enumerate(_units()):
        conns = [".clk(clk)"]
        for kind, ports in (("logic", inputs), ("wire", outputs)):
            for name, width in ports:
                decls.append(f"  {kind} [{width - 1}:0] {name}_{u};")
                conns.append(f".{name}({name}_{u})")
        decls.append(f"  {module} dut_{u} ({', '.join(conns)});\n  int fi_{u}, fo_{u};")
        args = ", ".join(f"{n}_{u}" for n, _w in inputs)
        reads.append(f"    if ($fscanf(fi_{u}, \"{' '.join(['%h'] * len(inputs))}\\n\", "
                     f"{args}) != {len(inputs)}) $fatal(1, \"stim_{u}.txt: short\");")
        writes.append(f"    $fwrite(fo_{u}, \"{' '.join(['%h'] * len(outputs))}\\n\", "
                      + ", ".join(f"{n}_{u}" for n, _w in outputs) + ");")
        opens.append(f"    fi_{u} = $fopen(\"stim_{u}.txt\", \"r\"); "
                     f"fo_{u} = $fopen(\"out_{u}.txt\", \"w\");")
        closes.append(f"$fclose(fo_{u});")
    nl = "\n"
    return f"""\
module tb (input wire clk);
  int cycle;
{nl.join(decls)}
  task automatic read_all();
{nl.join(reads)}
  endtask
  initial begin
    cycle = 0;
{nl.join(opens)}
    read_all();
  end
  always @(posedge clk) begin
{nl.join(writes)}
    cycle = cycle + 1;
    if (cycle == {cycles}) begin {" ".join(closes)} $finish; end
  end
  always @(negedge clk) if (cycle < {cycles}) read_all();
endmodule
"""


_MAIN_CPP = """\
#include <memory>
#include "Vtb.h"
#include "verilated.h"
int main(int argc, char** argv) {
  auto ctx = std::make_unique<VerilatedContext>();
  ctx->commandArgs(argc, argv);
  auto top = std::make_unique<Vtb>(ctx.get());
  for (top->eval(); !ctx->gotFinish();) {
    top->clk = 1; top->eval(); top->clk = 0; top->eval();
  }
  top->final();
  return 0;
}
"""


def build_bench(verilator: str) -> Path:
    """Build (cached on the source texts) the multi-unit bench; return the binary."""
    top_cfg = CONFIGS[TOP_K]
    sources = {f"macro_k{k}.sv": macro_sv(cfg, f"sbnn_macro_k{k}", f"sbnn_mismatch_k{k}")
               for k, cfg in enumerate(CONFIGS)}
    sources.update({"sbnn_controller.v": _controller_verilog(),
                    "sbnn_macro.sv": macro_sv(top_cfg), "sbnn_sim_top.sv": sim_top_sv(top_cfg),
                    "tb.sv": _testbench(CYCLES), "main.cpp": _MAIN_CPP})
    src = BUILD / "src"
    src.mkdir(parents=True, exist_ok=True)
    # -O0: the bench runs for milliseconds, so C++ compile time is all that counts
    cmd = [verilator, "--cc", "--exe", "--build", "-j", "1", "--top-module", "tb",
           "-Mdir", str(BUILD / "obj"), "-o", "tb_bin", *waiver_flags(), "-Wno-fatal",
           # no precompiled header: a clean-clone CI run found it "invalid" (the generated
           # .cpp files #include the header themselves; the PCH only saves parse time)
           "-MAKEFLAGS", "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0 VK_PCH_I_FAST= VK_PCH_I_SLOW=",
           *(str(src / n) for n in sources)]
    digest = hashlib.sha256("".join([*cmd[1:], *(sources[k] for k in sorted(sources))])
                            .encode()).hexdigest()
    binary, stamp = BUILD / "obj" / "tb_bin", BUILD / "obj" / ".digest"
    if binary.exists() and stamp.exists() and stamp.read_text() == digest:
        return binary
    for name, text in sources.items():
        (src / name).write_text(text)
    # The g++ level is this build's own (-O0 above): drop the session-wide OPT_* settings
    # from MAKEFLAGS, so the precompiled header and the objects cannot see two levels.
    flags = " ".join(f for f in os.environ.get("MAKEFLAGS", "").split()
                     if not f.startswith(("OPT_FAST=", "OPT_SLOW=", "OPT_GLOBAL=")))
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env=dict(os.environ, MAKEFLAGS=flags))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stamp.write_text(digest)
    return binary


def run_bench(binary: Path, name: str, stims: list[list[dict[str, int]]],
              plusargs: list[str]) -> subprocess.CompletedProcess:
    """Run the bench in ``BUILD/name`` with one stimulus per unit."""
    run = BUILD / name
    run.mkdir(parents=True, exist_ok=True)
    for u, ((_m, inputs, _o), stim) in enumerate(zip(_units(), stims)):
        (run / f"stim_{u}.txt").write_text(
            "".join(" ".join(f"{cyc[n]:x}" for n, _w in inputs) + "\n" for cyc in stim))
        (run / f"out_{u}.txt").unlink(missing_ok=True)
    return subprocess.run([str(binary), *plusargs], cwd=run, capture_output=True, text=True,
                          timeout=120)


def sv_trace(name: str, u: int) -> list[tuple[int, ...]]:
    """The outputs unit ``u`` wrote in run ``name``, one tuple of ints per cycle."""
    lines = (BUILD / name / f"out_{u}.txt").read_text().splitlines()
    return [tuple(int(w, 16) for w in line.split()) for line in lines]


@functools.cache
def _controller_verilog() -> str:
    return top_verilog(CONFIGS[TOP_K], CONTROLLER_TOP)


@pytest.fixture(scope="module")
def bench(verilator):
    """The built binary and both runs: ideal (no plusarg) and varied (one table per unit,
    each macro from its own plusarg, the sim top's from ``+sbnn_mismatch``); stimulus seeds
    differ between the runs. ``expected(run, u)``: the Amaranth trace (cached)."""
    binary = build_bench(verilator)
    tables = _tables()
    stims = {run: [stimulus(cfg, CYCLES, seed=100 * s + k) for k, cfg in enumerate(CONFIGS)]
             + [top_stimulus(CONFIGS[TOP_K], CYCLES, seed=100 * s + 99)]
             for s, run in enumerate(("ideal", "varied"))}
    plusargs = [f"+sbnn_mismatch={BUILD / 'tables' / f'k{TOP_K}'}"]  # the sim top's macro
    for k, table in enumerate(tables):
        write_mismatch_files(table, BUILD / "tables" / f"k{k}")
        plusargs.append(f"+sbnn_mismatch_k{k}={BUILD / 'tables' / f'k{k}'}")
    for run, args in (("ideal", []), ("varied", plusargs)):
        proc = run_bench(binary, run, stims[run], args)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    @functools.cache
    def expected(run: str, u: int, table_run: str | None = None) -> list[tuple[int, ...]]:
        """Amaranth outputs for the stimulus of ``run``, with the tables of ``table_run``
        (default: ``run``'s own)."""
        k = min(u, TOP_K)
        table = tables[k] if (table_run or run) == "varied" else None
        dut = (SimTop if u == len(CONFIGS) else BehavioralMacro)(CONFIGS[k], table)
        return amaranth_outputs(dut, stims[run][u], *_units()[u][1:])

    return {"binary": binary, "stims": stims, "expected": expected}


@pytest.mark.cosim
@pytest.mark.parametrize("run", ["ideal", "varied"])
@pytest.mark.parametrize("k", range(len(CONFIGS)))
def test_sv_macro_matches_amaranth(bench, k, run):
    expected = bench["expected"](run, k)
    errors = compare(expected, sv_trace(run, k), CONFIGS[k])
    assert not errors, "\n".join(errors[:10])
    # the sequence is not vacuous: evaluations complete and codes are nonzero
    assert sum(d for d, _a in expected) > CYCLES // 20
    assert sum(1 for _d, a in expected if a) > CYCLES // 4


@pytest.mark.cosim
@pytest.mark.parametrize("run", ["ideal", "varied"])
def test_sim_top_matches_amaranth_simtop(bench, run):
    """sbnn_sim_top (tapeout controller Verilog + SV macro + probes) against the Amaranth
    SimTop: every output port in every cycle."""
    u, cfg = len(CONFIGS), CONFIGS[TOP_K]
    names = [n for n, _w in _top_ports(cfg, "output")]
    expected, got = bench["expected"](run, u), sv_trace(run, u)
    assert len(got) == len(expected) == CYCLES
    diffs = [f"cycle {t}: {n} expected {e:x}, got {g:x}" for t, (ev, gv) in
             enumerate(zip(expected, got)) for n, e, g in zip(names, ev, gv) if e != g]
    assert not diffs, "\n".join(diffs[:10])
    col = {n: i for i, n in enumerate(names)}  # not vacuous: evaluations and results
    starts = sum(v[col["probe__start"]] for v in expected)
    assert starts > CYCLES // 10
    assert sum(v[col["result__valid"]] for v in expected) > 0
    # Nonzero codes in a fair share of the evaluations (random traffic writes few weight
    # rows, so most columns sum to zero; 52 of 191 in the ideal run): a macro or probe
    # stuck at zero fails this.
    assert sum(1 for v in expected if v[col["probe__adc"]]) > max(20, starts // 5)
    if run == "varied":  # the +sbnn_mismatch table reached the macro and changed codes
        assert bench["expected"](run, u, "ideal") != got


@pytest.mark.cosim
def test_checker_reports_wrong_codes(bench):
    """The comparison cannot pass vacuously: the SV's ideal codes differ from the varied
    Amaranth macro's, and one flipped code or done in the expectation is reported."""
    k, cfg = 2, CONFIGS[2]
    got = sv_trace("ideal", k)
    assert compare(bench["expected"]("ideal", k, "varied"), got, cfg)
    expected = bench["expected"]("ideal", k)
    t = next(i for i, (d, a) in enumerate(expected) if d and a)
    wrong = list(expected)
    wrong[t] = (expected[t][0], expected[t][1] ^ (1 << (3 * cfg.adc_bits)))
    errors = compare(wrong, got, cfg)
    assert len(errors) == 1 and errors[0].startswith(f"cycle {t}: adc columns [3]"), errors
    wrong[t] = (1 - expected[t][0], expected[t][1])
    assert compare(wrong, got, cfg) == [f"cycle {t}: done expected {1 - expected[t][0]}, "
                                        f"got {expected[t][0]}"]


@pytest.mark.cosim
def test_sv_macro_rejects_table_of_other_macro(bench):
    """Tables drawn for another geometry stop the simulation ($fatal) instead of being
    read misaligned."""
    proc = run_bench(bench["binary"], "wrong_table", bench["stims"]["ideal"],
                     [f"+sbnn_mismatch_k0={BUILD / 'tables' / 'k1'}"])
    assert proc.returncode != 0
    assert "sbnn_macro_k0: mismatch table" in proc.stdout + proc.stderr


def test_mismatch_files_format(tmp_path):
    cfg, table = CONFIGS[1], _random_table(CONFIGS[1], 5, 9)
    paths = write_mismatch_files(table, tmp_path)
    assert [p.name for p in paths] == ["mismatch.params.hex", "mismatch.cell.hex",
                                       "mismatch.row_gain.hex", "mismatch.adc_offset.hex"]
    words = [[int(w, 16) for w in p.read_text().splitlines()[1:]] for p in paths]
    assert words == [[5, cfg.macro_rows, cfg.macro_cols, cfg.active_rows],
                     [v for row in table.cell for v in row], list(table.row_gain),
                     [v & 0xFFFF_FFFF for v in table.adc_offset]]
    with pytest.raises(ValueError, match="frac_bits"):
        write_mismatch_files(MismatchTable.of(15, table.cell, table.row_gain,
                                              table.adc_offset), tmp_path)


# ---------------------------------------------------------------- lint and ports

_PORT = re.compile(r"^\s*(input|output)\s+(?:wire\s+)?(?:\[(\d+):0\]\s*)?([\w$\\]+)\s*[,;]?\s*$",
                   re.M)


def _ports(text: str, module: str) -> set[tuple[str, str, int]]:
    body = text[text.index(f"module {module}"):]
    body = body[:body.index("endmodule")]
    return {(name, d, int(msb) + 1 if msb else 1) for d, msb, name in _PORT.findall(body)}


@pytest.mark.cosim
@pytest.mark.parametrize("k", range(len(CONFIGS)))
def test_macro_sv_lints_clean_with_macro_ports(verilator, k, tmp_path):
    cfg, path = CONFIGS[k], tmp_path / "sbnn_macro.sv"
    path.write_text(text := macro_sv(cfg))
    proc = lint([path], "sbnn_macro", wall=True)  # gen/lint.py: -Wall with its waivers
    assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr
    assert _ports(text, "sbnn_macro") == set(macro_port_list(cfg))


@pytest.mark.cosim
def test_sim_top_lints_clean_with_simtop_ports(verilator):
    cfg = CONFIGS[TOP_K]
    out = BUILD / "sim_top"
    out.mkdir(parents=True, exist_ok=True)
    files = {"sbnn_controller.v": _controller_verilog(), "sbnn_macro.sv": macro_sv(cfg),
             "sbnn_sim_top.sv": sim_top_sv(cfg)}
    for name, text in files.items():
        (out / name).write_text(text)
    proc = lint([out / n for n in files], "sbnn_sim_top", wall=True)
    assert proc.returncode == 0 and "%Warning" not in proc.stderr, proc.stderr
    amaranth = verilog.convert(SimTop(cfg), name="sbnn_sim_top", emit_src=False)
    reference = _ports(amaranth, "sbnn_sim_top")
    assert len(reference) > 20 and any(n.startswith("probe__") for n, _d, _w in reference)
    assert _ports(files["sbnn_sim_top.sv"], "sbnn_sim_top") == reference
    assert set(sim_top_ports(cfg)) == reference
