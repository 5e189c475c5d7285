"""The issue side: which evaluation starts next, and when.

Within a pass, evaluations go in the order layer, column block, row block, plane. Pass p
evaluates planes 0..p of the later layers but only plane p of the first layer (its
accumulators are kept from the previous passes), and skips every plane of a column block
whose columns are all disabled, without spending a cycle. A first-layer column block with
no enabled plane-p column is not evaluated in pass p > 0 but *rethresholded*: a one-cycle
step without a macro start that sends its stored sums to the threshold stage, so that its
outputs are made with pass p's thresholds. A step starts in the cycle the previous one
retires (an evaluation's ADC codes arrive; a rethreshold step retires the cycle after it),
except that a new layer waits for the previous layer's activations (``layer_ready``) and a
new pass for the exit decision (``begin_pass``): the timing contract of
docs/architecture.md.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sbnn.config import SbnnConfig

from .interfaces import (
    EvaluationSignature,
    IndexShapes,
    IssueSignature,
    PassControlSignature,
    ReadSignature,
    RowReadSignature,
    trace_layout,
)
from .select import lowest_set, lut
from .stores import pixel_sram

__all__ = ["Sequencer", "pipelined", "tile_base", "block_base"]


def pipelined(cfg: SbnnConfig) -> bool:
    """Whether the config has more than one step in flight at a time (a pipelined macro,
    ``macro_interval`` < ``macro_latency``); the default arrangement keeps the one-entry
    in-flight holder and its netlist."""
    return cfg.interval < cfg.macro_latency


class Sequencer(wiring.Component):
    """Pointer to the next evaluation (pass, layer, column block, row block, plane, and
    the tile and global column block they give), and the evaluation it drives.

    Inputs: ``clear`` (an image is loaded: pass 0 starts), ``run`` (computing),
    ``busy`` (a step is in flight) and ``step_done`` (it retires now: the next may start),
    ``layer_ready`` (the previous layer's activations are written),
    ``pass_control`` (from the exit decision: pass ``next_pass`` starts; the current pass
    goes back),
    ``plane_any`` (per column block, the planes with an enabled column).
    Outputs: ``column_enables`` (read of the current block's column-enable word), ``rows``
    (read of the current row block's codes), ``evaluation`` (to the macro), ``issue`` (the
    evaluation starting and its retire context; also a rethreshold step, which starts no
    evaluation), ``trace`` (its layer, plane and pass).
    """

    def __init__(self, cfg: SbnnConfig):
        self._cfg = cfg
        shapes = IndexShapes(cfg)
        #: Several steps in flight (a pipelined macro): the in-flight queue says when an
        #: evaluation (``eval_ready``) and a rethreshold step (``drained``) may start.
        self._queued = pipelined(cfg)
        starts = ({"eval_ready": In(1), "drained": In(1)} if self._queued else
                  {"busy": In(1), "step_done": In(1)})
        super().__init__({
            "clear": In(1), "run": In(1), **starts,
            "layer_ready": In(1), "pass_control": In(PassControlSignature(cfg)),
            "plane_any": In(data.ArrayLayout(cfg.planes, cfg.total_col_blocks)),
            "column_enables": Out(ReadSignature(shapes.global_col_block, cfg.macro_cols)),
            "rows": Out(RowReadSignature(cfg, prefetch=pixel_sram(cfg) is not None)),
            "evaluation": Out(EvaluationSignature(cfg)),
            "issue": Out(IssueSignature(cfg)),
            "trace": Out(trace_layout(cfg)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        shapes = IndexShapes(cfg)
        m = Module()
        self._pass = self.pass_control.current_pass
        self._layer = Signal(shapes.layer, name="layer")
        self._col_block = Signal(shapes.col_block, name="col_block")
        self._row_block = Signal(shapes.row_block, name="row_block")
        self._plane = Signal(shapes.plane, name="plane")
        self._tile = Signal(shapes.tile, name="tile")
        self._global_col_block = Signal(shapes.global_col_block, name="global_col_block")
        self._have_next = Signal()  # a step (evaluation or rethreshold) is left in this pass
        self._layer_wait = Signal()  # the pointer is at a layer whose inputs are not ready
        issue = Signal()  # a step (evaluation or rethreshold) starts
        if self._queued:
            self._drive_evaluation(m, issue)
            m.d.comb += issue.eq(self.run & self._have_next & ~self._layer_wait &
                                 Mux(self._rethreshold, self.drained, self.eval_ready))
        else:
            m.d.comb += issue.eq(self.run & self._have_next & ~self._layer_wait &
                                 (~self.busy | self.step_done))
            self._drive_evaluation(m, issue)
        self._advance(m, issue)
        with m.If(self.layer_ready):
            m.d.sync += self._layer_wait.eq(0)
        self._begin_pass(m)
        if pixel_sram(cfg) is not None:
            self._next_row_block(m, issue)
        with m.If(self.clear):
            m.d.sync += [self._pass.eq(0), self._layer.eq(0), self._col_block.eq(0),
                         self._row_block.eq(0), self._plane.eq(0), self._tile.eq(0),
                         self._global_col_block.eq(0), self._have_next.eq(1),
                         self._layer_wait.eq(0)]
        return m

    def _drive_evaluation(self, m: Module, issue: Signal) -> None:
        """The macro inputs, trace and retire context of the evaluation at the pointer."""
        cfg = self._cfg
        planes, neurons = cfg.planes, cfg.neurons_per_tile
        self._find_next(m)
        m.d.comb += [self.column_enables.addr.eq(self._global_col_block),
                     self.rows.layer.eq(self._layer), self.rows.row_block.eq(self._row_block)]
        col_en = Signal(cfg.macro_cols)
        plane_columns = [((1 << neurons) - 1) << (k * neurons) for k in range(planes)]
        m.d.comb += col_en.eq(self.column_enables.data & lut(plane_columns, self._plane))
        shifts = [step.bit_length() - 1 for step in cfg.adc_steps]
        evaluation = self.evaluation
        m.d.comb += [
            evaluation.start.eq(issue & ~self._rethreshold), evaluation.group.eq(self._tile),
            evaluation.row_x.eq(self.rows.row_x),
            evaluation.gain.eq(lut(cfg.plane_gains, self._plane)),
            evaluation.col_en.eq(col_en),
            evaluation.adc_shift.eq(lut(shifts, self._layer)),
            self.trace.layer.eq(self._layer), self.trace.plane.eq(self._plane),
            self.trace.pass_.eq(self._pass),
        ]
        context = self.issue.context
        m.d.comb += [
            self.issue.start.eq(issue),
            context.plane.eq(self._plane),
            context.first.eq((self._row_block == 0) & (self._fixed_plane | (self._plane == 0))),
            context.resume.eq(self._fixed_plane), context.last.eq(self._end_of_block),
            context.rethreshold.eq(self._rethreshold),
            context.block.layer.eq(self._layer), context.block.col_block.eq(self._col_block),
            context.block.global_col_block.eq(self._global_col_block),
            context.block.layer_end.eq(self._end_of_layer),
        ]

    def _find_next(self, m: Module) -> None:
        """Where the pointer goes next: the next enabled plane of this row block, the next
        row or column block, or the end of a block or layer; and whether the step at the
        pointer is a rethreshold."""
        cfg = self._cfg
        planes, layers = cfg.planes, cfg.num_layers
        here = self.plane_any[self._global_col_block]
        # First layer after pass 0: plane `pass` only, in every column block.
        self._fixed_plane = Signal(name="fixed_plane")
        m.d.comb += self._fixed_plane.eq((self._layer == 0) & (self._pass != 0))
        # ... and a block without an enabled plane-`pass` column is rethresholded.
        self._rethreshold = Signal(name="rethreshold")
        m.d.comb += self._rethreshold.eq(self._fixed_plane & ~(here >> self._pass)[0])

        later = Signal(planes)
        m.d.comb += [later[k].eq(here[k] & (self._plane < k) & (k <= self._pass))
                     for k in range(1, planes)]
        self._has_later_plane, self._next_plane = lowest_set(m, later, planes, "next_plane")

        self._last_row_block = self._row_block == lut(
            [cfg.row_blocks(i) - 1 for i in range(layers)], self._layer)
        self._last_col_block = self._col_block == lut(
            [cfg.col_blocks(i) - 1 for i in range(layers)], self._layer)
        self._end_of_block = Signal(name="end_of_block")
        self._end_of_layer = Signal(name="end_of_layer")
        m.d.comb += [
            self._end_of_block.eq(self._rethreshold | self._last_row_block &
                                  Mux(self._fixed_plane, 1, ~self._has_later_plane)),
            self._end_of_layer.eq(self._end_of_block & self._last_col_block),
        ]

    def _advance(self, m: Module, issue: Signal) -> None:
        """Move the pointer past the evaluation starting now."""
        cfg = self._cfg
        row_blocks = [cfg.row_blocks(i) for i in range(cfg.num_layers)]
        fixed = self._fixed_plane
        with m.If(issue):
            with m.If(~fixed & self._has_later_plane):
                m.d.sync += self._plane.eq(self._next_plane)
            with m.Elif(~self._last_row_block & ~self._rethreshold):
                m.d.sync += [self._row_block.eq(self._row_block + 1),
                             self._tile.eq(self._tile + 1),
                             self._plane.eq(Mux(fixed, self._pass, 0))]
            with m.Elif(fixed & ~self._last_col_block):  # the next first-layer block
                following = self._col_block + 1
                m.d.sync += [self._col_block.eq(following),
                             self._global_col_block.eq(following),
                             self._row_block.eq(0),
                             self._tile.eq(following * row_blocks[0])]
            with m.Elif(~fixed & ~self._last_col_block):
                m.d.sync += [self._col_block.eq(self._col_block + 1),
                             self._global_col_block.eq(self._global_col_block + 1),
                             self._row_block.eq(0), self._plane.eq(0),
                             self._tile.eq(self._tile + 1)]
            with m.Elif(self._layer != cfg.num_layers - 1):
                following = self._layer + 1
                m.d.sync += [self._layer.eq(following), self._col_block.eq(0),
                             self._row_block.eq(0), self._plane.eq(0),
                             self._tile.eq(lut(tile_base(cfg), following)),
                             self._global_col_block.eq(lut(block_base(cfg), following)),
                             self._layer_wait.eq(1)]
            with m.Else():
                m.d.sync += self._have_next.eq(0)

    def _next_row_block(self, m: Module, issue: Signal) -> None:
        """``rows.next_row_block``: the row block the pointer holds in the next cycle (what
        :meth:`_advance`, :meth:`_begin_pass` and ``clear`` write into it), for the image's
        SRAM macro, whose read is registered (rtl/activations.py)."""
        ahead = self.rows.next_row_block
        m.d.comb += ahead.eq(self._row_block)
        with m.If(issue):
            with m.If(~self._fixed_plane & self._has_later_plane):
                pass  # the next plane of this row block
            with m.Elif(~self._last_row_block & ~self._rethreshold):
                m.d.comb += ahead.eq(self._row_block + 1)
            with m.Elif(~self._last_col_block | (self._layer != self._cfg.num_layers - 1)):
                m.d.comb += ahead.eq(0)  # the next column block or layer
        with m.If(self.pass_control.begin | self.clear):
            m.d.comb += ahead.eq(0)

    def _begin_pass(self, m: Module) -> None:
        """Load the pointer for pass ``next_pass``: the first layer's first column block
        (evaluated at plane ``next_pass`` or rethresholded)."""
        with m.If(self.pass_control.begin):
            m.d.sync += [self._pass.eq(self.pass_control.next_pass), self._have_next.eq(1),
                         self._layer.eq(0), self._col_block.eq(0), self._row_block.eq(0),
                         self._global_col_block.eq(0), self._tile.eq(0),
                         self._plane.eq(self.pass_control.next_pass)]


def tile_base(cfg: SbnnConfig) -> list[int]:
    """First tile of each layer."""
    return [sum(cfg.row_blocks(i) * cfg.col_blocks(i) for i in range(layer))
            for layer in range(cfg.num_layers)]


def block_base(cfg: SbnnConfig) -> list[int]:
    """First global column block of each layer."""
    return [sum(cfg.col_blocks(i) for i in range(layer)) for layer in range(cfg.num_layers)]
