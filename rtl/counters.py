"""The per-inference counters that the result reports."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sbnn.config import SbnnConfig

from .interfaces import EvaluationSignature, Sizes
from .macro import tree_sum

__all__ = ["Counters", "ParallelCounters"]


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


class ParallelCounters(wiring.Component):
    """:class:`Counters` for N macro buses: the starts of a cycle are counted
    together (macro evaluations in the start cycle, columns and driven rows the cycle
    after, from registers, as the one-macro counters do)."""

    def __init__(self, cfg: SbnnConfig):
        count = Sizes(cfg).count_bits
        super().__init__({"evaluation": In(EvaluationSignature(cfg)).array(cfg.num_macros),
                          "run": In(1), "clear": In(1), "cycles": Out(32),
                          "macro_evals": Out(count), "column_evals": Out(count),
                          "dac_conversions": Out(count)})

    def elaborate(self, platform):
        m = Module()
        columns, driven, starts, held = [], [], [], []
        for j, evaluation in enumerate(self.evaluation):
            rows = evaluation.row_x.shape().length
            col = Signal(len(evaluation.col_en), name=f"counted_columns{j}")
            row = Signal(rows, name=f"counted_rows{j}")
            # A macro that does not start counts nothing in the next cycle.
            m.d.sync += [col.eq(Mux(evaluation.start, evaluation.col_en, 0)),
                         row.eq(Mux(evaluation.start,
                                    Cat(*[evaluation.row_x[r].any() for r in range(rows)]),
                                    0))]
            columns.extend(col)
            driven.extend(row)
            held += [col, row]
            starts.append(evaluation.start)
        m.d.sync += [self.macro_evals.eq(self.macro_evals + tree_sum(starts)),
                     self.column_evals.eq(self.column_evals + tree_sum(columns)),
                     self.dac_conversions.eq(self.dac_conversions + tree_sum(driven))]
        with m.If(self.run):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self.clear):
            m.d.sync += [self.cycles.eq(0), self.macro_evals.eq(0), self.column_evals.eq(0),
                         self.dac_conversions.eq(0),
                         *[s.eq(0) for s in held]]
        return m
