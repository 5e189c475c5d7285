"""Silicon figures: the bundle's controller mapped to a standard-cell library and timed.

Yosys (YoWASP, see gen/synth.py) maps the tapeout bundle's ``sbnn_controller`` to the cells
of a Liberty library, timing-driven: ABC gets the clock period of ``clock_mhz`` as its delay
target and a driver/load constraint, which turns on its buffering and gate sizing, so
high-fanout nets get buffer trees as a placement-free flow can give them. OpenSTA (``sta``,
Debian package ``opensta``) then reads the netlist with the standard cells and the bundle's
placeholder macro .lib and runs the bundle's own SDC. Synthesis only: no placement, no wires,
typical corner; the figures are what a chip team gets before floorplanning.

The library comes from ``--liberty``, else ``SBNN_LIBERTY``, else the one in
``../shared/pdk`` beside the repository (:func:`resolve_liberty`).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sbnn.config import SbnnConfig
from sbnn.gen.bundle import BUNDLE_FILES, sdc_text, sram_files, verilog_ports
from sbnn.gen.macro_views import lib_text, sram_area_um2, sram_lib_text
from sbnn.gen.synth import SynthError, run_yosys
from sbnn.gen.verilog import CONTROLLER_TOP, macro_stub, top_verilog
from sbnn.rtl.stores import sram_macros

__all__ = ["LIBERTY_ENV", "LibertyError", "SiliconResult", "resolve_liberty", "yosys_script",
           "sta_script", "parse_sta", "synthesize_silicon", "sequential_cells", "sta_path"]

LIBERTY_ENV = "SBNN_LIBERTY"
#: The project's shared PDK folder: ../shared/pdk beside the repository.
SHARED_PDK = Path(__file__).resolve().parents[1].parent / "shared" / "pdk"
#: Cells a tapeout flow does not use as ordinary logic: the SKY130 low-power-flow isolation
#: cells (ABC and dfflibmap would otherwise pick them as gates and latches).
DONT_USE = "*lpflow*"
#: Enable flip-flops (sky130 edfxtp), kept out of the mapping: see yosys_script.
NO_ENABLE_FF = "*__edf*"
#: ABC's constraint for buffering and sizing: what drives every ABC input (a flip-flop output
#: or a port) and the load on every ABC output, as OpenLane sets them for SKY130 hd
#: (inv_2 driver; SYNTH_CAP_LOAD 33.442 fF, about four inv_2 inputs).
ABC_DRIVER = "sky130_fd_sc_hd__inv_2"
ABC_LOAD_FF = 33.442
#: Assumed switching activity (toggles per clock cycle) of every non-clock net, for power.
TOGGLE_RATE = 0.1
# Names inside the work folder (YoWASP sees only the folder it runs in and below).
_STD_LIB, _NETLIST, _STAT, _MEMS = "std.lib", "net.v", "stat.json", "mems.json"


class LibertyError(ValueError):
    """No usable Liberty library: the message says which option or variable to set."""


@dataclass(frozen=True)
class SiliconResult:
    config: str  # the config's name (file stem, or "default")
    liberty: str  # library file name
    clock_mhz: float
    area_um2: float  # every mapped cell (SRAM macros' placeholder area included when used)
    logic_area_um2: float  # standard cells only: the logic that stays in the controller
    sequential_area_um2: float
    cells: int  # standard cells, black boxes not counted
    flip_flops: int
    memory_bits: int  # register-file bits in flip-flops (thresholds, column masks, sums)
    sram_bits: int  # register-file bits held in SRAM macros instead (sram_min_bits)
    wns_ns: float  # worst setup slack (negative: violated)
    tns_ns: float  # total negative setup slack
    whs_ns: float  # worst hold slack
    fmax_mhz: float
    critical_path: dict  # startpoint, endpoint, arrival, required, slack, stages
    black_boxes: dict[str, int]
    max_slew_violations: int
    power_mw: float  # at TOGGLE_RATE, ideal clock, no clock gating
    yosys_s: float
    sta_s: float
    cells_by_type: dict[str, int] = field(repr=False)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_liberty(option: str | Path | None, env: dict | None = None) -> Path:
    """The Liberty file: ``option``, else $SBNN_LIBERTY, else the one in ../shared/pdk."""
    env = os.environ if env is None else env
    if option:
        path, source = Path(option), "--liberty"
    elif env.get(LIBERTY_ENV):
        path, source = Path(env[LIBERTY_ENV]), LIBERTY_ENV
    elif SHARED_PDK.is_dir():
        found = sorted(SHARED_PDK.glob("*.lib.gz")) + sorted(SHARED_PDK.glob("*.lib"))
        if len(found) != 1:
            raise LibertyError(f"{SHARED_PDK} holds {len(found)} Liberty files, not one: pass "
                               f"--liberty FILE or set {LIBERTY_ENV}")
        path, source = found[0], str(SHARED_PDK)
    else:
        raise LibertyError(f"no Liberty library: pass --liberty FILE (.lib or .lib.gz), set "
                           f"{LIBERTY_ENV}, or put one in {SHARED_PDK}")
    if not path.is_file():
        raise LibertyError(f"Liberty file {str(path)!r} (from {source}) does not exist")
    return path


def _unpack(liberty: Path, dest: Path) -> None:
    """Copy (gunzip if needed) the library into the work folder: neither tool reads .gz, and
    YoWASP cannot reach files outside the folder it runs in."""
    opener = gzip.open if liberty.suffix == ".gz" else open
    with opener(liberty, "rb") as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)


def _bundle_sources(cfg: SbnnConfig, bundle: Path) -> None:
    """The bundle files the flow reads, at their bundle paths, made by the functions
    ``write_bundle`` uses (the simulation top and the image are not needed here)."""
    controller = top_verilog(cfg, CONTROLLER_TOP)
    texts = {"controller": controller, "macro_stub": macro_stub(cfg),
             "sdc": sdc_text(cfg, verilog_ports(controller, CONTROLLER_TOP)),
             "macro_lib": lib_text(cfg)}
    paths = {**BUNDLE_FILES, **sram_files(cfg)}
    for spec in sram_macros(cfg):
        texts[f"sram_lib_{spec.store}"] = sram_lib_text(cfg, spec)
    for role, text in texts.items():
        path = bundle / paths[role]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def sequential_cells(liberty_text: str) -> set[str]:
    """Names of the library's cells that hold state (an ``ff``, ``latch`` or statetable)."""
    names = set()
    starts = [(m.start(), m.group(1)) for m in re.finditer(r'^\s*cell\s*\(\s*"?([\w]+)"?\s*\)',
                                                           liberty_text, re.M)]
    for (pos, name), (end, _) in zip(starts, starts[1:] + [(len(liberty_text), "")]):
        if re.search(r"^\s*(ff|ff_bank|latch|statetable)\s*\(", liberty_text[pos:end], re.M):
            names.add(name)
    return names


