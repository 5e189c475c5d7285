"""Payload layouts and signatures shared by the controller, the macro and the testbenches.

Everything is sized from one :class:`~sbnn.config.SbnnConfig`, so the Verilog ports, the
hardware image and the cosim packing can never drift apart.
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sbnn.config import PIXEL_BITS, SbnnConfig

__all__ = ["ProgOp", "Sizes", "prog_layout", "pixel_layout", "result_layout",
           "macro_signature", "trace_layout", "IndexShapes", "BlockContext", "RetireContext",
           "ReadSignature", "RegisteredReadSignature", "HeldReadSignature", "WriteSignature",
           "ThresholdAddress", "ThresholdWriteSignature", "PixelWriteSignature",
           "HiddenWriteSignature", "RowReadSignature", "EvaluationSignature", "IssueSignature",
           "RetireSignature", "StageSignature", "ScoreSignature", "PassControlSignature",
           "WeightWriteSignature"]


class ProgOp(enum.Enum, shape=3):
    """Programming commands accepted between inferences."""

    #: Write one bitcell row: addr = group << row_bits | row, data = C column bits (1 = +1).
    WEIGHT_ROW = 0
    #: Write one threshold: addr = (pass << cb_bits | col_block) << nt_bits | neuron (the
    #: threshold neuron slot ``neuron`` of global column block ``col_block`` uses in pass
    #: ``pass``), data = signed theta.
    THRESHOLD = 1
    #: Write a column block's column-enable word: addr = global column block, data = C bits.
    COL_MASK = 2
    #: Set the default latency budget (support planes after the base plane): data.
    BUDGET = 3
    #: Set the confidence-exit margin: stop after a pass whose top-two logit margin >= data.
    #: All ones (the reset value) never exits early.
    EXIT_MARGIN = 4


class Sizes:
    """Bit widths derived from a config (one place, used by RTL, tiler and testbenches)."""

    def __init__(self, cfg: SbnnConfig):
        self.cfg = cfg
        self.group_bits = max(1, ceil_log2(cfg.wordline_groups))
        self.row_bits = max(1, ceil_log2(cfg.active_rows))
        self.nt_bits = max(1, ceil_log2(cfg.neurons_per_tile))
        self.cb_bits = max(1, ceil_log2(cfg.total_col_blocks))
        #: the pass field of a THRESHOLD address (none with a single pass)
        self.pass_bits = ceil_log2(cfg.planes)
        self.addr_bits = max(self.group_bits + self.row_bits,
                             self.pass_bits + self.cb_bits + self.nt_bits)
        # threshold_bits + 1: the EXIT_MARGIN register (margin_bits) must be writable in
        # full, its all-ones "never exit" value included.
        self.data_bits = max(cfg.macro_cols, cfg.threshold_bits + 1, 8)
        self.shift_bits = max(1, ceil_log2(max(cfg.adc_steps).bit_length()))
        self.class_bits = max(1, ceil_log2(cfg.num_classes))
        self.layer_bits = max(1, ceil_log2(cfg.num_layers))
        self.plane_bits = max(1, ceil_log2(cfg.planes))
        self.budget_bits = max(1, ceil_log2(cfg.planes))
        self.margin_bits = cfg.threshold_bits + 1
        self.count_bits = 32

    def weight_addr(self, group: int, row: int) -> int:
        return group << self.row_bits | row

    def threshold_addr(self, pass_: int, col_block: int, neuron: int) -> int:
        """THRESHOLD address of neuron slot ``neuron`` of global column block ``col_block``
        in pass ``pass_``."""
        return (pass_ << self.cb_bits | col_block) << self.nt_bits | neuron


def prog_layout(cfg: SbnnConfig) -> data.StructLayout:
    s = Sizes(cfg)
    return data.StructLayout({
        "op": ProgOp,
        "addr": unsigned(s.addr_bits),
        "data": unsigned(s.data_bits),
    })


def pixel_layout(cfg: SbnnConfig) -> data.StructLayout:
    """One input beat: ``input_lanes`` raw 8-bit pixels (lane 0 in the low bits), and on the
    first beat of an image an optional per-inference latency budget."""
    return data.StructLayout({
        "pixels": data.ArrayLayout(unsigned(PIXEL_BITS), cfg.input_lanes),
        "budget": unsigned(Sizes(cfg).budget_bits),
        "use_budget": unsigned(1),
    })


def result_layout(cfg: SbnnConfig) -> data.StructLayout:
    s = Sizes(cfg)
    return data.StructLayout({
        "cls": unsigned(s.class_bits),
        "logits": data.ArrayLayout(signed(cfg.threshold_bits), cfg.num_classes),
        "cycles": unsigned(32),
        "exit_plane": unsigned(s.plane_bits),
        "macro_evals": unsigned(s.count_bits),
        "column_evals": unsigned(s.count_bits),
        "dac_conversions": unsigned(s.count_bits),
        "adc_conversions": unsigned(s.count_bits),
    })


def trace_layout(cfg: SbnnConfig) -> data.StructLayout:
    """Controller-side context of an evaluation, valid with ``start`` (for monitors only)."""
    s = Sizes(cfg)
    return data.StructLayout({"layer": unsigned(s.layer_bits), "plane": unsigned(s.plane_bits),
                              "pass_": unsigned(s.plane_bits)})


def macro_signature(cfg: SbnnConfig) -> wiring.Signature:
    """The analog macro's port list, seen from the controller (Out = driven by it).

    ``start`` latches ``group``, ``row_x``, ``gain``, ``col_en`` and ``adc_shift``; ``done``
    pulses ``macro_latency`` cycles later with ``adc`` valid. A new ``start`` may coincide
    with ``done``. ``wr_*`` write one bitcell row.
    """
    s = Sizes(cfg)
    return wiring.Signature({
        "start": Out(1),
        "group": Out(s.group_bits),
        "row_x": Out(data.ArrayLayout(signed(cfg.x_bits), cfg.active_rows)),
        "gain": Out(cfg.gain_bits),
        "col_en": Out(cfg.macro_cols),
        "adc_shift": Out(s.shift_bits),
        "done": In(1),
        "adc": In(data.ArrayLayout(signed(cfg.adc_bits), cfg.macro_cols)),
        "wr_en": Out(1),
        "wr_group": Out(s.group_bits),
        "wr_row": Out(s.row_bits),
        "wr_data": Out(cfg.macro_cols),
    })


def stream_of(layout) -> stream.Signature:
    return stream.Signature(layout)


# Convenience for components: (name, member) of the three streams.
def controller_members(cfg: SbnnConfig) -> dict[str, wiring.Member]:
    return {
        "prog": In(stream_of(prog_layout(cfg))),
        "pixels": In(stream_of(pixel_layout(cfg))),
        "result": Out(stream_of(result_layout(cfg))),
    }


# ---------------------------------------------------------------- inside the controller
# Signatures below are seen from the side that drives the request (Out = driven by it); the
# other side uses them flipped (``In(...)``), and ``wiring.connect`` joins the two.


class IndexShapes:
    """Shapes of the controller's indices, each wide enough for its largest value."""

    def __init__(self, cfg: SbnnConfig):
        s = Sizes(cfg)
        layers = range(cfg.num_layers)
        #: support plane (0 = base plane), also a pass number and a budget
        self.plane = range(max(cfg.planes, 2))
        #: layer
        self.layer = range(max(cfg.num_layers, 2))
        #: column block within a layer
        self.col_block = range(max(*(cfg.col_blocks(i) for i in layers), 2))
        #: row block within a layer
        self.row_block = range(max(*(cfg.row_blocks(i) for i in layers), 2))
        #: column block over all layers (the threshold and column-enable address)
        self.global_col_block = unsigned(s.cb_bits)
        #: tile (word-line group)
        self.tile = unsigned(s.group_bits)
        #: output class
        self.class_index = range(max(cfg.num_classes, 2))


