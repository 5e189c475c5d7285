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
           "macro_signature", "trace_layout"]


class ProgOp(enum.Enum, shape=3):
    """Programming commands accepted between inferences."""

    #: Write one bitcell row: addr = group << row_bits | row, data = C column bits (1 = +1).
    WEIGHT_ROW = 0
    #: Write one threshold: addr = col_block << nt_bits | neuron, data = signed theta.
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
        self.addr_bits = max(self.group_bits + self.row_bits, self.cb_bits + self.nt_bits)
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

    def threshold_addr(self, col_block: int, neuron: int) -> int:
        return col_block << self.nt_bits | neuron


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
