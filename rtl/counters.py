"""The per-inference counters that the result reports."""

from __future__ import annotations

from amaranth.hdl import Module
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
        with m.If(evaluation.start):
            m.d.sync += [
                self.macro_evals.eq(self.macro_evals + 1),
                self.column_evals.eq(self.column_evals + tree_sum(list(evaluation.col_en))),
                self.dac_conversions.eq(self.dac_conversions + tree_sum(
                    [evaluation.row_x[r].any() for r in range(rows)])),
            ]
        with m.If(self.run):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self.clear):
            m.d.sync += [self.cycles.eq(0), self.macro_evals.eq(0), self.column_evals.eq(0),
                         self.dac_conversions.eq(0)]
        return m
