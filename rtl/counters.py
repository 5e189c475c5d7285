"""The per-inference counters that the result reports."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sbnn.config import SbnnConfig

from .interfaces import EvaluationSignature, Sizes
from .macro import tree_sum

__all__ = ["Counters"]


class Counters(wiring.Component):
    """Counts of the image being computed, from ``clear`` (a new image) on.

    ``cycles``: cycles with ``run`` high. On each ``evaluation.start``: ``macro_evals`` + 1,
    ``column_evals`` + the enabled columns (one ADC conversion each), ``dac_conversions`` +
    the rows driven with a nonzero code (a zero code costs no DAC energy).

    The column and row counts are added one cycle after the start: the start registers the
    enabled columns and which rows are nonzero, and the population counts and additions
    run from those registers. The row codes come through the row-block select of the
    activation buffers, so counting them in the start cycle put that select, a 64-input
    population count and a 32-bit addition in one cycle (the controller's worst path at
    100 MHz). The result is read ``macro_latency + 3`` cycles after the last start
    (docs/architecture.md), when every count is complete.
    """

    def __init__(self, cfg: SbnnConfig):
        count = Sizes(cfg).count_bits
        super().__init__({"evaluation": In(EvaluationSignature(cfg)), "run": In(1),
                          "clear": In(1), "cycles": Out(32), "macro_evals": Out(count),
                          "column_evals": Out(count), "dac_conversions": Out(count)})

    def elaborate(self, platform):
        evaluation = self.evaluation
        rows = evaluation.row_x.shape().length
        m = Module()
        # The start's columns and nonzero rows, counted in the next cycle.
        counted = Signal(name="counted")  # the registers below hold an uncounted start
        columns = Signal(len(evaluation.col_en), name="counted_columns")
        driven = Signal(rows, name="counted_rows")
        m.d.sync += counted.eq(evaluation.start)
        with m.If(evaluation.start):
            m.d.sync += [self.macro_evals.eq(self.macro_evals + 1),
                         columns.eq(evaluation.col_en),
                         driven.eq(Cat(*[evaluation.row_x[r].any() for r in range(rows)]))]
        with m.If(counted):
            m.d.sync += [
                self.column_evals.eq(self.column_evals + tree_sum(list(columns))),
                self.dac_conversions.eq(self.dac_conversions + tree_sum(list(driven))),
            ]
        with m.If(self.run):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self.clear):
            m.d.sync += [self.cycles.eq(0), self.macro_evals.eq(0), self.column_evals.eq(0),
                         self.dac_conversions.eq(0), counted.eq(0)]
        return m
