"""Verilator lint of the generated Verilog, with every waiver explained."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sbnn.toolchain import setup_toolchain

__all__ = ["VERILATOR_WAIVERS", "lint"]

#: Warnings waived for Amaranth/Yosys-generated Verilog, and why each is harmless.
VERILATOR_WAIVERS: dict[str, str] = {
    "WIDTHEXPAND": "Yosys write_verilog relies on Verilog's context-determined widths "
                   "(operands are zero/sign-extended exactly as the RTLIL cell specifies).",
    "WIDTHTRUNC": "Yosys emits part-selects as full-width shifts assigned to narrower wires; "
                  "the truncation is the intended slice.",
    "CASEINCOMPLETE": "Yosys emits casez without default after assigning the default value "
                      "at the top of the same always block.",
}


def waiver_flags() -> list[str]:
    return [f"-Wno-{name}" for name in VERILATOR_WAIVERS]


def lint(files: list[Path], top: str, wall: bool = False) -> subprocess.CompletedProcess:
    """Run ``verilator --lint-only`` (with the waivers) and return the finished process."""
    exe = setup_toolchain()
    cmd = [exe, "--lint-only", *(["-Wall"] if wall else []), *waiver_flags(),
           "--top-module", top, *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True)
