"""Behavioral model of the SRAM compute-in-memory macro (simulation only, never taped out).

It stands in for the analog array the way cocotb's analog_model example stands in for an
ADC: exact integer behaviour with the non-idealities that matter to the digital side
(ADC quantization by a power-of-two step and saturation to ``adc_bits``), and the fixed
latency the controller must respect.

Optionally it also carries one Monte Carlo draw of process mismatch (:class:`MismatchTable`,
drawn by golden/variability.py, docs/variability.md) as constants: a ROM of per-bitcell
read-current factors beside the bitcell array, and per-row DAC gain and per-column ADC
offset constants. Without a table the macro, and its Verilog, are exactly the ideal one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from sbnn.config import SbnnConfig

from .interfaces import macro_signature

__all__ = ["BehavioralMacro", "MismatchTable", "tree_sum"]


def tree_sum(terms):
    """Balanced adder tree: keeps widths at log2(len) growth instead of a linear chain."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


@dataclass(frozen=True)
class MismatchTable:
    """Integerized mismatch of one macro, indexed physically (fixed point with F fractional
    bits): ``cell[R][c]`` read-current factor of macro row R, column c (unsigned, F + 2
    bits), ``row_gain[r]`` gain factor of the DAC of row r of the driven group (unsigned,
    F + 2 bits), ``adc_offset[c]`` offset of column c's ADC in 2^-F LSB (signed).

    Column c then gives ``clamp((gain * sum_r x_r * row_gain[r] * (+-cell[R][c])
    + adc_offset[c] * 2^(F + shift)) >> (2F + shift))``; all factors 2^F and offsets 0 is the
    ideal macro's ``clamp((gain * sum_r +-x_r) >> shift)``.
    """

    frac_bits: int
    cell: tuple[tuple[int, ...], ...]
    row_gain: tuple[int, ...]
    adc_offset: tuple[int, ...]

    @classmethod
    def of(cls, frac_bits: int, cell: Sequence[Sequence[int]], row_gain: Sequence[int],
           adc_offset: Sequence[int]) -> MismatchTable:
        """From any nested sequences (numpy arrays included)."""
        return cls(int(frac_bits), tuple(tuple(int(v) for v in row) for row in cell),
                   tuple(int(v) for v in row_gain), tuple(int(v) for v in adc_offset))

    def check(self, config: SbnnConfig) -> None:
        """Raise ValueError unless the table fits ``config``'s macro."""
        f = self.frac_bits
        top = 1 << (f + 2)
        if len(self.cell) != config.macro_rows or \
                any(len(row) != config.macro_cols for row in self.cell):
            raise ValueError(f"mismatch table: cell must be macro_rows x macro_cols = "
                             f"{config.macro_rows} x {config.macro_cols}")
        if len(self.row_gain) != config.active_rows:
            raise ValueError(f"mismatch table: row_gain needs active_rows = "
                             f"{config.active_rows} entries, got {len(self.row_gain)}")
        if len(self.adc_offset) != config.macro_cols:
            raise ValueError(f"mismatch table: adc_offset needs macro_cols = "
                             f"{config.macro_cols} entries, got {len(self.adc_offset)}")
        if any(not 0 <= v < top for row in self.cell for v in row) or \
                any(not 0 <= v < top for v in self.row_gain):
            raise ValueError(f"mismatch table: factors must be in 0..{top - 1} "
                             f"(F + 2 = {f + 2} bits unsigned)")