def yosys_script(sources: list[str], top: str, period_ps: int) -> str:
    """Read, synthesize flat, map flip-flops and logic to the library, write the netlist."""
    lib = _STD_LIB
    return "\n".join([
        f"read_verilog -sv {' '.join(sources)}",
        f"hierarchy -check -top {top}",
        f"synth -top {top} -flatten -run :fine",
        # Register files are still $mem_v2 cells here; after 'fine' they are flip-flops.
        "select t:$mem_v2", f"write_json -selected {_MEMS}", "select -clear",
        # -noabc: the generic ABC mapping would only be redone by the liberty one below.
        f"synth -top {top} -flatten -noabc -run fine:",
        # No enable flip-flops: an enable pin lies outside ABC's view, so a register file's
        # write enable (hundreds of pins) would stay one unbuffered net; as a mux select in
        # front of a plain flip-flop it is ABC's to buffer. (Placement flows buffer either.)
        f"dfflibmap -dont_use {DONT_USE} -dont_use {NO_ENABLE_FF} -liberty {lib}",
        # -D: delay target (the clock period); -constr turns on ABC's buffering and sizing.
        f"abc -dont_use {DONT_USE} -liberty {lib} -D {period_ps} -constr abc.constr",
        "opt_clean",
        "setundef -zero",
        # OpenSTA 2.0.17 rejects concatenated assigns ({a[3], a[0]} = ...): split the nets.
        "splitnets",
        "opt_clean -purge",
        f"tee -q -o {_STAT} stat -json -liberty {lib}",
        f"write_verilog -noattr {_NETLIST}",
        "",
    ])


def sta_script(macro_libs: list[str], sdc: str, top: str) -> str:
    """OpenSTA: both libraries, the netlist, the bundle's SDC; worst paths and slack sums."""
    return "\n".join([
        f"read_liberty {_STD_LIB}",
        *[f"read_liberty {lib}" for lib in macro_libs],
        f"read_verilog {_NETLIST}",
        f"link_design {top}",
        f"read_sdc {sdc}",
        'puts "=== setup"',
        "report_checks -path_delay max -fields {capacitance slew net} -digits 3",
        'puts "=== hold"',
        "report_checks -path_delay min -digits 3",
        'puts "=== summary"',
        "report_wns -digits 3",
        "report_tns -digits 3",
        "report_worst_slack -digits 3",
        # OpenSTA 2.0.17's report_worst_slack has no -min: ask for the hold slack directly.
        'puts "worst slack min [format %.3f [sta::worst_slack_cmd min]]"',
        # Controller power: every net not a clock toggles at TOGGLE_RATE per cycle (an
        # assumption: no simulation activity is annotated); the clock toggles every cycle.
        f"set_power_activity -global -activity {TOGGLE_RATE}",
        'puts "=== power"',
        "report_power -digits 6",
        'puts "=== violators"',
        "report_check_types -max_transition -all_violators",
        "exit",
        "",
    ])


