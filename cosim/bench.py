"""The per-cycle bench: driver and monitor of the controller's ports.

Laid out after cocotb's matrix_multiplier example: the driver (reset, ``prog`` words and
pixel beats) and the monitor (macro probe ports, result stream) live here as a library; the
golden model (golden/hwpath.py) is the reference and cosim/scoreboard.py compares in order;
the cocotb tests (tb_inference, tb_variability, tb_protocol) only combine them.

One coroutine does everything on the falling clock edge: it samples what the design shows
in that cycle and drives what the next rising edge takes, so Python wakes once per cycle.

What a test runs (config, model, images, budgets, report path) is in cosim/job_file.py.
"""

from __future__ import annotations

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from sbnn.config import SbnnConfig
from sbnn.rtl.interfaces import ProgOp, Sizes

from .codec import Codec

__all__ = ["start_clock", "Bench", "PROBE_NAMES"]

#: The macro probe ports the monitor samples (``probe__<name>`` on the simulation top).
PROBE_NAMES = ("start", "group", "row_x", "gain", "col_en", "done", "adc")


def start_clock(dut, cfg: SbnnConfig) -> None:
    """The design's clock at the config's frequency (period rounded to the picosecond)."""
    cocotb.start_soon(Clock(dut.clk, round(1000.0 / cfg.clock_mhz, 3), unit="ns").start())


class Bench:
    """Driver and monitor of the simulation top, one falling clock edge per call to
    :meth:`tick`. ``cycle`` counts the falling edges since the start of the test."""

    def __init__(self, dut, cfg: SbnnConfig):
        self.dut = dut
        self.cfg = cfg
        self.codec = Codec(cfg)
        self.fall = FallingEdge(dut.clk)
        self.cycle = 0
        self.probes = {name: getattr(dut, f"probe__{name}") for name in PROBE_NAMES}
        self.trace_port = dut.probe_trace
        sizes = Sizes(cfg)
        self.layer_bits, self.plane_bits = sizes.layer_bits, sizes.plane_bits

    async def tick(self) -> None:
        await self.fall
        self.cycle += 1

    async def reset(self) -> None:
        dut = self.dut
        dut.rst.value = 1
        for name in ("prog__valid", "pixels__valid", "result__ready"):
            getattr(dut, name).value = 0
        for _ in range(3):
            await self.tick()
        dut.rst.value = 0
        await self.tick()

    # ------------------------------------------------------------------ monitor
    def sample_start(self) -> dict | None:
        """The macro transaction started in this cycle (its context and probe values, no
        cycle yet), or None."""
        probes = self.probes
        if not probes["start"].value:
            return None
        ctx = int(self.trace_port.value)
        lb, pb = self.layer_bits, self.plane_bits
        return {"layer": ctx & ((1 << lb) - 1), "plane": (ctx >> lb) & ((1 << pb) - 1),
                "pass": (ctx >> (lb + pb)) & ((1 << pb) - 1),
                "tile": int(probes["group"].value), "gain": int(probes["gain"].value),
                "col_en": int(probes["col_en"].value),
                "row_x": self.codec.row_x(int(probes["row_x"].value))}

    def sample_done(self) -> tuple[int, ...] | None:
        """The ADC codes of the transaction done in this cycle, or None."""
        if not self.probes["done"].value:
            return None
        return self.codec.adc(int(self.probes["adc"].value))

    # ------------------------------------------------------------------ driver
    async def program(self, ops: list[tuple[ProgOp, int, int]], limit: int = 10_000) -> None:
        dut = self.dut
        for op in ops:
            dut.prog__payload.value = self.codec.prog(*op)
            dut.prog__valid.value = 1
            waited = 0
            while not dut.prog__ready.value:
                waited += 1
                if waited > limit:
                    raise AssertionError(f"prog.ready stayed low for {limit} cycles while "
                                         f"offering {op[0].name} (addr {op[1]})")
                await self.tick()
            await self.tick()  # accepted at the rising edge in between
        dut.prog__valid.value = 0

    async def infer(self, beats: list[int], max_cycles: int) -> tuple[list[dict], dict, int]:
        """Send one image; return the macro transactions, the result, and wall cycles."""
        dut = self.dut
        trace: list[dict] = []
        pending: list[dict] = []
        beat = 0
        compute_cycle = None
        result = None
        dut.result__ready.value = 1
        for _ in range(max_cycles):
            # Values written now are what the coming rising edge takes.
            if compute_cycle is None:
                dut.pixels__valid.value = 1
                dut.pixels__payload.value = beats[beat]
                if dut.pixels__ready.value:
                    beat += 1
                    if beat == len(beats):
                        compute_cycle = -1  # compute starts in the next cycle
            else:
                if compute_cycle == 0:
                    dut.pixels__valid.value = 0
                started = self.sample_start()
                if started is not None:
                    pending.append({"cycle": compute_cycle} | started)
                adc = self.sample_done()
                if adc is not None:
                    tx = pending.pop(0) if pending else {"cycle": compute_cycle}
                    tx["adc"] = adc
                    trace.append(tx)
                if dut.result__valid.value:
                    result = self.codec.result(int(dut.result__payload.value))
                    await self.tick()  # handshake completes at this rising edge
                    dut.result__ready.value = 0
                    break
            await self.tick()
            if compute_cycle is not None:
                compute_cycle += 1
        if result is None:
            last = {k: trace[-1][k] for k in ("cycle", "layer", "tile", "plane")} \
                if trace else None
            raise AssertionError(f"no result within {max_cycles} cycles: {len(trace)} macro "
                                 f"transactions seen, last {last}, {len(pending)} started "
                                 f"without done")
        return trace, result, compute_cycle
