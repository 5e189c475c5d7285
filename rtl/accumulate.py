"""The retire side: the context of the evaluation in flight, the accumulators its ADC
codes are added to, and the threshold stage the cycle after a column block's last codes.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sbnn.config import SbnnConfig

from .interfaces import (
    HeldReadSignature,
    HiddenWriteSignature,
    IndexShapes,
    IssueSignature,
    RegisteredReadSignature,
    RetireSignature,
    ScoreSignature,
    StageSignature,
    ThresholdAddress,
    WriteSignature,
)

__all__ = ["InFlight", "Accumulator", "ThresholdStage"]


def _stored_address(cfg: SbnnConfig) -> range:
    """Address of the first layer's stored accumulators (see stores.AccumulatorStore)."""
    return range(max(2, cfg.col_blocks(0)))


def _accumulator_word(cfg: SbnnConfig) -> data.ArrayLayout:
    return data.ArrayLayout(signed(cfg.acc_bits), cfg.neurons_per_tile)


class InFlight(wiring.Component):
    """The retire context of the step in flight, from its ``start`` until it retires: an
    evaluation when the macro is ``done``, ``macro_latency`` cycles later; a rethreshold
    step (``context.rethreshold``: no macro evaluation) the cycle after its start.

    One entry suffices: the sequencer starts a step only when none is in flight or in the
    cycle the one in flight retires. Ports: ``issue`` (from the sequencer), ``done`` (the
    macro's codes arrive), ``clear`` (a new image: nothing is in flight), ``busy`` (a step
    is in flight), ``retire`` (the step in flight retires now, with its context).
    """

    def __init__(self, cfg: SbnnConfig):
        super().__init__({"issue": In(IssueSignature(cfg)), "done": In(1), "clear": In(1),
                          "busy": Out(1), "retire": Out(RetireSignature(cfg))})

    def elaborate(self, platform):
        m = Module()
        rethreshold = Signal(name="rethreshold_in_flight")  # retires now, with no codes
        m.d.comb += self.retire.done.eq(self.done | rethreshold)
        with m.If(self.issue.start):
            m.d.sync += [self.busy.eq(1), self.retire.context.eq(self.issue.context),
                         rethreshold.eq(self.issue.context.rethreshold)]
        with m.Elif(self.retire.done):
            m.d.sync += [self.busy.eq(0), rethreshold.eq(0)]
        with m.If(self.clear):
            m.d.sync += [self.busy.eq(0), rethreshold.eq(0)]
        return m


