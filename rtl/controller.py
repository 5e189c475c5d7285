"""The digital controller that goes to tapeout.

It loads an image over ``pixels``, then runs *passes* p = 0, 1, .. up to the latency budget.
Pass p adds plane p of the first layer to accumulators kept from the previous passes (its
inputs never change; a block with no enabled plane-p column is rethresholded, its kept sums
against pass p's thresholds), reruns the later layers with planes 0..p (their inputs did
change), each with pass p's thresholds, and checks the output's top-two logit margin: a
confident answer exits early. Every evaluation starts at the cycle the timing contract in
docs/architecture.md gives; the golden model predicts the same cycles from that contract.

The issue side (:class:`~.sequencer.Sequencer`) and the retire side
(:class:`~.accumulate.Accumulator`, fed the context that travels with each evaluation by
:class:`~.accumulate.InFlight`) are decoupled so that the next evaluation starts in the same
cycle the previous one's ADC codes arrive: the macro is never idle inside a layer.

Data flow: ``prog`` -> :class:`~.program.ProgramDecoder` -> bitcells, threshold and
column-enable stores; ``pixels`` -> :class:`~.loader.ImageLoader` -> activation buffers ->
sequencer -> macro -> accumulator -> threshold stage -> hidden buffers (next layer), first-
layer store (next pass) or logits -> :class:`~.exit.ExitDecision` -> ``result``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out

from sbnn.config import SbnnConfig

from .accumulate import Accumulator, InFlight, InFlightQueue, ThresholdStage
from .activations import ActivationBuffers
from .counters import Counters, ParallelCounters
from .exit import ExitDecision
from .interfaces import (
    EvaluationSignature,
    WeightWriteSignature,
    controller_members,
    macro_signature,
    trace_layout,
)
from .loader import ImageLoader
from .parallel import InFlightGroups, ParallelAccumulator, ParallelSequencer
from .program import ProgramDecoder
from .sequencer import Sequencer, pipelined
from .stores import AccumulatorStore, ColumnEnableStore, ThresholdStore

__all__ = ["Controller", "parallel"]


def parallel(config: SbnnConfig) -> bool:
    """Whether the controller has several macro buses (``num_macros`` > 1, rtl/parallel.py);
    one macro keeps the components, and the Verilog, of the one-macro controller."""
    return config.num_macros > 1


#: Macro bus member of each WeightWriteSignature member.
_WEIGHT_WRITE_MEMBERS = {"en": "wr_en", "group": "wr_group", "row": "wr_row",
                         "data": "wr_data"}


class Controller(wiring.Component):
    """Supported-BNN inference controller for one :class:`SbnnConfig`.

    Ports: ``prog`` (in stream), ``pixels`` (in stream), ``result`` (out stream), ``macro``
    (to the analog macro), ``trace`` (layer, plane and pass of the evaluation being started;
    for monitors, may be left unconnected). With ``num_macros`` N > 1 both are arrays, one
    entry per macro (``macro[j]``, ``trace[j]``; rtl/parallel.py).

    ``sram_instances``: the stores that are SRAM macros (``sram_min_bits``) as instances of
    the macros' modules (the tapeout top), else as their Amaranth models (simulation).
    """

    def __init__(self, config: SbnnConfig, sram_instances: bool = False):
        self._cfg = config
        self._sram_instances = sram_instances
        members = controller_members(config)
        if parallel(config):  # macro j's bus is macro[j], its evaluation's context trace[j]
            members["macro"] = Out(macro_signature(config)).array(config.num_macros)
            members["trace"] = Out(data.ArrayLayout(trace_layout(config), config.num_macros))
        else:
            members["macro"] = Out(macro_signature(config))
            members["trace"] = Out(trace_layout(config))
        super().__init__(members)

    @property
    def config(self) -> SbnnConfig:
        return self._cfg

    def elaborate(self, platform):
        if parallel(self._cfg):
            return self._elaborate_parallel()
        cfg = self._cfg
        m = Module()
        parts = {
            "program": ProgramDecoder(cfg),
            "thresholds": ThresholdStore(cfg, sram_instance=self._sram_instances),
            "column_enables": ColumnEnableStore(cfg),
            "first_layer_sums": AccumulatorStore(cfg, sram_instance=self._sram_instances),
            "loader": ImageLoader(cfg),
            "activations": ActivationBuffers(cfg, sram_instance=self._sram_instances),
            "sequencer": Sequencer(cfg),
            "in_flight": InFlightQueue(cfg) if pipelined(cfg) else InFlight(cfg),
            "accumulator": Accumulator(cfg), "threshold_stage": ThresholdStage(cfg),
            "decision": ExitDecision(cfg), "counters": Counters(cfg),
        }
        for name, part in parts.items():
            m.submodules[name] = part
        (program, thresholds, column_enables, first_layer_sums, loader, activations, sequencer,
         in_flight, accumulator, threshold_stage, decision, counters) = parts.values()

        # Each (driver, receiver) pair of interfaces, issue side first.
        for driver, receiver in (
                (wiring.flipped(self.prog), program.prog),
                (program.threshold_write, thresholds.write),
                (program.column_enable_write, column_enables.write),
                (wiring.flipped(self.pixels), loader.pixels),
                (loader.pixel_write, activations.pixel_write),
                (sequencer.rows, activations.read), (sequencer.column_enables, column_enables.read),
                (sequencer.issue, in_flight.issue), (sequencer.evaluation, counters.evaluation),
                (in_flight.retire, accumulator.retire),
                (accumulator.stored, first_layer_sums.read),
                (accumulator.stage, threshold_stage.stage),
                (threshold_stage.thresholds, thresholds.read),
                (threshold_stage.stored, first_layer_sums.write),
                (threshold_stage.hidden_write, activations.hidden_write),
                (threshold_stage.scores, decision.scores),
                (decision.pass_control, sequencer.pass_control)):
            wiring.connect(m, driver, receiver)

        macro = self.macro
        m.d.comb += [getattr(macro, _WEIGHT_WRITE_MEMBERS[name]).eq(
            getattr(program.weight_write, name)) for name in WeightWriteSignature(cfg).members]
        m.d.comb += [getattr(macro, name).eq(getattr(sequencer.evaluation, name))
                     for name in EvaluationSignature.EVALUATION_MEMBERS]
        m.d.comb += [self.trace.eq(sequencer.trace), loader.default_budget.eq(program.budget)]
        # The issue side: when the next evaluation may start, which planes it may skip.
        m.d.comb += sequencer.plane_any.eq(column_enables.plane_any)
        if pipelined(cfg):
            m.d.comb += [sequencer.eval_ready.eq(in_flight.eval_ready),
                         sequencer.drained.eq(in_flight.drained)]
        else:
            m.d.comb += [sequencer.busy.eq(in_flight.busy),
                         sequencer.step_done.eq(in_flight.retire.done)]
        m.d.comb += sequencer.layer_ready.eq(threshold_stage.layer_ready)
        m.d.comb += [in_flight.done.eq(macro.done), accumulator.adc.eq(macro.adc)]
        if pipelined(cfg):
            # Several steps in flight: the stored sums are read the cycle before the step
            # that resumes from them retires (a rethreshold step's: as it starts).
            m.d.comb += [accumulator.fetch.eq(in_flight.fetch),
                         accumulator.fetch_en.eq(in_flight.fetch_en)]
        else:
            # The first layer's stored sums are read (a registered read) as the step starts.
            m.d.comb += [accumulator.fetch.eq(sequencer.issue.context.block.col_block),
                         accumulator.fetch_en.eq(sequencer.issue.start)]
        # Every block of a pass is thresholded before the decision that starts the next
        # (pass_done comes with the last one), so the sequencer's pass is the block's pass.
        # The block's thresholds are fetched (a registered read) as its last step retires.
        m.d.comb += [threshold_stage.pass_.eq(sequencer.pass_control.current_pass),
                     threshold_stage.fetch.eq(in_flight.retire.context.block.global_col_block)]
        # The decision sees the pass's logits as they are made, the image's budget and the
        # margin.
        m.d.comb += [decision.margin.eq(program.margin), decision.budget.eq(loader.budget),
                     decision.pass_done.eq(threshold_stage.pass_done)]
        begin_image, running = Signal(), Signal()
        for part in (sequencer, in_flight, accumulator, decision, counters):
            m.d.comb += part.clear.eq(begin_image)
        for part in (sequencer, decision, counters):
            m.d.comb += part.run.eq(running)
        self._phases(m, program, loader, decision, counters, threshold_stage, begin_image,
                     running)
        return m

    def _elaborate_parallel(self) -> Module:
        """N > 1 macros: the components of rtl/parallel.py on the issue and retire sides,
        and the one-macro controller's stores, threshold stage, decision and phases."""
        cfg = self._cfg
        n = cfg.num_macros
        m = Module()
        parts = {
            "program": ProgramDecoder(cfg),
            "thresholds": ThresholdStore(cfg, sram_instance=self._sram_instances),
            "column_enables": ColumnEnableStore(cfg, reads=n),
            "first_layer_sums": AccumulatorStore(cfg, sram_instance=self._sram_instances),
            "loader": ImageLoader(cfg), "activations": ActivationBuffers(cfg, reads=n),
            "sequencer": ParallelSequencer(cfg), "in_flight": InFlightGroups(cfg),
            "accumulator": ParallelAccumulator(cfg), "threshold_stage": ThresholdStage(cfg),
            "decision": ExitDecision(cfg), "counters": ParallelCounters(cfg),
        }
        for name, part in parts.items():
            m.submodules[name] = part
        (program, thresholds, column_enables, first_layer_sums, loader, activations, sequencer,
         in_flight, accumulator, threshold_stage, decision, counters) = parts.values()
        for driver, receiver in (
                (wiring.flipped(self.prog), program.prog),
                (program.threshold_write, thresholds.write),
                (program.column_enable_write, column_enables.write),
                (wiring.flipped(self.pixels), loader.pixels),
                (loader.pixel_write, activations.pixel_write),
                *zip(sequencer.rows, activations.read),
                *zip(sequencer.column_enables, column_enables.read),
                (accumulator.stored, first_layer_sums.read),
                (accumulator.stage, threshold_stage.stage),
                (threshold_stage.thresholds, thresholds.read),
                (threshold_stage.stored, first_layer_sums.write),
                (threshold_stage.hidden_write, activations.hidden_write),
                (threshold_stage.scores, decision.scores),
                (decision.pass_control, sequencer.pass_control)):
            wiring.connect(m, driver, receiver)
        # Every macro gets every weight write (each holds every tile); macro j gets the
        # evaluation the sequencer routes to it.
        for j in range(n):
            macro = self.macro[j]
            m.d.comb += [getattr(macro, _WEIGHT_WRITE_MEMBERS[name]).eq(
                getattr(program.weight_write, name)) for name in WeightWriteSignature(cfg).members]
            m.d.comb += [getattr(macro, name).eq(getattr(sequencer.evaluation[j], name))
                         for name in EvaluationSignature.EVALUATION_MEMBERS]
            m.d.comb += [getattr(counters.evaluation[j], name).eq(
                getattr(sequencer.evaluation[j], name))
                for name in EvaluationSignature.EVALUATION_MEMBERS]
            m.d.comb += [in_flight.done[j].eq(macro.done),
                         accumulator.adc[j].eq(macro.adc)]
        m.d.comb += [self.trace.eq(sequencer.trace), loader.default_budget.eq(program.budget),
                     sequencer.plane_any.eq(column_enables.plane_any),
                     sequencer.layer_ready.eq(threshold_stage.layer_ready),
                     sequencer.drained.eq(in_flight.drained),
                     in_flight.issue.eq(sequencer.issue),
                     accumulator.retire.eq(in_flight.retire),
                     accumulator.macro.eq(in_flight.macro),
                     accumulator.fetch.eq(in_flight.fetch),
                     accumulator.fetch_en.eq(in_flight.fetch_en),
                     threshold_stage.pass_.eq(sequencer.pass_control.current_pass),
                     threshold_stage.fetch.eq(accumulator.threshold_fetch),
                     decision.margin.eq(program.margin), decision.budget.eq(loader.budget),
                     decision.pass_done.eq(threshold_stage.pass_done)]
        begin_image, running = Signal(), Signal()
        for part in (sequencer, in_flight, accumulator, decision, counters):
            m.d.comb += part.clear.eq(begin_image)
        for part in (sequencer, decision, counters):
            m.d.comb += part.run.eq(running)
        self._phases(m, program, loader, decision, counters, threshold_stage, begin_image,
                     running)
        return m

    def _phases(self, m, program, loader, decision, counters, threshold_stage, begin_image,
                running) -> None:
        """LOAD (program ops and pixel beats), RUN (passes until the exit decision),
        OUTPUT (the result, until taken)."""
        with m.FSM(name="ctrl"):
            with m.State("LOAD"):
                m.d.comb += [loader.enable.eq(1), program.enable.eq(loader.first_beat)]
                with m.If(loader.loaded):
                    m.d.comb += begin_image.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += running.eq(1)
                with m.If(decision.pass_control.begin & decision.exit_now):
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                result = self.result.payload
                m.d.comb += [
                    self.result.valid.eq(1),
                    result.cls.eq(decision.best_class), result.cycles.eq(counters.cycles),
                    result.exit_plane.eq(decision.exit_pass),
                    result.macro_evals.eq(counters.macro_evals),
                    result.column_evals.eq(counters.column_evals),
                    result.dac_conversions.eq(counters.dac_conversions),
                    # One ADC per enabled column: every column evaluation is a conversion.
                    result.adc_conversions.eq(counters.column_evals),
                    result.logits.eq(threshold_stage.logits),
                ]
                with m.If(self.result.ready):
                    m.next = "LOAD"