class BlockContext(data.StructLayout):
    """The column block an accumulation belongs to, as the threshold stage needs it.

    ``layer``, ``col_block`` (within the layer), ``global_col_block`` (over all layers:
    the threshold address), ``layer_end`` (this is the layer's last column block).
    """

    def __init__(self, cfg: SbnnConfig):
        shapes = IndexShapes(cfg)
        super().__init__({"layer": shapes.layer, "col_block": shapes.col_block,
                          "global_col_block": shapes.global_col_block, "layer_end": 1})


class RetireContext(data.StructLayout):
    """What the retire side must know about the evaluation whose ADC codes arrive.

    ``plane`` (whose columns' codes to add), ``first`` (first evaluation of its column block
    in this pass: the accumulators restart), ``resume`` (first layer after pass 0: they
    restart from the stored first-layer accumulators, not from 0), ``last`` (last
    evaluation of the column block: threshold it next cycle), ``rethreshold`` (not an
    evaluation: a first-layer block this pass does not evaluate, whose stored sums go to
    the threshold stage with no codes added, one cycle after its step), ``block``
    (:class:`BlockContext`).
    """

    def __init__(self, cfg: SbnnConfig):
        super().__init__({"plane": IndexShapes(cfg).plane, "first": 1, "resume": 1,
                          "last": 1, "rethreshold": 1, "block": BlockContext(cfg)})


