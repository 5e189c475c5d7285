"""The digital controller that goes to tapeout.

It loads an image over ``pixels``, walks every layer's tiles and planes on the macro in the
order and at the cycles of the timing contract (docs/architecture.md), accumulates ADC codes
per neuron, thresholds them into the next layer's +-1 activations, and returns class, logits
and cycle count over ``result``. ``prog`` writes bitcells, thresholds, column masks and the
latency budget between inferences.

The issue side and the retire side are decoupled so that the next evaluation starts in the
same cycle the previous one's ADC codes arrive: the macro is never idle inside a layer.
"""

from __future__ import annotations

import math

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from sbnn.config import PIXEL_BITS, SbnnConfig

from .interfaces import ProgOp, Sizes, controller_members, macro_signature, trace_layout

__all__ = ["Controller"]


def _lut(values, index):
    """Constant table indexed by a signal."""
    width = max(1, max(int(v) for v in values).bit_length())
    return Array([Const(int(v), width) for v in values])[index]


class Controller(wiring.Component):
    """Supported-BNN inference controller for one :class:`SbnnConfig`.

    Ports: ``prog`` (in stream), ``pixels`` (in stream), ``result`` (out stream), ``macro``
    (to the analog macro), ``trace`` (layer and plane of the evaluation being started; for
    monitors, may be left unconnected).
    """

    def __init__(self, config: SbnnConfig):
        self._cfg = config
        members = controller_members(config)
        members["macro"] = Out(macro_signature(config))
        members["trace"] = Out(trace_layout(config))
        super().__init__(members)

    @property
    def config(self) -> SbnnConfig:
        return self._cfg

    def elaborate(self, platform):
        cfg = self._cfg
        sz = Sizes(cfg)
        m = Module()
        a, nt, xb, lanes = cfg.active_rows, cfg.neurons_per_tile, cfg.x_bits, cfg.input_lanes
        nl, planes = cfg.num_layers, cfg.planes

        # ---- per-layer constant tables
        nrb = [cfg.row_blocks(i) for i in range(nl)]
        ncb = [cfg.col_blocks(i) for i in range(nl)]
        n_in = [cfg.layers[i] for i in range(nl)]
        shifts = [s.bit_length() - 1 for s in cfg.adc_steps]

        # ---- activation buffers, ping-pong: layer l reads buf[l % 2], writes buf[(l+1) % 2].
        # Sized so row blocks (A), column blocks (Nt) and input beats are whole words.
        unit = math.lcm(a, nt, lanes)
        size = unit * -(-max(cfg.layers[:-1]) // unit)
        bufs = [Signal(size * xb, name=f"act{i}") for i in range(2)]

        # ---- memories written by prog
        m.submodules.thresholds = th_mem = Memory(
            shape=data.ArrayLayout(signed(cfg.threshold_bits), nt),
            depth=cfg.total_col_blocks, init=[])
        th_wr = th_mem.write_port(granularity=1)
        th_rd = th_mem.read_port(domain="comb")
        m.submodules.colmask = mask_mem = Memory(
            shape=cfg.macro_cols, depth=cfg.total_col_blocks, init=[])
        mask_wr = mask_mem.write_port()
        mask_rd = mask_mem.read_port(domain="comb")

        budget = Signal(range(planes), init=cfg.num_supports)
        beat = Signal(range(max(cfg.input_beats, 2)))
        cycles = Signal(32)

        # ---- issue side: pointer to the next evaluation
        il = Signal(range(max(nl, 2)))
        icb = Signal(range(max(*ncb, 2)))
        irb = Signal(range(max(*nrb, 2)))
        ik = Signal(range(max(planes, 2)))
        itile = Signal(sz.group_bits)
        icbg = Signal(sz.cb_bits)
        have_next = Signal()
        layer_wait = Signal()
        inflight = Signal()

        # ---- retire side: context of the evaluation in flight
        r_plane = Signal(range(max(planes, 2)))
        r_first = Signal()
        r_last = Signal()
        r_layer = Signal(range(max(nl, 2)))
        r_cb = Signal(range(max(*ncb, 2)))
        r_cbg = Signal(sz.cb_bits)
        acc = [Signal(signed(cfg.acc_bits), name=f"acc{i}") for i in range(nt)]

        # ---- threshold stage: runs the cycle after a column block's last ADC codes
        t_pending = Signal()
        t_layer = Signal(range(max(nl, 2)))
        t_cb = Signal(range(max(*ncb, 2)))
        t_cbg = Signal(sz.cb_bits)
        logits = [Signal(signed(cfg.threshold_bits), name=f"logit{j}")
                  for j in range(cfg.num_classes)]

        # ================================================================ issue
        m.d.comb += mask_rd.addr.eq(icbg)
        mword = mask_rd.data

        def plane_cols(k):
            return ((1 << nt) - 1) << (k * nt)

        active = Signal(planes)
        m.d.comb += active[0].eq(1)
        for k in range(1, planes):
            m.d.comb += active[k].eq(((mword & plane_cols(k)) != 0) & (k <= budget))
        # Lowest active plane above ik, if any.
        later = Signal(planes)
        m.d.comb += [later[k].eq(active[k] & (ik < k)) for k in range(1, planes)]
        next_k = Signal(range(max(planes, 2)))
        for k in reversed(range(planes)):
            with m.If(later[k]):
                m.d.comb += next_k.eq(k)
        last_rb = irb == _lut([v - 1 for v in nrb], il)
        last_cb = icb == _lut([v - 1 for v in ncb], il)
        last_layer = il == nl - 1
        last_of_cb = last_rb & (later == 0)

        # Row codes of row block irb, zero past the layer's inputs.
        row_word = Mux(il[0], bufs[1].word_select(irb, a * xb),
                       bufs[0].word_select(irb, a * xb))
        row_x = []
        n_in_l = _lut(n_in, il)
        for r in range(a):
            in_range = (irb * a + r) < n_in_l
            row_x.append(Mux(in_range, row_word[r * xb:(r + 1) * xb], 0))

        issue = Signal()
        m.d.comb += [
            self.macro.start.eq(issue),
            self.macro.group.eq(itile),
            self.macro.row_x.as_value().eq(Cat(*row_x)),
            self.macro.gain.eq(_lut(cfg.plane_gains, ik)),
            self.macro.col_en.eq(mword & _lut([plane_cols(k) for k in range(planes)], ik)),
            self.macro.adc_shift.eq(_lut(shifts, il)),
            self.trace.layer.eq(il),
            self.trace.plane.eq(ik),
        ]

        with m.If(issue):
            m.d.sync += [
                inflight.eq(1),
                r_plane.eq(ik), r_first.eq((irb == 0) & (ik == 0)), r_last.eq(last_of_cb),
                r_layer.eq(il), r_cb.eq(icb), r_cbg.eq(icbg),
            ]
            with m.If(later != 0):
                m.d.sync += ik.eq(next_k)
            with m.Elif(~last_rb):
                m.d.sync += [irb.eq(irb + 1), ik.eq(0), itile.eq(itile + 1)]
            with m.Elif(~last_cb):
                m.d.sync += [icb.eq(icb + 1), irb.eq(0), ik.eq(0), itile.eq(itile + 1),
                             icbg.eq(icbg + 1)]
            with m.Elif(~last_layer):
                m.d.sync += [il.eq(il + 1), icb.eq(0), irb.eq(0), ik.eq(0),
                             itile.eq(itile + 1), icbg.eq(icbg + 1), layer_wait.eq(1)]
            with m.Else():
                m.d.sync += have_next.eq(0)
        with m.Elif(self.macro.done):
            m.d.sync += inflight.eq(0)

        # ================================================================ retire
        with m.If(self.macro.done):
            for i in range(nt):
                code = Array([self.macro.adc[k * nt + i] for k in range(planes)])[r_plane]
                m.d.sync += acc[i].eq(Mux(r_first, code, acc[i] + code))
            with m.If(r_last):
                m.d.sync += [t_pending.eq(1), t_layer.eq(r_layer), t_cb.eq(r_cb),
                             t_cbg.eq(r_cbg)]

        # ================================================================ threshold
        m.d.comb += th_rd.addr.eq(t_cbg)
        v = [Signal(signed(cfg.threshold_bits), name=f"v{i}") for i in range(nt)]
        m.d.comb += [v[i].eq(acc[i] - th_rd.data[i]) for i in range(nt)]
        act_word = Cat(*[Mux(v[i] >= 0, Const(1, signed(xb)), Const(-1, signed(xb)))
                         for i in range(nt)])
        t_last_cb = t_cb == _lut([x - 1 for x in ncb], t_layer)
        with m.If(t_pending):
            m.d.sync += t_pending.eq(0)
            with m.If(t_layer == nl - 1):
                for j, logit in enumerate(logits):
                    with m.If(t_cb == j // nt):
                        m.d.sync += logit.eq(v[j % nt])
            with m.Else():
                for dest in range(2):
                    with m.If(t_layer[0] != dest):
                        m.d.sync += bufs[dest].word_select(t_cb, nt * xb).eq(act_word)
            with m.If(t_last_cb):
                m.d.sync += layer_wait.eq(0)

        # ================================================================ control
        best = Signal(range(cfg.num_classes))
        best_v = logits[0]
        sel = Const(0, range(cfg.num_classes))
        for j in range(1, cfg.num_classes):
            better = logits[j] > best_v  # strict: ties keep the lowest index
            sel = Mux(better, j, sel)
            best_v = Mux(better, logits[j], best_v)
        m.d.comb += best.eq(sel)

        prog = self.prog.payload
        with m.FSM(name="ctrl"):
            with m.State("LOAD"):
                m.d.comb += [self.pixels.ready.eq(1), self.prog.ready.eq(beat == 0)]
                with m.If(self.prog.valid & self.prog.ready):
                    self._program(m, prog, sz, budget, th_wr, mask_wr)
                with m.If(self.pixels.valid):
                    shift = PIXEL_BITS - cfg.dac_bits
                    # Top dac_bits of each pixel, zero-extended to the signed row code.
                    codes = Cat(*[Cat(self.pixels.payload[j][shift:], Const(0, 1))
                                  for j in range(lanes)])
                    m.d.sync += bufs[0].word_select(beat, lanes * xb).eq(codes)
                    with m.If(beat == cfg.input_beats - 1):
                        m.d.sync += [
                            beat.eq(0), cycles.eq(0), il.eq(0), icb.eq(0), irb.eq(0),
                            ik.eq(0), itile.eq(0), icbg.eq(0), have_next.eq(1),
                            layer_wait.eq(0), inflight.eq(0), t_pending.eq(0),
                        ]
                        m.next = "RUN"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            with m.State("RUN"):
                m.d.sync += cycles.eq(cycles + 1)
                m.d.comb += issue.eq(have_next & ~layer_wait & (~inflight | self.macro.done))
                with m.If(t_pending & (t_layer == nl - 1) & t_last_cb):
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                m.d.comb += [
                    self.result.valid.eq(1),
                    self.result.payload.cls.eq(best),
                    self.result.payload.cycles.eq(cycles),
                ]
                for j, logit in enumerate(logits):
                    m.d.comb += self.result.payload.logits[j].eq(logit)
                with m.If(self.result.ready):
                    m.next = "LOAD"
        return m

    def _program(self, m, prog, sz: Sizes, budget, th_wr, mask_wr) -> None:
        cfg = self._cfg
        with m.Switch(prog.op):
            with m.Case(ProgOp.WEIGHT_ROW):
                m.d.comb += [
                    self.macro.wr_en.eq(1),
                    self.macro.wr_group.eq(prog.addr[sz.row_bits:]),
                    self.macro.wr_row.eq(prog.addr[:sz.row_bits]),
                    self.macro.wr_data.eq(prog.data[:cfg.macro_cols]),
                ]
            with m.Case(ProgOp.THRESHOLD):
                theta = prog.data[:cfg.threshold_bits].as_signed()
                m.d.comb += [
                    th_wr.addr.eq(prog.addr[sz.nt_bits:]),
                    th_wr.data.as_value().eq(theta.replicate(cfg.neurons_per_tile)),
                    th_wr.en.eq(Const(1, cfg.neurons_per_tile) << prog.addr[:sz.nt_bits]),
                ]
            with m.Case(ProgOp.COL_MASK):
                m.d.comb += [mask_wr.addr.eq(prog.addr), mask_wr.data.eq(prog.data),
                             mask_wr.en.eq(1)]
            with m.Case(ProgOp.BUDGET):
                m.d.sync += budget.eq(Mux(prog.data > cfg.num_supports, cfg.num_supports,
                                          prog.data))
