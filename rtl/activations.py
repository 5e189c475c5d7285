"""The activation buffers: the image's row codes, kept for every pass, and two ping-pong
buffers of hidden activations."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from sbnn.config import SbnnConfig

from .interfaces import HiddenWriteSignature, PixelWriteSignature, RowReadSignature
from .select import lut

__all__ = ["ActivationBuffers"]


class ActivationBuffers(wiring.Component):
    """Row codes for the macro: layer 0 reads the pixel buffer, layer l >= 1 reads hidden
    buffer (l - 1) % 2, and hidden layer l writes buffer l % 2.

    Ports: ``pixel_write`` (one beat from the loader), ``hidden_write`` (one column block
    of activations from the threshold stage, stored as +-1 codes), ``read`` (the
    ``active_rows`` codes of a layer's row block, 0 past the layer's inputs).

    Each buffer is as long as its furthest access (row-block reads, beat or column-block
    writes; SbnnConfig.pixel/hidden_buffer_rows, which the validator bounds), not a
    multiple of lcm(active_rows, neurons_per_tile, input_lanes): that product blew up past
    Amaranth's widest wire for coprime sizes. Bits past a layer's width are never read
    (their row codes are forced to 0), so the function is unchanged.
    """

    def __init__(self, cfg: SbnnConfig):
        self._cfg = cfg
        super().__init__({"pixel_write": In(PixelWriteSignature(cfg)),
                          "hidden_write": In(HiddenWriteSignature(cfg)),
                          "read": In(RowReadSignature(cfg))})

    def elaborate(self, platform):
        cfg = self._cfg
        rows, x_bits, neurons = cfg.active_rows, cfg.x_bits, cfg.neurons_per_tile
        m = Module()
        pixels = Signal(cfg.pixel_buffer_rows * x_bits, name="pix")
        hidden = [Signal(cfg.hidden_buffer_rows * x_bits, name=f"hid{i}") for i in range(2)]

        with m.If(self.pixel_write.en):
            m.d.sync += pixels.word_select(self.pixel_write.beat, cfg.input_lanes * x_bits).eq(
                self.pixel_write.codes)
        write = self.hidden_write
        codes = Cat(*[Mux(write.activations[i], Const(1, signed(x_bits)),
                          Const(-1, signed(x_bits))) for i in range(neurons)])
        with m.If(write.en):
            for buffer in range(2):
                with m.If(write.buffer == buffer):
                    m.d.sync += hidden[buffer].word_select(write.col_block,
                                                           neurons * x_bits).eq(codes)

        layer, row_block = self.read.layer, self.read.row_block
        words = [buf.word_select(row_block, rows * x_bits) for buf in (pixels, *hidden)]
        # A signal, not an expression: Amaranth lowers an expression once per use, so the
        # per-row slices below would each rebuild the whole selection (quadratic in rows).
        row_word = Signal(rows * x_bits)
        m.d.comb += row_word.eq(Mux(layer == 0, words[0], Mux(layer[0], words[1], words[2])))
        inputs = lut(cfg.layers[:-1], layer)
        most_row_blocks = max(cfg.row_blocks(i) for i in range(cfg.num_layers))
        first_row = Signal(range(most_row_blocks * rows + 1))
        m.d.comb += first_row.eq(row_block * rows)  # input index of row 0 (once, see above)
        m.d.comb += self.read.row_x.eq(Cat(*[
            Mux((first_row + r) < inputs, row_word[r * x_bits:(r + 1) * x_bits], 0)
            for r in range(rows)]))
        return m