class ReadSignature(wiring.Signature):
    """Combinational read of a store, seen from the reader: ``addr`` out, ``data`` in
    (valid in the same cycle)."""

    def __init__(self, addr_shape, data_shape):
        super().__init__({"addr": Out(addr_shape), "data": In(data_shape)})


class RegisteredReadSignature(ReadSignature):
    """Registered read of a store, seen from the reader: ``addr`` out, ``data`` in, the
    word of the address presented in the previous cycle (as an SRAM macro reads)."""


class HeldReadSignature(wiring.Signature):
    """Registered read with an enable, seen from the reader: ``addr`` and ``en`` out,
    ``data`` in: the word of the address presented in the last cycle ``en`` was high
    (held in between)."""

    def __init__(self, addr_shape, data_shape):
        super().__init__({"addr": Out(addr_shape), "en": Out(1), "data": In(data_shape)})


class WriteSignature(wiring.Signature):
    """Write of one store word, seen from the writer: ``addr``, ``data``, ``en`` (written
    at the clock edge)."""

    def __init__(self, addr_shape, data_shape):
        super().__init__({"addr": Out(addr_shape), "data": Out(data_shape), "en": Out(1)})


class ThresholdAddress(data.StructLayout):
    """A threshold word: ``pass_`` (the pass it is used in) and ``col_block`` (global)."""

    def __init__(self, cfg: SbnnConfig):
        shapes = IndexShapes(cfg)
        super().__init__({"pass_": shapes.plane, "col_block": shapes.global_col_block})


class ThresholdWriteSignature(wiring.Signature):
    """One neuron's threshold, seen from the writer: ``en``, ``pass_`` (used in that pass),
    ``col_block`` (global), ``neuron`` (within the block), ``theta`` (signed
    ``threshold_bits``)."""

    def __init__(self, cfg: SbnnConfig):
        shapes = IndexShapes(cfg)
        super().__init__({"en": Out(1), "pass_": Out(shapes.plane),
                          "col_block": Out(shapes.global_col_block),
                          "neuron": Out(Sizes(cfg).nt_bits),
                          "theta": Out(signed(cfg.threshold_bits))})


class WeightWriteSignature(wiring.Signature):
    """One bitcell row, seen from the writer (the macro's ``wr_*`` members): ``en``,
    ``group`` (word-line group), ``row`` (within it), ``data`` (column bits, 1 = +1)."""

    def __init__(self, cfg: SbnnConfig):
        s = Sizes(cfg)
        super().__init__({"en": Out(1), "group": Out(s.group_bits), "row": Out(s.row_bits),
                          "data": Out(cfg.macro_cols)})


class PixelWriteSignature(wiring.Signature):
    """One input beat's row codes into the pixel buffer, seen from the loader: ``en``,
    ``beat`` (beat index: codes go to rows ``beat * input_lanes`` on), ``codes``
    (``input_lanes`` signed row codes)."""

    def __init__(self, cfg: SbnnConfig):
        super().__init__({
            "en": Out(1), "beat": Out(range(max(cfg.input_beats, 2))),
            "codes": Out(data.ArrayLayout(signed(cfg.x_bits), cfg.input_lanes))})