class Accumulator(wiring.Component):
    """Adds each evaluation's ADC codes of its plane to the column block's accumulators.

    On ``retire.done``, accumulator i gets code ``adc[plane * neurons_per_tile + i]`` added to
    itself, or, on the block's first evaluation, to 0 (``resume``: to the stored
    first-layer sum); a rethreshold step adds no code to the stored sum. After the block's
    last evaluation (or its rethreshold) the sums go to the threshold stage
    (``stage.pending`` for one cycle). Ports: ``retire`` (the step retiring and its
    context), ``adc`` (the macro's codes), ``clear`` (a new image: no stage pending),
    ``stored`` (read of the first layer's stored sums), ``stage``.

    The stored sums are read (a registered read) in the cycle the step starts: ``fetch``
    (in) is the column block of the step starting (``fetch_en``); the read register holds
    them until its codes arrive, ``macro_latency`` cycles later (a rethreshold step's: the
    next cycle), since no step starts before the one in flight retires.
    """

    def __init__(self, cfg: SbnnConfig):
        self._cfg = cfg
        super().__init__({
            "retire": In(RetireSignature(cfg)),
            "adc": In(data.ArrayLayout(signed(cfg.adc_bits), cfg.macro_cols)), "clear": In(1),
            "fetch": In(IndexShapes(cfg).col_block), "fetch_en": In(1),
            "stored": Out(HeldReadSignature(_stored_address(cfg), _accumulator_word(cfg))),
            "stage": Out(StageSignature(cfg)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        neurons, context, stage = cfg.neurons_per_tile, self.retire.context, self.stage
        m = Module()
        # The first layer's column block is its global one (the store holds layer 0 only).
        m.d.comb += [self.stored.addr.eq(self.fetch), self.stored.en.eq(self.fetch_en)]
        with m.If(stage.pending):  # the threshold stage takes it in this cycle
            m.d.sync += stage.pending.eq(0)
        # after the clear above: rethreshold steps retire in consecutive cycles
        with m.If(self.retire.done):
            for i in range(neurons):
                code = Mux(context.rethreshold, 0, Array(
                    [self.adc[k * neurons + i] for k in range(cfg.planes)])[context.plane])
                start = Mux(context.resume, self.stored.data[i], 0)
                m.d.sync += stage.acc[i].eq(Mux(context.first, start, stage.acc[i]) + code)
            with m.If(context.last):
                m.d.sync += [stage.pending.eq(1), stage.block.eq(context.block)]
        with m.If(self.clear):
            m.d.sync += stage.pending.eq(0)
        return m


class ThresholdStage(wiring.Component):
    """A column block's sums against its thresholds, in the cycle ``stage.pending``.

    Hidden layer: activation ``sum >= theta`` (+1, else -1) to ``hidden_write``. Output
    layer: ``logits[j] = sum - theta`` registered (they hold until the next pass writes
    them), and the block's logits to ``scores`` (the exit decision's tournament starts on
    them in this cycle). First layer: the sums to ``stored`` (the next pass resumes from
    them). ``layer_ready``: a hidden layer's last block is written (the next layer may
    start); ``pass_done``: the output layer's last block is (the exit decision follows).

    The threshold store's read is registered, so the block's thresholds are fetched the
    cycle before, when its last step retires: ``fetch`` (in) is the global column block
    retiring now and ``pass_`` (in) the pass being run; ``thresholds.addr`` is the word of
    the two, and ``thresholds.data`` in the stage cycle is that word.
    """

    def __init__(self, cfg: SbnnConfig):
        self._cfg = cfg
        threshold_word = data.ArrayLayout(signed(cfg.threshold_bits), cfg.neurons_per_tile)
        shapes = IndexShapes(cfg)
        super().__init__({
            "stage": In(StageSignature(cfg)),
            "pass_": In(shapes.plane), "fetch": In(shapes.global_col_block),
            "thresholds": Out(RegisteredReadSignature(ThresholdAddress(cfg), threshold_word)),
            "stored": Out(WriteSignature(_stored_address(cfg), _accumulator_word(cfg))),
            "hidden_write": Out(HiddenWriteSignature(cfg)),
            "logits": Out(data.ArrayLayout(signed(cfg.threshold_bits), cfg.num_classes)),
            "scores": Out(ScoreSignature(cfg)),
            "layer_ready": Out(1), "pass_done": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        neurons, stage, block = cfg.neurons_per_tile, self.stage, self.stage.block
        m = Module()
        m.d.comb += [self.thresholds.addr.pass_.eq(self.pass_),
                     self.thresholds.addr.col_block.eq(self.fetch)]
        above = [Signal(signed(cfg.threshold_bits), name=f"above{i}") for i in range(neurons)]
        m.d.comb += [above[i].eq(stage.acc[i] - self.thresholds.data[i])
                     for i in range(neurons)]
        output_layer = Signal()
        m.d.comb += [
            output_layer.eq(block.layer == cfg.num_layers - 1),
            self.stored.addr.eq(block.col_block), self.stored.data.eq(stage.acc),
            self.stored.en.eq(stage.pending & (block.layer == 0)),
            self.hidden_write.en.eq(stage.pending & ~output_layer),
            self.hidden_write.buffer.eq(block.layer[0]),
            self.hidden_write.col_block.eq(block.col_block),
            self.hidden_write.activations.eq(Cat(*[v >= 0 for v in above])),
            self.scores.en.eq(stage.pending & output_layer),
            self.scores.col_block.eq(block.col_block),
            *[self.scores.values[i].eq(above[i]) for i in range(neurons)],
        ]
        with m.If(stage.pending & output_layer):
            for j in range(cfg.num_classes):
                with m.If(block.col_block == j // neurons):
                    m.d.sync += self.logits[j].eq(above[j % neurons])
        with m.If(stage.pending & block.layer_end):
            m.d.comb += [self.layer_ready.eq(~output_layer), self.pass_done.eq(output_layer)]
        return m
