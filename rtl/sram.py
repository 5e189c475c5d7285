"""SRAM macros for the controller's large stores (``sram_min_bits``).

A store whose read is registered (the threshold store, the first layer's kept sums) reads as
an SRAM macro does, so it can be one without changing any cycle. :class:`SramSpec` is the
macro's geometry and port list; :class:`SramMacro` is the store's memory, which elaborates
either to an ``Instance`` of the macro's module (the tapeout Verilog: a black box there,
``gen/verilog.py`` writes its stub and its behavioral model) or to an Amaranth ``Memory``
of exactly the model's behaviour (Amaranth simulation).

Every macro is 1R1W (one write port and one read port, one clock), the same for each:

* ``we`` (``lanes`` bits): lane ``l`` writes bits ``l * lane_bits ..`` of word ``waddr``
  with those of ``wdata`` at the clock edge;
* ``re``, ``raddr``, ``rdata``: at the clock edge with ``re`` high, ``rdata`` takes word
  ``raddr`` as it was before that edge's write (read-first: a write to the word read in
  the same cycle shows in the next read); with ``re`` low it holds;
* every word and ``rdata`` start at 0; there is no reset (a reset keeps the memories).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import ClockSignal, Instance, Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["SramSpec", "SramMacro", "SRAM_PREFIX"]

#: Module names of the SRAM macros: ``sbnn_sram_<store>_<words>x<word_bits>``.
SRAM_PREFIX = "sbnn_sram"


@dataclass(frozen=True)
class SramSpec:
    """One store's SRAM macro: ``words`` words of ``word_bits`` bits, written in ``lanes``
    lanes of ``word_bits // lanes`` bits."""

    store: str
    words: int
    word_bits: int
    lanes: int = 1
    #: The controller submodule that holds the macro (as submodule ``sram``), when it is
    #: not named ``store``: the image's row codes live in the activation buffers.
    owner: str = ""

    @property
    def submodule(self) -> str:
        return self.owner or self.store

    @property
    def module(self) -> str:
        return f"{SRAM_PREFIX}_{self.store}_{self.words}x{self.word_bits}"

    @property
    def bits(self) -> int:
        return self.words * self.word_bits

    @property
    def lane_bits(self) -> int:
        return self.word_bits // self.lanes

    @property
    def addr_bits(self) -> int:
        return max(1, ceil_log2(self.words))

    def ports(self) -> list[tuple[str, str, int]]:
        """(name, direction seen from the macro, width), clock first."""
        return [("clk", "input", 1), ("we", "input", self.lanes),
                ("waddr", "input", self.addr_bits), ("wdata", "input", self.word_bits),
                ("re", "input", 1), ("raddr", "input", self.addr_bits),
                ("rdata", "output", self.word_bits)]

    def to_dict(self) -> dict:
        return {"store": self.store, "submodule": self.submodule, "module": self.module,
                "words": self.words,
                "word_bits": self.word_bits, "bits": self.bits, "write_lanes": self.lanes,
                "lane_bits": self.lane_bits, "kind": "1R1W",
                "read": "registered, 1 cycle, read-first, held while re is low",
                "init": "all zero, no reset",
                "ports": [{"name": n, "direction": d, "width": w} for n, d, w in self.ports()]}


class SramMacro(wiring.Component):
    """The macro's ports, seen from the store (all In but ``rdata``); ``instance``: an
    ``Instance`` of ``spec.module`` (tapeout Verilog), else an Amaranth ``Memory``."""

    def __init__(self, spec: SramSpec, instance: bool):
        self._spec = spec
        self._instance = instance
        super().__init__({
            "we": In(spec.lanes), "waddr": In(spec.addr_bits), "wdata": In(spec.word_bits),
            "re": In(1), "raddr": In(spec.addr_bits), "rdata": Out(spec.word_bits)})

    def elaborate(self, platform):
        spec = self._spec
        m = Module()
        if self._instance:
            m.submodules.macro = Instance(
                spec.module, i_clk=ClockSignal(), i_we=self.we, i_waddr=self.waddr,
                i_wdata=self.wdata, i_re=self.re, i_raddr=self.raddr, o_rdata=self.rdata)
            return m
        m.submodules.memory = memory = Memory(shape=spec.word_bits, depth=spec.words, init=[])
        write = memory.write_port(granularity=spec.lane_bits if spec.lanes > 1 else None)
        read = memory.read_port()  # registered, not transparent: read-first
        m.d.comb += [write.addr.eq(self.waddr), write.data.eq(self.wdata),
                     write.en.eq(self.we), read.addr.eq(self.raddr), read.en.eq(self.re),
                     self.rdata.eq(read.data)]
        return m
