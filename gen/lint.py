"""Verilator lint of the generated Verilog, with every waiver explained."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sbnn.toolchain import setup_toolchain

__all__ = ["VERILATOR_WAIVERS", "VERILATOR_WALL_WAIVERS", "lint", "waiver_flags"]

#: Warnings waived for Amaranth/Yosys-generated Verilog, and why each is harmless.
VERILATOR_WAIVERS: dict[str, str] = {
    "WIDTHEXPAND": "Yosys write_verilog relies on Verilog's context-determined widths "
                   "(operands are zero/sign-extended exactly as the RTLIL cell specifies).",
    "WIDTHTRUNC": "Yosys emits part-selects as full-width shifts assigned to narrower wires; "
                  "the truncation is the intended slice.",
    "CASEINCOMPLETE": "Yosys emits casez without default after assigning the default value "
                      "at the top of the same always block.",
}

#: Further warnings waived only under -Wall (style checks off by default), and why.
VERILATOR_WALL_WAIVERS: dict[str, str] = {
    "UNUSEDSIGNAL": "Amaranth adds a named wire per struct field and array element for "
                    "debugging, and Yosys keeps temporaries of which only a slice is read.",
    "PROCASSINIT": "Amaranth declares each register with its reset value as initializer and "
                   "also assigns that value on rst; simulators need the former, flows ignore it.",
    "DECLFILENAME": "Amaranth writes a top's whole hierarchy into one file named after the "
                    "top, and the macro stub's file is named *_stub so no tool mistakes it "
                    "for the real macro views.",
}


def waiver_flags(wall: bool = False) -> list[str]:
    names = [*VERILATOR_WAIVERS, *(VERILATOR_WALL_WAIVERS if wall else ())]
    return [f"-Wno-{name}" for name in names]


def lint(files: list[Path], top: str, wall: bool = False) -> subprocess.CompletedProcess:
    """Run ``verilator --lint-only`` (with the waivers; ``wall`` adds -Wall and its waivers)
    and return the finished process."""
    exe = setup_toolchain()
    cmd = [exe, "--lint-only", *(["-Wall"] if wall else []), *waiver_flags(wall),
           "--top-module", top, *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True)