class BehavioralMacro(wiring.Component):
    """R x C bitcells in word-line groups of ``active_rows``; one evaluation at a time, or
    with ``macro_interval`` < ``macro_latency`` a start in any cycle (pipelined).

    Cycle ``I`` (start): inputs latched, bitcell group read. Cycle ``I+1``: product sums,
    gain, ADC; codes registered. Cycle ``I+L``: ``done`` with the codes on ``adc``.
    Disabled columns read 0. With ``mismatch``, the product sums are the varied ones of
    :class:`MismatchTable`; the timing is the same.
    """

    def __init__(self, config: SbnnConfig, mismatch: MismatchTable | None = None):
        self._cfg = config
        if mismatch is not None:
            mismatch.check(config)
        self._mismatch = mismatch
        super().__init__({"bus": In(macro_signature(config))})

    @property
    def config(self) -> SbnnConfig:
        return self._cfg

    @property
    def mismatch(self) -> MismatchTable | None:
        return self._mismatch

    def elaborate(self, platform):
        cfg = self._cfg
        a, c, lat = cfg.active_rows, cfg.macro_cols, cfg.macro_latency
        bus = self.bus
        m = Module()

        m.submodules.array = array = Memory(
            # depth >= 2: see the controller's memories (zero-width address otherwise)
            shape=data.ArrayLayout(unsigned(c), a), depth=max(2, cfg.wordline_groups),
            init=[])
        wr = array.write_port(granularity=1)
        rd = array.read_port()
        m.d.comb += [
            wr.addr.eq(bus.wr_group),
            wr.data.as_value().eq(bus.wr_data.replicate(a)),
            wr.en.eq(Mux(bus.wr_en, Const(1, a) << bus.wr_row, 0)),
            rd.addr.eq(bus.group),
            rd.en.eq(bus.start),
        ]

        row_x = Signal.like(bus.row_x)
        gain = Signal.like(bus.gain)
        col_en = Signal.like(bus.col_en)
        shift = Signal.like(bus.adc_shift)
        with m.If(bus.start):
            m.d.sync += [row_x.eq(bus.row_x), gain.eq(bus.gain), col_en.eq(bus.col_en),
                         shift.eq(bus.adc_shift)]

        if cfg.interval < lat:
            return self._pipelined(m, rd, row_x, gain, col_en, shift)

        # cnt == lat in cycle I+1 (codes computed), == 1 in cycle I+L (done).
        cnt = Signal(range(lat + 1))
        with m.If(bus.start):
            m.d.sync += cnt.eq(lat)
        with m.Elif(cnt != 0):
            m.d.sync += cnt.eq(cnt - 1)

        codes = Signal(data.ArrayLayout(signed(cfg.adc_bits), c))
        if self._mismatch is not None:
            self._varied_columns(m, rd, row_x, gain, col_en, shift,
                                 lambda: cnt == cfg.macro_latency, codes)
            m.d.comb += [bus.done.eq(cnt == 1), bus.adc.eq(codes)]
            return m
        self._ideal_columns(m, rd, row_x, gain, col_en, shift, lambda: cnt == lat, codes)
        m.d.comb += [bus.done.eq(cnt == 1), bus.adc.eq(codes)]
        return m

    def _pipelined(self, m, rd, row_x, gain, col_en, shift):
        """A start every ``macro_interval`` cycles (< latency): the inputs latched at a start
        are used in the next cycle only (cycle I+1 computes the codes, as the one-evaluation
        macro does), and the codes go down a delay line of L - 1 registers to ``adc`` in
        cycle I+L. ``valid[k]``: an evaluation started k+1 cycles ago; ``done`` = valid[L-1]."""
        cfg, bus = self._cfg, self.bus
        lat = cfg.macro_latency
        layout = data.ArrayLayout(signed(cfg.adc_bits), cfg.macro_cols)
        valid = Signal(lat, name="valid")
        m.d.sync += valid.eq(Cat(bus.start, valid[:-1]))
        stages = [Signal(layout, name=f"codes{k}") for k in range(lat - 1)]
        if self._mismatch is not None:
            self._varied_columns(m, rd, row_x, gain, col_en, shift, lambda: valid[0], stages[0])
        else:
            self._ideal_columns(m, rd, row_x, gain, col_en, shift, lambda: valid[0], stages[0])
        m.d.sync += [stages[k].eq(stages[k - 1]) for k in range(1, lat - 1)]
        m.d.comb += [bus.done.eq(valid[lat - 1]), bus.adc.eq(stages[-1])]
        return m

    def _ideal_columns(self, m, rd, row_x, gain, col_en, shift, load, codes):
        """The ideal columns' codes, registered into ``codes`` when ``load()`` (a fresh
        expression per column, as before the pipelined macro: the same netlist)."""
        cfg = self._cfg
        a, c = cfg.active_rows, cfg.macro_cols
        for col in range(c):
            column = [Mux(rd.data[r][col], row_x[r], -row_x[r]) for r in range(a)]
            total = Signal(signed(cfg.x_bits + cfg.gain_bits + a.bit_length() + 2),
                           name=f"sum{col}")
            m.d.comb += total.eq(tree_sum(column) * gain)
            q = Signal(signed(total.shape().width), name=f"q{col}")
            m.d.comb += q.eq(total >> shift)
            sat = Mux(q > cfg.adc_max, cfg.adc_max, Mux(q < cfg.adc_min, cfg.adc_min, q))
            with m.If(load()):
                m.d.sync += codes[col].eq(Mux(col_en[col], sat, 0))

    def _varied_columns(self, m, rd, row_x, gain, col_en, shift, load, codes):
        """Columns with mismatch: a ROM of cell factors is read with the bitcell group."""
        cfg, mm = self._cfg, self._mismatch
        a, c, f = cfg.active_rows, cfg.macro_cols, mm.frac_bits
        fw = f + 2
        # One ROM word per word-line group: row r, column col at bit (r * C + col) * fw,
        # read in the same cycle as the bitcells so the factors line up with them.
        words = []
        for g in range(cfg.wordline_groups):
            word = 0
            for r in range(a):
                for col in range(c):
                    word |= mm.cell[g * a + r][col] << ((r * c + col) * fw)
            words.append(word)
        m.submodules.mismatch = rom = Memory(shape=unsigned(a * c * fw),
                                             depth=max(2, cfg.wordline_groups),
                                             init=words + [0] * (cfg.wordline_groups < 2))
        rom_rd = rom.read_port()
        m.d.comb += [rom_rd.addr.eq(rd.addr), rom_rd.en.eq(rd.en)]
        # The DAC of row r scales its code by its own gain factor (a constant multiplier).
        xg = [Signal(signed(cfg.x_bits + fw + 1), name=f"xg{r}") for r in range(a)]
        m.d.comb += [xg[r].eq(row_x[r] * Const(mm.row_gain[r], unsigned(fw)))
                     for r in range(a)]
        for col in range(c):
            terms = []
            for r in range(a):
                factor = rom_rd.data[(r * c + col) * fw:(r * c + col + 1) * fw]
                prod = xg[r] * factor
                terms.append(Mux(rd.data[r][col], prod, -prod))
            summed = tree_sum(terms) * gain
            total = Signal(summed.shape(), name=f"vsum{col}")
            m.d.comb += total.eq(summed)
            # The offset, in 2^-F LSB of the current step, joins the sum before the ADC's
            # floor: O * 2^(F + shift) in the sum's 2^(2F) * step units.
            o = mm.adc_offset[col]
            off = Const(o, signed(max(2, o.bit_length() + 1)))
            biased = total + ((off << f) << shift)
            t = Signal(biased.shape(), name=f"vt{col}")
            m.d.comb += t.eq(biased)
            q = Signal(t.shape(), name=f"vq{col}")
            m.d.comb += q.eq((t >> (2 * f)) >> shift)
            sat = Mux(q > cfg.adc_max, cfg.adc_max, Mux(q < cfg.adc_min, cfg.adc_min, q))
            with m.If(load()):
                m.d.sync += codes[col].eq(Mux(col_en[col], sat, 0))