def _number(pattern: str, text: str, what: str) -> float:
    match = re.search(pattern, text, re.M)
    if match is None:
        raise SynthError(f"OpenSTA output has no {what} (pattern {pattern!r})")
    return float(match.group(1))


def sta_path(report: str) -> dict:
    """Start, end, arrival, required time, slack and cell stages of one report_checks path."""
    start = re.search(r"^Startpoint: (\S+)(?: \((.*)\))?", report, re.M)
    end = re.search(r"^Endpoint: (\S+)(?: \((.*)\))?", report, re.M)
    if start is None or end is None:
        return {}
    # With -fields net, each stage is a pin line "^ inst/Y (cell)" followed by its net line
    # "fanout cap name (net)": the nets name the RTL signals (Yosys keeps public wire names).
    body = report[start.end():report.find("data arrival time")]
    stages = re.findall(r"[\^v] \S+/\S+ \((\S+)\)\s*$", body, re.M)
    nets = re.findall(r"^\s*(\d+)\s+[\d.]+\s+(\S+) \(net\)", body, re.M)
    return {
        "startpoint": start.group(1), "start_kind": start.group(2) or "",
        "endpoint": end.group(1), "end_kind": end.group(2) or "",
        "arrival_ns": _number(r"^\s*([-\d.]+)\s+data arrival time", report, "arrival time"),
        "required_ns": _number(r"^\s*([-\d.]+)\s+data required time", report,
                               "required time"),
        "slack_ns": _number(r"^\s*([-\d.]+)\s+slack", report, "slack"),
        # The clock pin of the launching flip-flop is no stage.
        "stages": max(0, len(stages) - 1), "start_net": nets[0][1] if nets else "",
        "max_fanout": max((int(f) for f, _ in nets), default=0),
        "max_fanout_net": max(nets, key=lambda n: int(n[0]))[1] if nets else "",
    }


def register_of(netlist: str, instance: str) -> str:
    """The net a flip-flop instance drives (its register bit), or '' for a port or a pin."""
    match = re.search(rf"^\s*\w+ {re.escape(instance)} \((.*?)\);", netlist, re.M | re.S)
    q = re.search(r"\.Q\((.*?)\)", match.group(1)) if match else None
    # Yosys writes escaped identifiers (\\ctrl.logit0[6] ): the name is what follows.
    return q.group(1).strip().lstrip("\\") if q else ""


def parse_sta(output: str) -> dict:
    """WNS, TNS, worst hold slack, the worst setup path and violation counts."""
    if "=== summary" not in output:
        raise SynthError("OpenSTA stopped early: " + output.strip()[-1500:])
    setup = output[output.index("=== setup"):output.index("=== hold")]
    tail = output[output.index("=== violators"):]
    return {
        "wns_ns": _number(r"^wns\s+([-\d.eE+]+)", output, "wns"),
        "tns_ns": _number(r"^tns\s+([-\d.eE+]+)", output, "tns"),
        # report_wns clips at 0; the worst slack itself gives Fmax when timing is met.
        "worst_slack_ns": _number(r"^worst slack\s+([-\d.eE+]+)", output, "worst slack"),
        "whs_ns": _number(r"^worst slack min\s+([-\d.eE+]+)", output, "worst hold slack"),
        "critical_path": sta_path(setup),
        "critical_path_report": setup.split("\n", 1)[1].strip(),
        "max_slew_violations": len(re.findall(r"\(VIOLATED\)", tail)),
        # report_power's Total row: internal, switching, leakage, total (W), percent.
        "power_mw": 1e3 * _number(r"^Total\s+\S+\s+\S+\s+\S+\s+([-\d.eE+]+)", output,
                                  "total power"),
    }


