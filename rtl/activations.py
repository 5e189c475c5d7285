"""The activation buffers: the image's row codes, kept for every pass, and two ping-pong
buffers of hidden activations.

The image's row codes are the controller's biggest store (``row_blocks(0) * active_rows *
x_bits`` bits, 4,160 on the default design). With ``sram_min_bits`` at or below that, and
where :func:`~.stores.pixel_sram_fits`, they live in an SRAM macro of a word per row
block: a beat writes one lane of its word, and the read is registered, so the macro reads
the row block the sequencer's pointer holds in the next cycle (``read.next_row_block``),
and the word is there when the pointer is. No cycle changes; only layer 0 reads it.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from sbnn.config import SbnnConfig

from .interfaces import HiddenWriteSignature, PixelWriteSignature, RowReadSignature
from .select import lut
from .sram import SramMacro
from .stores import pixel_sram

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

    def __init__(self, cfg: SbnnConfig, sram_instance: bool = False, reads: int = 1):
        self._cfg = cfg
        #: The image's row codes in an SRAM macro (module docstring), or None.
        self._sram = pixel_sram(cfg)
        self._sram_instance = sram_instance
        #: Several macros: one read per step starting in a cycle (rtl/parallel.py); the row
        #: codes then stay flip-flops (stores.pixel_sram_fits).
        self._reads = reads
        assert reads == 1 or self._sram is None
        read = In(RowReadSignature(cfg, prefetch=self._sram is not None))
        super().__init__({"pixel_write": In(PixelWriteSignature(cfg)),
                          "hidden_write": In(HiddenWriteSignature(cfg)),
                          "read": read if reads == 1 else read.array(reads)})

    def elaborate(self, platform):
        cfg = self._cfg
        rows, x_bits, neurons = cfg.active_rows, cfg.x_bits, cfg.neurons_per_tile
        m = Module()
        if self._sram is None:
            pixels = Signal(cfg.pixel_buffer_rows * x_bits, name="pix")
        hidden = [Signal(cfg.hidden_buffer_rows * x_bits, name=f"hid{i}") for i in range(2)]
        if self._sram is None:
            with m.If(self.pixel_write.en):
                m.d.sync += pixels.word_select(self.pixel_write.beat,
                                               cfg.input_lanes * x_bits).eq(
                    self.pixel_write.codes)
            pixel_word = (pixels.word_select(self.read.row_block, rows * x_bits)
                          if self._reads == 1 else None)
        else:
            pixel_word = self._pixel_macro(m)
        write = self.hidden_write
        codes = Cat(*[Mux(write.activations[i], Const(1, signed(x_bits)),
                          Const(-1, signed(x_bits))) for i in range(neurons)])
        with m.If(write.en):
            for buffer in range(2):
                with m.If(write.buffer == buffer):
                    m.d.sync += hidden[buffer].word_select(write.col_block,
                                                           neurons * x_bits).eq(codes)

        if self._reads == 1:
            self._read(m, self.read, pixel_word, hidden, "")
        else:
            for k, port in enumerate(self.read):
                word = pixels.word_select(port.row_block, rows * x_bits)
                self._read(m, port, word, hidden, str(k))
        return m

    def _read(self, m: Module, port, pixel_word, hidden: list[Signal], suffix: str) -> None:
        """One read: the row codes of ``port``'s layer and row block (``pixel_word``: the
        image's word of that row block)."""
        cfg = self._cfg
        rows, x_bits = cfg.active_rows, cfg.x_bits
        layer, row_block = port.layer, port.row_block
        words = [pixel_word, *(buf.word_select(row_block, rows * x_bits) for buf in hidden)]
        # A signal, not an expression: Amaranth lowers an expression once per use, so the
        # per-row slices below would each rebuild the whole selection (quadratic in rows).
        row_word = Signal(rows * x_bits, name=f"row_word{suffix}")
        m.d.comb += row_word.eq(Mux(layer == 0, words[0], Mux(layer[0], words[1], words[2])))
        inputs = lut(cfg.layers[:-1], layer)
        most_row_blocks = max(cfg.row_blocks(i) for i in range(cfg.num_layers))
        first_row = Signal(range(most_row_blocks * rows + 1), name=f"first_row{suffix}")
        m.d.comb += first_row.eq(row_block * rows)  # input index of row 0 (once, see above)
        m.d.comb += port.row_x.eq(Cat(*[
            Mux((first_row + r) < inputs, row_word[r * x_bits:(r + 1) * x_bits], 0)
            for r in range(rows)]))

    def _pixel_macro(self, m: Module):
        """The image's SRAM macro: beat ``b`` writes lane ``b % lanes`` of word ``b //
        lanes`` (``lanes`` beats a row block); the read is the next row block's word."""
        spec = self._sram
        m.submodules.sram = sram = SramMacro(spec, self._sram_instance)
        write = self.pixel_write
        m.d.comb += [sram.waddr.eq(write.beat // spec.lanes),
                     sram.wdata.eq(write.codes.as_value().replicate(spec.lanes)),
                     sram.re.eq(1), sram.raddr.eq(self.read.next_row_block)]
        if spec.lanes > 1:
            m.d.comb += sram.we.eq(Mux(write.en, Const(1, spec.lanes) << (write.beat %
                                                                         spec.lanes), 0))
        else:
            m.d.comb += sram.we.eq(write.en)
        return sram.rdata
