"""Behavioral model of the SRAM compute-in-memory macro (simulation only, never taped out).

It stands in for the analog array the way cocotb's analog_model example stands in for an
ADC: exact integer behaviour with the non-idealities that matter to the digital side
(ADC quantization by a power-of-two step and saturation to ``adc_bits``), and the fixed
latency the controller must respect.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from sbnn.config import SbnnConfig

from .interfaces import macro_signature

__all__ = ["BehavioralMacro", "tree_sum"]


def tree_sum(terms):
    """Balanced adder tree: keeps widths at log2(len) growth instead of a linear chain."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


class BehavioralMacro(wiring.Component):
    """R x C bitcells in word-line groups of ``active_rows``; one evaluation at a time.

    Cycle ``I`` (start): inputs latched, bitcell group read. Cycle ``I+1``: product sums,
    gain, ADC; codes registered. Cycle ``I+L``: ``done`` with the codes on ``adc``.
    Disabled columns read 0.
    """

    def __init__(self, config: SbnnConfig):
        self._cfg = config
        super().__init__({"bus": In(macro_signature(config))})

    @property
    def config(self) -> SbnnConfig:
        return self._cfg

    def elaborate(self, platform):
        cfg = self._cfg
        a, c, lat = cfg.active_rows, cfg.macro_cols, cfg.macro_latency
        bus = self.bus
        m = Module()

        m.submodules.array = array = Memory(
            shape=data.ArrayLayout(unsigned(c), a), depth=cfg.wordline_groups, init=[])
        wr = array.write_port(granularity=1)
        rd = array.read_port()
        m.d.comb += [
            wr.addr.eq(bus.wr_group),
            wr.data.as_value().eq(bus.wr_data.replicate(a)),
            wr.en.eq(Mux(bus.wr_en, Const(1, a) << bus.wr_row, 0)),
            rd.addr.eq(bus.group),
            rd.en.eq(bus.start),
        ]

        row_x = Signal.like(bus.row_x)
        gain = Signal.like(bus.gain)
        col_en = Signal.like(bus.col_en)
        shift = Signal.like(bus.adc_shift)
        with m.If(bus.start):
            m.d.sync += [row_x.eq(bus.row_x), gain.eq(bus.gain), col_en.eq(bus.col_en),
                         shift.eq(bus.adc_shift)]

        # cnt == lat in cycle I+1 (codes computed), == 1 in cycle I+L (done).
        cnt = Signal(range(lat + 1))
        with m.If(bus.start):
            m.d.sync += cnt.eq(lat)
        with m.Elif(cnt != 0):
            m.d.sync += cnt.eq(cnt - 1)

        codes = Signal(data.ArrayLayout(signed(cfg.adc_bits), c))
        for col in range(c):
            column = [Mux(rd.data[r][col], row_x[r], -row_x[r]) for r in range(a)]
            total = Signal(signed(cfg.x_bits + cfg.gain_bits + a.bit_length() + 2),
                           name=f"sum{col}")
            m.d.comb += total.eq(tree_sum(column) * gain)
            q = Signal(signed(total.shape().width), name=f"q{col}")
            m.d.comb += q.eq(total >> shift)
            sat = Mux(q > cfg.adc_max, cfg.adc_max, Mux(q < cfg.adc_min, cfg.adc_min, q))
            with m.If(cnt == lat):
                m.d.sync += codes[col].eq(Mux(col_en[col], sat, 0))

        m.d.comb += [bus.done.eq(cnt == 1), bus.adc.eq(codes)]
        return m