def _run_sta(work: Path, script: str) -> str:
    if shutil.which("sta") is None:
        raise RuntimeError("OpenSTA not found: install it (Debian: apt-get install opensta)")
    (work / "sta.tcl").write_text(script)
    proc = subprocess.run(["sta", "-no_splash", "-exit", "sta.tcl"], cwd=work,
                          capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    errors = [ln for ln in out.splitlines() if ln.startswith("Error")]
    if proc.returncode or errors:
        raise SynthError(errors[0] if errors else out.strip()[-1500:])
    return out


def synthesize_silicon(cfg: SbnnConfig, liberty: Path, name: str = "default",
                       keep: Path | None = None) -> tuple[SiliconResult, dict]:
    """Bundle ``cfg``, map it to ``liberty``'s cells and time it with the bundle's SDC.

    Returns the figures and the raw reports (Yosys stat, OpenSTA path texts). ``keep``: copy
    the work folder (netlist, scripts, logs) there.
    """
    period_ps = round(1e6 / cfg.clock_mhz)
    with tempfile.TemporaryDirectory(prefix="sbnn_silicon_") as tmp:
        work = Path(tmp)
        _bundle_sources(cfg, work / "bundle")
        _unpack(liberty, work / _STD_LIB)
        (work / "abc.constr").write_text(f"set_driving_cell {ABC_DRIVER}\n"
                                         f"set_load {ABC_LOAD_FF}\n")
        srcs = [f"bundle/{BUNDLE_FILES[r]}" for r in ("controller", "macro_stub")]
        (work / "silicon.ys").write_text(yosys_script(srcs, CONTROLLER_TOP, period_ps))
        t0 = time.time()
        proc = run_yosys(["-q", "-l", "yosys.log", "-s", "silicon.ys"], work)
        yosys_s = time.time() - t0
        if proc.returncode:
            errors = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                      if ln.startswith("ERROR")]
            raise SynthError(errors[0] if errors else proc.stderr.strip()[-2000:])
        stat = json.loads((work / _STAT).read_text())
        mems = json.loads((work / _MEMS).read_text())
        t0 = time.time()
        libs = [BUNDLE_FILES["macro_lib"],
                *(p for r, p in sram_files(cfg).items() if r.startswith("sram_lib_"))]
        sta_out = _run_sta(work, sta_script([f"bundle/{lib}" for lib in libs],
                                            f"bundle/{BUNDLE_FILES['sdc']}", CONTROLLER_TOP))
        sta_s = time.time() - t0
        (work / "sta.log").write_text(sta_out)
        sta = parse_sta(sta_out)
        netlist = (work / _NETLIST).read_text()
        path = sta["critical_path"]
        for end in ("startpoint", "endpoint"):
            if path.get(end):
                path[end.replace("point", "_register")] = register_of(netlist, path[end])
        seq = sequential_cells((work / _STD_LIB).read_text())
        if keep is not None:
            shutil.copytree(work, keep, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(_STD_LIB))
    return _result(cfg, liberty, name, stat, mems, seq, sta, yosys_s, sta_s), sta


def _result(cfg: SbnnConfig, liberty: Path, name: str, stat: dict, mems: dict, seq: set[str],
            sta: dict, yosys_s: float, sta_s: float) -> SiliconResult:
    design = stat["design"]
    by_type = dict(sorted(design["num_cells_by_type"].items()))
    std = {t: n for t, n in by_type.items() if t.startswith("sky130") or t in seq}
    black = {t: n for t, n in by_type.items() if t not in std and not t.startswith("$")}
    area = float(design.get("area", 0.0))
    seq_area = float(design.get("sequential_area", 0.0))
    # Register files left in flip-flops; those held in SRAM macros are black boxes here.
    srams = sram_macros(cfg)
    sram_bits = sum(spec.bits for spec in srams)
    memory_bits = sum(
        int(c["parameters"]["SIZE"], 2) * int(c["parameters"]["WIDTH"], 2)
        for m in mems["modules"].values() for c in m.get("cells", {}).values()
        if c["type"] == "$mem_v2")
    period = 1000.0 / cfg.clock_mhz
    return SiliconResult(
        config=name, liberty=liberty.name, clock_mhz=cfg.clock_mhz,
        # the SRAM macros at their placeholder area (gen/macro_views.py), the analog macro not
        area_um2=round(area + sum(sram_area_um2(spec) for spec in srams), 2),
        logic_area_um2=round(area, 2),
        sequential_area_um2=round(seq_area, 2), cells=sum(std.values()),
        flip_flops=sum(n for t, n in std.items() if t in seq), memory_bits=memory_bits,
        sram_bits=sram_bits, wns_ns=sta["wns_ns"], tns_ns=sta["tns_ns"], whs_ns=sta["whs_ns"],
        # The period at which the worst setup path would just close, with the SDC's I/O
        # delays and the macro's arcs held as they are.
        fmax_mhz=round(1000.0 / (period - sta["worst_slack_ns"]), 1),
        critical_path=sta["critical_path"], black_boxes=black,
        max_slew_violations=sta["max_slew_violations"], power_mw=round(sta["power_mw"], 3),
        yosys_s=round(yosys_s, 1), sta_s=round(sta_s, 1), cells_by_type=by_type)
