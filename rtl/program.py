"""The ``prog`` stream's decoder: bitcell, threshold and column-enable writes, and the
BUDGET and EXIT_MARGIN registers."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sbnn.config import SbnnConfig

from .interfaces import (
    IndexShapes,
    ProgOp,
    Sizes,
    ThresholdWriteSignature,
    WeightWriteSignature,
    WriteSignature,
    prog_layout,
    stream_of,
)

__all__ = ["ProgramDecoder", "clamp_to_supports"]


def clamp_to_supports(m: Module, cfg: SbnnConfig, value: Value, name: str) -> Value:
    """``value`` limited to K = num_supports (a budget), as a Signal named ``name``; the
    value itself when its width cannot exceed K."""
    if (1 << len(value)) - 1 <= cfg.num_supports:
        return value
    clamped = Signal(IndexShapes(cfg).plane, name=name)
    m.d.comb += clamped.eq(Mux(value > cfg.num_supports, cfg.num_supports, value))
    return clamped


class ProgramDecoder(wiring.Component):
    """Takes ``prog`` ops while ``enable`` is high and turns each into one write.

    Ports: ``prog`` (the op stream; ``ready`` = ``enable``), ``enable`` (between images,
    before an image's first beat is taken), ``weight_write`` (a bitcell row, to the macro),
    ``threshold_write`` and ``column_enable_write`` (to their stores), ``budget`` (the
    budget of an image whose first beat is taken now: the BUDGET register, or the value a
    BUDGET op taken in this same cycle writes; clamped to K), ``margin`` (the EXIT_MARGIN
    register). A reset restores BUDGET to K and EXIT_MARGIN to all ones (never exit).
    """

    def __init__(self, cfg: SbnnConfig):
        self._cfg = cfg
        sizes = Sizes(cfg)
        super().__init__({
            "prog": In(stream_of(prog_layout(cfg))),
            "enable": In(1),
            "weight_write": Out(WeightWriteSignature(cfg)),
            "threshold_write": Out(ThresholdWriteSignature(cfg)),
            "column_enable_write": Out(WriteSignature(sizes.addr_bits, cfg.macro_cols)),
            "budget": Out(IndexShapes(cfg).plane),
            "margin": Out(sizes.margin_bits, init=(1 << sizes.margin_bits) - 1),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        sizes = Sizes(cfg)
        op = self.prog.payload
        m = Module()
        budget_register = Signal(IndexShapes(cfg).plane, init=cfg.num_supports)
        written_budget = clamp_to_supports(m, cfg, op.data, "written_budget")
        taken = Signal()
        m.d.comb += [self.prog.ready.eq(self.enable), taken.eq(self.prog.valid & self.enable)]
        # An op taken with an image's first beat applies to that image, BUDGET included.
        m.d.comb += self.budget.eq(Mux(taken & (op.op == ProgOp.BUDGET), written_budget,
                                       budget_register))
        with m.If(taken):
            with m.Switch(op.op):
                with m.Case(ProgOp.WEIGHT_ROW):
                    m.d.comb += [self.weight_write.en.eq(1),
                                 self.weight_write.group.eq(op.addr[sizes.row_bits:]),
                                 self.weight_write.row.eq(op.addr[:sizes.row_bits]),
                                 self.weight_write.data.eq(op.data[:cfg.macro_cols])]
                with m.Case(ProgOp.THRESHOLD):
                    m.d.comb += [
                        self.threshold_write.en.eq(1),
                        self.threshold_write.pass_.eq(
                            op.addr[sizes.nt_bits + sizes.cb_bits:][:sizes.pass_bits]),
                        self.threshold_write.col_block.eq(
                            op.addr[sizes.nt_bits:][:sizes.cb_bits]),
                        self.threshold_write.neuron.eq(op.addr[:sizes.nt_bits]),
                        self.threshold_write.theta.eq(op.data[:cfg.threshold_bits].as_signed())]
                with m.Case(ProgOp.COL_MASK):
                    m.d.comb += [self.column_enable_write.en.eq(1),
                                 self.column_enable_write.addr.eq(op.addr),
                                 self.column_enable_write.data.eq(op.data)]
                with m.Case(ProgOp.BUDGET):
                    m.d.sync += budget_register.eq(written_budget)
                with m.Case(ProgOp.EXIT_MARGIN):
                    m.d.sync += self.margin.eq(op.data)
        return m
