"""The controller's memories, each a component: thresholds, column enables, and the first
layer's accumulators kept across passes.

Each holds a ``lib.memory`` Memory. The threshold store's and the accumulator store's
reads are registered (the word of the address presented in one cycle is there the next, as
an SRAM macro reads), so their read multiplexers (every stored bit) end at flip-flops
instead of running on into the threshold comparison or the accumulation; the column-enable
store reads combinationally. Depth at least 2: a one-entry memory has a zero-width address,
which Amaranth emits as ``wire [-1:0]`` (Verilator rejects it; found by the random-config
run).

With ``sram_min_bits`` set, a store with a registered read of at least that many bits holds
an :class:`~.sram.SramMacro` instead (:func:`sram_macros`): the same cycles, the memory a
macro instance in the tapeout Verilog. The column-enable store reads combinationally (the
sequencer selects the start's enables in the cycle it starts), so it always stays
registers.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sbnn.config import SbnnConfig

from .interfaces import (
    HeldReadSignature,
    IndexShapes,
    ReadSignature,
    RegisteredReadSignature,
    Sizes,
    ThresholdAddress,
    ThresholdWriteSignature,
    WriteSignature,
)
from .sram import SramMacro, SramSpec

__all__ = ["ThresholdStore", "ColumnEnableStore", "AccumulatorStore", "threshold_memory",
           "sram_candidates", "sram_macros", "pixel_sram", "pixel_sram_fits"]


def _depth(entries: int) -> int:
    return max(2, entries)


def sram_candidates(cfg: SbnnConfig) -> dict[str, SramSpec]:
    """The stores that can be SRAM macros (a registered read), by controller submodule
    name, with the macro each would be: the threshold store (written one neuron's lane at a
    time), the first layer's kept sums (whole words) and, where :func:`pixel_sram_fits`,
    the image's row codes (rtl/activations.py: a word per row block, written a beat's lane
    at a time, read a cycle ahead from the sequencer's next row block)."""
    out = {
        "thresholds": SramSpec("thresholds", _depth(threshold_memory(cfg)["words"]),
                               cfg.neurons_per_tile * cfg.threshold_bits,
                               cfg.neurons_per_tile),
        "first_layer_sums": SramSpec("first_layer_sums", _depth(cfg.col_blocks(0)),
                                     cfg.neurons_per_tile * cfg.acc_bits),
    }
    if pixel_sram_fits(cfg):
        out["activations"] = SramSpec("pixels", cfg.row_blocks(0),
                                      cfg.active_rows * cfg.x_bits,
                                      cfg.active_rows // cfg.input_lanes, owner="activations")
    return out


def pixel_sram_fits(cfg: SbnnConfig) -> bool:
    """Whether the image's row codes can live in an SRAM macro: every input beat falls in
    one row block (``input_lanes`` divides ``active_rows``), so a beat writes one lane of
    one word; the first layer has at least two row blocks, so the image's last beat (the
    write in the cycle the pointer is reset to row block 0) never goes to word 0, which the
    read-first macro reads in that cycle; and one macro (N macros would read N row blocks a
    cycle: N read ports)."""
    return (cfg.active_rows % cfg.input_lanes == 0 and cfg.row_blocks(0) >= 2
            and cfg.num_macros == 1)


def pixel_sram(cfg: SbnnConfig) -> SramSpec | None:
    """The image's SRAM macro in ``cfg``'s controller, or None (flip-flops)."""
    return _sram(cfg, "pixels")


def sram_macros(cfg: SbnnConfig) -> list[SramSpec]:
    """The stores that are SRAM macros in ``cfg``'s controller: every candidate of at least
    ``sram_min_bits`` bits (none when it is None)."""
    if cfg.sram_min_bits is None:
        return []
    return [spec for spec in sram_candidates(cfg).values() if spec.bits >= cfg.sram_min_bits]


def _sram(cfg: SbnnConfig, store: str) -> SramSpec | None:
    return next((spec for spec in sram_macros(cfg) if spec.store == store), None)


def threshold_memory(cfg: SbnnConfig) -> dict:
    """The threshold store's geometry, as the manifest records it: ``words`` words (one per
    pass and global column block, at ``pass * total_col_blocks + col_block``) of
    ``word_bits`` bits (``neurons_per_tile`` thresholds of ``threshold_bits``), ``bits`` in
    all (the storage the pass dimension multiplies by ``planes``)."""
    words = cfg.planes * cfg.total_col_blocks
    word_bits = cfg.neurons_per_tile * cfg.threshold_bits
    return {"words": words, "word_bits": word_bits, "bits": words * word_bits,
            "passes": cfg.planes, "col_blocks": cfg.total_col_blocks,
            "neurons_per_word": cfg.neurons_per_tile, "bits_per_neuron": cfg.threshold_bits,
            "word_address": "pass * total_col_blocks + col_block"}


class ThresholdStore(wiring.Component):
    """One signed ``threshold_bits`` threshold per pass and neuron: a word of
    ``neurons_per_tile`` per (pass, global column block), at word ``pass * total_col_blocks
    + col_block`` (pass-major, the order of the image's thresholds.hex).

    ``write``: one neuron's threshold for one pass (the other neurons of its word are
    kept; an address past the last pass or column block writes nothing). ``read``
    (registered): the word of ``addr`` (:class:`ThresholdAddress`: pass and global column
    block) as it was in the previous cycle.

    An SRAM macro when ``cfg`` says so (:func:`sram_macros`); ``sram_instance``: as an
    ``Instance`` (tapeout Verilog) rather than its Amaranth model.
    """

    def __init__(self, cfg: SbnnConfig, sram_instance: bool = False):
        self._cfg = cfg
        word = data.ArrayLayout(signed(cfg.threshold_bits), cfg.neurons_per_tile)
        self._sram = _sram(cfg, "thresholds")
        self._sram_instance = sram_instance
        if self._sram is None:
            self._memory = Memory(shape=word, depth=_depth(threshold_memory(cfg)["words"]),
                                  init=[])
        super().__init__({
            "write": In(ThresholdWriteSignature(cfg)),
            "read": In(RegisteredReadSignature(ThresholdAddress(cfg), word)),
        })

    def _word(self, pass_, col_block):
        """Word index of a (pass, column block): packed, so no word is left unused (a
        power-of-two pass stride would leave 2**cb_bits - total_col_blocks per pass)."""
        return pass_ * self._cfg.total_col_blocks + col_block

    def elaborate(self, platform):
        cfg = self._cfg
        nt = cfg.neurons_per_tile
        m = Module()
        # Packed words: a column block past the last would alias the next pass's first.
        in_range = (self.write.pass_ < cfg.planes) & \
            (self.write.col_block < cfg.total_col_blocks)
        if self._sram is not None:
            m.submodules.sram = sram = SramMacro(self._sram, self._sram_instance)
            with m.If(self.write.en & in_range):
                m.d.comb += [sram.waddr.eq(self._word(self.write.pass_, self.write.col_block)),
                             sram.wdata.eq(self.write.theta.replicate(nt)),
                             sram.we.eq(Const(1, nt) << self.write.neuron)]
            m.d.comb += [sram.re.eq(1),
                         sram.raddr.eq(self._word(self.read.addr.pass_,
                                                  self.read.addr.col_block)),
                         self.read.data.eq(sram.rdata)]
            return m
        m.submodules.memory = self._memory
        write = self._memory.write_port(granularity=1)
        read = self._memory.read_port()  # registered (sync domain)
        with m.If(self.write.en & in_range):
            m.d.comb += [write.addr.eq(self._word(self.write.pass_, self.write.col_block)),
                         write.data.as_value().eq(self.write.theta.replicate(nt)),
                         write.en.eq(Const(1, nt) << self.write.neuron)]
        m.d.comb += [read.addr.eq(self._word(self.read.addr.pass_, self.read.addr.col_block)),
                     self.read.data.eq(read.data)]
        return m


class ColumnEnableStore(wiring.Component):
    """The column-enable word of every global column block (``macro_cols`` bits, plane k of
    neuron i at bit ``k * neurons_per_tile + i``), and its per-plane summary.

    ``write``: one block's word; ``addr`` is the programmed address in full (the memory
    uses its low bits, the summary only an exact match). ``read``: the word of block
    ``addr``. ``plane_any[c]``:
    bit k set when plane k of block c has an enabled column (bit 0 always set). It lets
    the sequencer skip masked planes without spending a cycle. Its registers are reset-less
    so that they stay consistent with the words, which a reset keeps.
    """

    def __init__(self, cfg: SbnnConfig, reads: int = 1):
        self._cfg = cfg
        self._reads = reads
        self._memory = Memory(shape=cfg.macro_cols, depth=_depth(cfg.total_col_blocks),
                              init=[])
        address = IndexShapes(cfg).global_col_block
        read = In(ReadSignature(address, cfg.macro_cols))
        super().__init__({
            "write": In(WriteSignature(Sizes(cfg).addr_bits, cfg.macro_cols)),
            # several macros: one read per step starting in a cycle (rtl/parallel.py)
            "read": read if reads == 1 else read.array(reads),
            "plane_any": Out(data.ArrayLayout(cfg.planes, cfg.total_col_blocks)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        nt = cfg.neurons_per_tile
        m = Module()
        m.submodules.memory = self._memory
        write = self._memory.write_port()
        with m.If(self.write.en):
            m.d.comb += [write.addr.eq(self.write.addr), write.data.eq(self.write.data),
                         write.en.eq(1)]
        for port in [self.read] if self._reads == 1 else list(self.read):
            read = self._memory.read_port(domain="comb")
            m.d.comb += [read.addr.eq(port.addr), port.data.eq(read.data)]

        word = self.write.data
        summary = Cat(Const(1, 1), *[word[k * nt:(k + 1) * nt].any()
                                     for k in range(1, cfg.planes)])
        for block in range(cfg.total_col_blocks):
            plane_any = Signal(cfg.planes, init=1, reset_less=True, name=f"plane_any{block}")
            with m.If(self.write.en & (self.write.addr == block)):
                m.d.sync += plane_any.eq(summary)
            m.d.comb += self.plane_any[block].eq(plane_any)
        return m


class AccumulatorStore(wiring.Component):
    """The first layer's accumulators of every first-layer column block, kept between
    passes (pass p > 0 only adds plane p to them).

    ``write``: the block's ``neurons_per_tile`` signed ``acc_bits`` sums after a pass.
    ``read`` (registered, with an enable): those of block ``addr`` as of the last cycle
    ``en`` was high. The accumulator reads in the cycle a step starts, so the sums are in
    the read register when the step's codes arrive, and the read multiplexer (every stored
    bit) never runs into the addition.

    An SRAM macro when ``cfg`` says so, as :class:`ThresholdStore`.
    """

    def __init__(self, cfg: SbnnConfig, sram_instance: bool = False):
        blocks = cfg.col_blocks(0)
        word = data.ArrayLayout(signed(cfg.acc_bits), cfg.neurons_per_tile)
        self._sram = _sram(cfg, "first_layer_sums")
        self._sram_instance = sram_instance
        if self._sram is None:
            self._memory = Memory(shape=word, depth=_depth(blocks), init=[])
        address = range(_depth(blocks))
        super().__init__({"write": In(WriteSignature(address, word)),
                          "read": In(HeldReadSignature(address, word))})

    def elaborate(self, platform):
        m = Module()
        if self._sram is not None:
            m.submodules.sram = sram = SramMacro(self._sram, self._sram_instance)
            m.d.comb += [sram.waddr.eq(self.write.addr), sram.wdata.eq(self.write.data),
                         sram.we.eq(self.write.en),
                         sram.raddr.eq(self.read.addr), sram.re.eq(self.read.en),
                         self.read.data.eq(sram.rdata)]
            return m
        m.submodules.memory = self._memory
        write = self._memory.write_port()
        read = self._memory.read_port()  # registered (sync domain), with its enable
        m.d.comb += [write.addr.eq(self.write.addr), write.data.eq(self.write.data),
                     write.en.eq(self.write.en),
                     read.addr.eq(self.read.addr), read.en.eq(self.read.en),
                     self.read.data.eq(read.data)]
        return m
