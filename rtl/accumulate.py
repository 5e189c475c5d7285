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
    RetireContext,
    RetireSignature,
    ScoreSignature,
    StageSignature,
    ThresholdAddress,
    WriteSignature,
)

__all__ = ["InFlight", "InFlightQueue", "Accumulator", "ThresholdStage"]


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


class InFlightQueue(wiring.Component):
    """The retire contexts of the steps in flight on one pipelined macro (``macro_interval``
    < ``macro_latency``): a queue of ``ceil(latency / interval)`` entries, retiring in issue
    order (docs/architecture.md, "Parallel and pipelined macros", rules 2, 3 and 5).

    An evaluation retires when the macro is ``done`` (its codes are the head's), a
    rethreshold step the cycle after its start (it is then the only step in flight: it starts
    only when every earlier step has retired). Ports: ``issue``, ``done``, ``clear`` as
    :class:`InFlight`; ``retire`` (the head retires now); ``eval_ready`` (an evaluation may
    start now: ``macro_interval`` cycles since the last macro start); ``drained`` (every step
    in flight retires by now: a rethreshold step may start, and so may the step after one);
    ``fetch``/``fetch_en`` (the first layer's kept sums read: the cycle before an
    evaluation that resumes from them retires, or as a rethreshold step starts, so that a
    later block's start cannot overwrite the read register while the step is in flight).
    """

    def __init__(self, cfg: SbnnConfig):
        self._cfg = cfg
        super().__init__({"issue": In(IssueSignature(cfg)), "done": In(1), "clear": In(1),
                          "eval_ready": Out(1), "drained": Out(1),
                          "retire": Out(RetireSignature(cfg)),
                          "fetch": Out(IndexShapes(cfg).col_block), "fetch_en": Out(1)})

    def elaborate(self, platform):
        cfg = self._cfg
        lat, interval, depth = cfg.macro_latency, cfg.interval, cfg.in_flight_per_macro
        m = Module()
        entries = Array(Signal(RetireContext(cfg), name=f"entry{i}") for i in range(depth))
        head = Signal(range(depth), name="head")
        tail = Signal(range(depth), name="tail")
        count = Signal(range(depth + 1), name="count")
        rethreshold = Signal(name="rethreshold_in_flight")  # the only step, retires now
        issue, retire = self.issue, self.retire

        def following(pointer):
            return Mux(pointer == depth - 1, 0, pointer + 1)

        m.d.comb += [retire.done.eq((count != 0) & (self.done | rethreshold)),
                     retire.context.eq(entries[head]),
                     self.drained.eq((count == 0) | ((count == 1) & retire.done))]
        with m.If(issue.start):
            m.d.sync += [entries[tail].eq(issue.context), tail.eq(following(tail)),
                         rethreshold.eq(issue.context.rethreshold)]
        with m.Elif(retire.done):
            m.d.sync += rethreshold.eq(0)
        with m.If(retire.done):
            m.d.sync += head.eq(following(head))
        m.d.sync += count.eq(count + issue.start - retire.done)

        macro_start = Signal(name="macro_start")
        m.d.comb += macro_start.eq(issue.start & ~issue.context.rethreshold)
        # Cycles since the last macro start, saturating at the interval.
        if interval == 1:
            m.d.comb += self.eval_ready.eq(1)
        else:
            since = Signal(range(interval + 1), name="since_start", init=interval)
            with m.If(macro_start):
                m.d.sync += since.eq(1)
            with m.Elif(since != interval):
                m.d.sync += since.eq(since + 1)
            m.d.comb += self.eval_ready.eq(since == interval)
            with m.If(self.clear):
                m.d.sync += since.eq(interval)
        # started[k]: a macro evaluation started k + 1 cycles ago; started[lat - 2] retires
        # in the next cycle, and is the head unless the head retires now.
        started = Signal(lat - 1, name="started")
        m.d.sync += started.eq(Cat(macro_start, started[:-1]))
        soon = entries[Mux(retire.done, following(head), head)]
        resumes = Signal(name="resume_soon")
        m.d.comb += resumes.eq(started[lat - 2] & soon.first & soon.resume)
        starting_rethreshold = issue.start & issue.context.rethreshold
        m.d.comb += [
            self.fetch.eq(Mux(starting_rethreshold, issue.context.block.col_block,
                              soon.block.col_block)),
            self.fetch_en.eq(starting_rethreshold | resumes),
        ]
        with m.If(self.clear):
            m.d.sync += [head.eq(0), tail.eq(0), count.eq(0), rethreshold.eq(0),
                         started.eq(0)]
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