class HiddenWriteSignature(wiring.Signature):
    """One column block of a hidden layer's activations, seen from the threshold stage:
    ``en``, ``buffer`` (layer % 2: hidden layer l writes buffer l % 2), ``col_block``,
    ``activations`` (one bit per neuron of the block, 1 = +1, 0 = -1)."""

    def __init__(self, cfg: SbnnConfig):
        super().__init__({"en": Out(1), "buffer": Out(1),
                          "col_block": Out(IndexShapes(cfg).col_block),
                          "activations": Out(cfg.neurons_per_tile)})


class RowReadSignature(wiring.Signature):
    """Row codes of one row block, seen from the sequencer: ``layer`` and ``row_block``
    out, ``row_x`` in (``active_rows`` signed codes, 0 past the layer's inputs).

    ``prefetch`` (the image's row codes in an SRAM macro, whose read is registered):
    ``next_row_block`` out as well, the row block the pointer holds in the next cycle,
    which the macro reads a cycle ahead."""

    def __init__(self, cfg: SbnnConfig, prefetch: bool = False):
        shapes = IndexShapes(cfg)
        ahead = {"next_row_block": Out(shapes.row_block)} if prefetch else {}
        super().__init__({"layer": Out(shapes.layer), "row_block": Out(shapes.row_block),
                          **ahead,
                          "row_x": In(data.ArrayLayout(signed(cfg.x_bits), cfg.active_rows))})


class EvaluationSignature(wiring.Signature):
    """The macro-bound members of an evaluation (named as in :func:`macro_signature`):
    ``start`` and what it latches, ``group``, ``row_x``, ``gain``, ``col_en``,
    ``adc_shift``."""

    EVALUATION_MEMBERS = ("start", "group", "row_x", "gain", "col_en", "adc_shift")

    def __init__(self, cfg: SbnnConfig):
        bus = macro_signature(cfg).members
        super().__init__({name: bus[name] for name in self.EVALUATION_MEMBERS})


class IssueSignature(wiring.Signature):
    """An evaluation (or rethreshold step) starting, seen from the issue side: ``start``
    and its ``context`` (:class:`RetireContext`), which the retire side uses when its ADC
    codes arrive (a rethreshold's: the next cycle, with none)."""

    def __init__(self, cfg: SbnnConfig):
        super().__init__({"start": Out(1), "context": Out(RetireContext(cfg))})


class RetireSignature(wiring.Signature):
    """An evaluation retiring, seen from the in-flight holder: ``done`` (its ADC codes
    arrive now; a rethreshold step's, none, the cycle after it) and its ``context``
    (:class:`RetireContext`, as it was issued)."""

    def __init__(self, cfg: SbnnConfig):
        super().__init__({"done": Out(1), "context": Out(RetireContext(cfg))})


class ScoreSignature(wiring.Signature):
    """An output-layer column block's logits, seen from the threshold stage in the cycle it
    writes them: ``en``, ``col_block`` (within the output layer), ``values``
    (``neurons_per_tile`` signed ``threshold_bits`` logits: class ``col_block *
    neurons_per_tile + i`` at ``i``; past the last class, don't care)."""

    def __init__(self, cfg: SbnnConfig):
        super().__init__({
            "en": Out(1), "col_block": Out(IndexShapes(cfg).col_block),
            "values": Out(data.ArrayLayout(signed(cfg.threshold_bits), cfg.neurons_per_tile))})


class PassControlSignature(wiring.Signature):
    """Between the exit decision and the sequencer, seen from the decision: ``begin``
    (the decision is taken now and pass ``next_pass`` starts, unless the answer exits),
    ``next_pass``, ``current_pass`` (in: the pass that just ended)."""

    def __init__(self, cfg: SbnnConfig):
        plane = IndexShapes(cfg).plane
        super().__init__({"begin": Out(1), "next_pass": Out(plane), "current_pass": In(plane)})


class StageSignature(wiring.Signature):
    """A column block's accumulators handed to the threshold stage, seen from the
    accumulator: ``pending`` (threshold them this cycle), ``block`` (:class:`BlockContext`),
    ``acc`` (``neurons_per_tile`` signed ``acc_bits`` sums)."""

    def __init__(self, cfg: SbnnConfig):
        super().__init__({
            "pending": Out(1), "block": Out(BlockContext(cfg)),
            "acc": Out(data.ArrayLayout(signed(cfg.acc_bits), cfg.neurons_per_tile))})
