"""The digital controller that goes to tapeout.

It loads an image over ``pixels``, then runs *passes* p = 0, 1, .. up to the latency budget.
Pass p adds plane p of the first layer to accumulators kept from the previous passes (its
inputs never change), reruns the later layers with planes 0..p (their inputs did change), and
checks the output's top-two logit margin: a confident answer exits early. Every evaluation
starts at the cycle the timing contract in docs/architecture.md gives; the golden model
predicts the same cycles from that contract.

The issue side and the retire side are decoupled so that the next evaluation starts in the
same cycle the previous one's ADC codes arrive: the macro is never idle inside a layer.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from sbnn.config import PIXEL_BITS, SbnnConfig

from .interfaces import ProgOp, Sizes, controller_members, macro_signature, trace_layout
from .macro import tree_sum

__all__ = ["Controller"]


def _lut(values, index):
    """Constant table indexed by a signal."""
    width = max(1, max(int(v) for v in values).bit_length())
    return Array([Const(int(v), width) for v in values])[index]


def _lowest(m: Module, bits, width: int, name: str):
    """(found, index) of the lowest set bit of ``bits``."""
    index = Signal(range(max(width, 2)), name=name)
    for k in reversed(range(width)):
        with m.If(bits[k]):
            m.d.comb += index.eq(k)
    return bits.any(), index


def _top_two(m: Module, values: list, width: int):
    """(largest, second largest, first index of the largest) of signed ``values``.

    A balanced tournament: each node merges two (top1, top2, index) triples, the left one
    holding the lower indices, so the depth is log2(n) merges instead of a chain of n - 1
    steps (the chain was the controller's critical path). A tie keeps the lower index; a
    repeated maximum is also the second largest, as in a sorted list. (Comparing all pairs
    at once is two comparator depths shallower, but made ABC's mapping 20x slower.)
    """
    low = Const(-(1 << (width - 1)), signed(width))
    nodes = [(v, low, Const(j, range(max(len(values), 2)))) for j, v in enumerate(values)]
    level = 0
    while len(nodes) > 1:
        merged = []
        for k, pair in enumerate(zip(nodes[0::2], nodes[1::2])):
            (a1, a2, ai), (b1, b2, bi) = pair
            # Named wires per node: nested expressions would be re-expanded at every level.
            t1, t2 = (Signal(signed(width), name=f"top{r}_{level}_{k}") for r in (1, 2))
            idx = Signal(range(max(len(values), 2)), name=f"best_{level}_{k}")
            better = b1 > a1  # strict: ties keep the lower index
            m.d.comb += [t1.eq(Mux(better, b1, a1)), idx.eq(Mux(better, bi, ai)),
                         t2.eq(Mux(better, Mux(a1 > b2, a1, b2), Mux(a2 > b1, a2, b1)))]
            merged.append((t1, t2, idx))
        if len(nodes) % 2:
            merged.append(nodes[-1])
        nodes, level = merged, level + 1
    return nodes[0]


class Controller(wiring.Component):
    """Supported-BNN inference controller for one :class:`SbnnConfig`.

    Ports: ``prog`` (in stream), ``pixels`` (in stream), ``result`` (out stream), ``macro``
    (to the analog macro), ``trace`` (layer, plane and pass of the evaluation being started;
    for monitors, may be left unconnected).
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
        nl, planes, nc = cfg.num_layers, cfg.planes, cfg.num_classes
        ncb0 = cfg.col_blocks(0)

        nrb = [cfg.row_blocks(i) for i in range(nl)]
        ncb = [cfg.col_blocks(i) for i in range(nl)]
        shifts = [s.bit_length() - 1 for s in cfg.adc_steps]
        tile_base = [sum(nrb[i] * ncb[i] for i in range(layer)) for layer in range(nl)]
        cb_base = [sum(ncb[:layer]) for layer in range(nl)]

        # ---- activation buffers: pixels for layer 0 (kept for every pass), then ping-pong:
        # layer l >= 1 reads hid[(l-1) % 2]; hidden layer l writes hid[l % 2].
        # Each is as long as its furthest access (row-block reads, beat or column-block
        # writes; SbnnConfig.pixel/hidden_buffer_rows, which the validator bounds), not a
        # multiple of lcm(active_rows, neurons_per_tile, input_lanes): that product blew up
        # past Amaranth's widest wire for coprime sizes. Bits past a layer's width are never
        # read (their row codes are forced to 0 below), so the function is unchanged.
        pix = Signal(cfg.pixel_buffer_rows * xb, name="pix")
        hid = [Signal(cfg.hidden_buffer_rows * xb, name=f"hid{i}") for i in range(2)]

        # ---- memories written by prog, and the first layer's accumulators across passes.
        # Depth at least 2: a one-entry memory has a zero-width address, which Amaranth
        # emits as `wire [-1:0]` (Verilator rejects it; found by the random-config run).
        m.submodules.thresholds = th_mem = Memory(
            shape=data.ArrayLayout(signed(cfg.threshold_bits), nt),
            depth=max(2, cfg.total_col_blocks), init=[])
        th_wr = th_mem.write_port(granularity=1)
        th_rd = th_mem.read_port(domain="comb")
        m.submodules.colmask = mask_mem = Memory(
            shape=cfg.macro_cols, depth=max(2, cfg.total_col_blocks), init=[])
        mask_wr = mask_mem.write_port()
        mask_rd = mask_mem.read_port(domain="comb")
        m.submodules.acc0 = acc0_mem = Memory(
            shape=data.ArrayLayout(signed(cfg.acc_bits), nt), depth=max(2, ncb0), init=[])
        acc0_wr = acc0_mem.write_port()
        acc0_rd = acc0_mem.read_port(domain="comb")
        # Which planes have an enabled column, per column block: lets the issue side skip
        # whole planes (and whole first-layer column blocks) without spending a cycle.
        plane_any = [Signal(planes, init=1, reset_less=True, name=f"plane_any{c}")
                     for c in range(cfg.total_col_blocks)]

        budget_reg = Signal(range(max(planes, 2)), init=cfg.num_supports)
        margin_reg = Signal(sz.margin_bits, init=(1 << sz.margin_bits) - 1)
        budget = Signal(range(max(planes, 2)))  # this inference's
        beat = Signal(range(max(cfg.input_beats, 2)))
        cnt_cycles = Signal(32)
        cnt_evals = Signal(sz.count_bits)
        cnt_cols = Signal(sz.count_bits)
        cnt_dac = Signal(sz.count_bits)

        # ---- issue side: pointer to the next evaluation
        pas = Signal(range(max(planes, 2)))
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
        r_resume = Signal()  # first layer, pass > 0: start from the stored accumulators
        r_last = Signal()
        r_layer_end = Signal()
        r_layer = Signal(range(max(nl, 2)))
        r_cb = Signal(range(max(*ncb, 2)))
        r_cbg = Signal(sz.cb_bits)
        acc = [Signal(signed(cfg.acc_bits), name=f"acc{i}") for i in range(nt)]

        # ---- threshold stage (the cycle after a column block's last ADC codes), decision
        t_pending = Signal()
        t_layer_end = Signal()
        t_layer = Signal(range(max(nl, 2)))
        t_cb = Signal(range(max(*ncb, 2)))
        t_cbg = Signal(sz.cb_bits)
        decide = Signal()
        exit_plane = Signal(range(max(planes, 2)))
        logits = [Signal(signed(cfg.threshold_bits), name=f"logit{j}") for j in range(nc)]

        def plane_cols(k):
            return ((1 << nt) - 1) << (k * nt)

        # ================================================================ issue
        m.d.comb += mask_rd.addr.eq(icbg)
        mword = mask_rd.data
        here = Array(plane_any)[icbg]
        fixed_plane = (il == 0) & (pas != 0)  # first layer after pass 0: plane `pas` only

        later = Signal(planes)
        m.d.comb += [later[k].eq(here[k] & (ik < k) & (k <= pas)) for k in range(1, planes)]
        has_later, next_k = _lowest(m, later, planes, "next_k")
        # First-layer column blocks whose plane `pas` has an enabled column.
        act0 = Signal(ncb0)
        m.d.comb += [act0[c].eq((plane_any[c] >> pas)[0]) for c in range(ncb0)]
        after = Signal(ncb0)
        m.d.comb += [after[c].eq(act0[c] & (icb < c)) for c in range(1, ncb0)]
        has_next_cb0, next_cb0 = _lowest(m, after, ncb0, "next_cb0")

        last_rb = irb == _lut([v - 1 for v in nrb], il)
        last_cb = icb == _lut([v - 1 for v in ncb], il)
        last_layer = il == nl - 1
        end_of_cb = last_rb & Mux(fixed_plane, 1, ~has_later)
        end_of_layer = end_of_cb & Mux(fixed_plane, ~has_next_cb0, last_cb)

        # Row codes of row block irb, zero past the layer's inputs.
        words = [pix.word_select(irb, a * xb)] + \
                [h.word_select(irb, a * xb) for h in hid]
        # A signal, not an expression: Amaranth lowers an expression once per use, so the
        # `a` slices below would each rebuild the whole selection (quadratic in active_rows).
        row_word = Signal(a * xb)
        m.d.comb += row_word.eq(Mux(il == 0, words[0], Mux(il[0], words[1], words[2])))
        n_in_l = _lut(cfg.layers[:-1], il)
        first_row = Signal(range(max(nrb) * a + 1))  # input index of row 0 (once, see above)
        m.d.comb += first_row.eq(irb * a)
        row_x = [Mux((first_row + r) < n_in_l, row_word[r * xb:(r + 1) * xb], 0)
                 for r in range(a)]
        col_en = Signal(cfg.macro_cols)
        m.d.comb += col_en.eq(mword & _lut([plane_cols(k) for k in range(planes)], ik))

        issue = Signal()
        m.d.comb += [
            self.macro.start.eq(issue),
            self.macro.group.eq(itile),
            self.macro.row_x.as_value().eq(Cat(*row_x)),
            self.macro.gain.eq(_lut(cfg.plane_gains, ik)),
            self.macro.col_en.eq(col_en),
            self.macro.adc_shift.eq(_lut(shifts, il)),
            self.trace.layer.eq(il),
            self.trace.plane.eq(ik),
            self.trace.pass_.eq(pas),
        ]

        with m.If(issue):
            m.d.sync += [
                inflight.eq(1),
                r_plane.eq(ik), r_first.eq((irb == 0) & (fixed_plane | (ik == 0))),
                r_resume.eq(fixed_plane), r_last.eq(end_of_cb), r_layer_end.eq(end_of_layer),
                r_layer.eq(il), r_cb.eq(icb), r_cbg.eq(icbg),
                cnt_evals.eq(cnt_evals + 1),
                cnt_cols.eq(cnt_cols + tree_sum(list(col_en))),
                cnt_dac.eq(cnt_dac + tree_sum([x.any() for x in row_x])),
            ]
            with m.If(~fixed_plane & has_later):
                m.d.sync += ik.eq(next_k)
            with m.Elif(~last_rb):
                m.d.sync += [irb.eq(irb + 1), itile.eq(itile + 1), ik.eq(Mux(fixed_plane,
                                                                              pas, 0))]
            with m.Elif(fixed_plane & has_next_cb0):
                m.d.sync += [icb.eq(next_cb0), icbg.eq(next_cb0), irb.eq(0),
                             itile.eq(next_cb0 * nrb[0])]
            with m.Elif(~fixed_plane & ~last_cb):
                m.d.sync += [icb.eq(icb + 1), icbg.eq(icbg + 1), irb.eq(0), ik.eq(0),
                             itile.eq(itile + 1)]
            with m.Elif(~last_layer):
                nxt = il + 1
                m.d.sync += [il.eq(nxt), icb.eq(0), irb.eq(0), ik.eq(0),
                             itile.eq(_lut(tile_base, nxt)), icbg.eq(_lut(cb_base, nxt)),
                             layer_wait.eq(1)]
            with m.Else():
                m.d.sync += have_next.eq(0)
        with m.Elif(self.macro.done):
            m.d.sync += inflight.eq(0)

        # ================================================================ retire
        m.d.comb += acc0_rd.addr.eq(r_cbg)
        with m.If(self.macro.done):
            for i in range(nt):
                code = Array([self.macro.adc[k * nt + i] for k in range(planes)])[r_plane]
                start = Mux(r_resume, acc0_rd.data[i], 0)
                m.d.sync += acc[i].eq(Mux(r_first, start, acc[i]) + code)
            with m.If(r_last):
                m.d.sync += [t_pending.eq(1), t_layer.eq(r_layer), t_cb.eq(r_cb),
                             t_cbg.eq(r_cbg), t_layer_end.eq(r_layer_end)]

        # ================================================================ threshold
        m.d.comb += th_rd.addr.eq(t_cbg)
        v = [Signal(signed(cfg.threshold_bits), name=f"v{i}") for i in range(nt)]
        m.d.comb += [v[i].eq(acc[i] - th_rd.data[i]) for i in range(nt)]
        act_word = Cat(*[Mux(v[i] >= 0, Const(1, signed(xb)), Const(-1, signed(xb)))
                         for i in range(nt)])
        m.d.comb += [acc0_wr.addr.eq(t_cb), acc0_wr.data.as_value().eq(Cat(*acc)),
                     acc0_wr.en.eq(t_pending & (t_layer == 0))]
        with m.If(t_pending):
            m.d.sync += t_pending.eq(0)
            with m.If(t_layer == nl - 1):
                for j, logit in enumerate(logits):
                    with m.If(t_cb == j // nt):
                        m.d.sync += logit.eq(v[j % nt])
            with m.Else():
                for dest in range(2):
                    with m.If(t_layer[0] == dest):
                        m.d.sync += hid[dest].word_select(t_cb, nt * xb).eq(act_word)
            with m.If(t_layer_end):
                with m.If(t_layer == nl - 1):
                    m.d.sync += decide.eq(1)
                with m.Else():
                    m.d.sync += layer_wait.eq(0)

        # ================================================================ decision
        best = Signal(range(max(nc, 2)))
        # The class as the decision saw it: the logits hold still until OUTPUT, so the
        # result port reads a register, not the comparison tree.
        best_q = Signal(range(max(nc, 2)))
        top1, top2, sel = _top_two(m, logits, cfg.threshold_bits)
        m.d.comb += best.eq(sel)
        # top1 - top2 >= EXIT_MARGIN, as the sign of one three-operand sum (one carry-save
        # level and one carry chain instead of a subtraction then a compare). Wide enough:
        # top1 - top2 < 2^tb, EXIT_MARGIN < 2^(tb + 1). (Carrying logit - EXIT_MARGIN
        # through the tree instead measured 0.9 ns worse in this flow.)
        reach = Signal(signed(cfg.threshold_bits + 3))
        m.d.comb += reach.eq(top1 - top2 - margin_reg)
        # Next pass: pass + 1, except that a single-layer network skips passes whose plane
        # is masked everywhere (it would evaluate nothing).
        nxt_ok = Signal(planes)
        for k in range(1, planes):  # pass 0 is never a next pass
            any0 = Cat(*[pa[k] for pa in plane_any[:ncb0]]).any()
            m.d.comb += nxt_ok[k].eq((k > pas) & (k <= budget) & (any0 if nl == 1 else 1))
        has_pass, next_pass = _lowest(m, nxt_ok, planes, "next_pass")
        first0_found, first0 = _lowest(
            m, Cat(*[(pa >> next_pass)[0] for pa in plane_any[:ncb0]]), ncb0, "first_cb0")
        exit_now = (reach >= 0) | ~has_pass

        prog = self.prog.payload
        with m.FSM(name="ctrl"):
            with m.State("LOAD"):
                m.d.comb += [self.pixels.ready.eq(1), self.prog.ready.eq(beat == 0)]
                with m.If(self.prog.valid & self.prog.ready):
                    self._program(m, prog, sz, budget_reg, margin_reg, th_wr, mask_wr,
                                  plane_any)
                with m.If(self.pixels.valid):
                    shift = PIXEL_BITS - cfg.dac_bits
                    # Top dac_bits of each pixel, zero-extended to the signed row code.
                    codes = Cat(*[Cat(self.pixels.payload.pixels[j][shift:], Const(0, 1))
                                  for j in range(lanes)])
                    m.d.sync += pix.word_select(beat, lanes * xb).eq(codes)
                    with m.If(beat == 0):
                        req = self.pixels.payload.budget
                        if (1 << len(req)) - 1 > cfg.num_supports:  # clamp only if it can exceed
                            req = Mux(req > cfg.num_supports, cfg.num_supports, req)
                        # prog is ready here too: a BUDGET op taken in this same cycle
                        # applies to this image, as every other op taken with it does.
                        reg = Mux(self.prog.valid & (prog.op == ProgOp.BUDGET),
                                  Mux(prog.data > cfg.num_supports, cfg.num_supports,
                                      prog.data), budget_reg)
                        m.d.sync += budget.eq(Mux(self.pixels.payload.use_budget, req, reg))
                    with m.If(beat == cfg.input_beats - 1):
                        m.d.sync += [
                            beat.eq(0), cnt_cycles.eq(0), cnt_evals.eq(0), cnt_cols.eq(0),
                            cnt_dac.eq(0), pas.eq(0), il.eq(0), icb.eq(0), irb.eq(0),
                            ik.eq(0), itile.eq(0), icbg.eq(0), have_next.eq(1),
                            layer_wait.eq(0), inflight.eq(0), t_pending.eq(0), decide.eq(0),
                        ]
                        m.next = "RUN"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            with m.State("RUN"):
                m.d.sync += cnt_cycles.eq(cnt_cycles + 1)
                m.d.comb += issue.eq(have_next & ~layer_wait & (~inflight | self.macro.done))
                with m.If(decide):
                    # The next pass's pointers are loaded whether or not the answer exits:
                    # OUTPUT never issues and LOAD resets them, so only the state change
                    # waits for exit_now (logits -> top two -> margin compare), which then
                    # drives two state bits instead of every issue-side register.
                    m.d.sync += [decide.eq(0), exit_plane.eq(pas), pas.eq(next_pass),
                                 have_next.eq(1), irb.eq(0), best_q.eq(best)]
                    with m.If(first0_found):  # resume the first layer at plane next_pass
                        m.d.sync += [il.eq(0), icb.eq(first0), icbg.eq(first0),
                                     itile.eq(first0 * nrb[0]), ik.eq(next_pass)]
                    with m.Else():  # nothing to add in the first layer: rerun the rest
                        m.d.sync += [il.eq(min(1, nl - 1)), icb.eq(0), ik.eq(0),
                                     icbg.eq(cb_base[min(1, nl - 1)]),
                                     itile.eq(tile_base[min(1, nl - 1)])]
                    with m.If(exit_now):
                        m.next = "OUTPUT"
            with m.State("OUTPUT"):
                res = self.result.payload
                m.d.comb += [
                    self.result.valid.eq(1),
                    res.cls.eq(best_q), res.cycles.eq(cnt_cycles), res.exit_plane.eq(exit_plane),
                    res.macro_evals.eq(cnt_evals), res.column_evals.eq(cnt_cols),
                    res.dac_conversions.eq(cnt_dac),
                    # One ADC per enabled column: every column evaluation is a conversion.
                    res.adc_conversions.eq(cnt_cols),
                ]
                for j, logit in enumerate(logits):
                    m.d.comb += res.logits[j].eq(logit)
                with m.If(self.result.ready):
                    m.next = "LOAD"
        return m

    def _program(self, m, prog, sz: Sizes, budget_reg, margin_reg, th_wr, mask_wr,
                 plane_any) -> None:
        cfg = self._cfg
        nt = cfg.neurons_per_tile
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
                    th_wr.data.as_value().eq(theta.replicate(nt)),
                    th_wr.en.eq(Const(1, nt) << prog.addr[:sz.nt_bits]),
                ]
            with m.Case(ProgOp.COL_MASK):
                m.d.comb += [mask_wr.addr.eq(prog.addr), mask_wr.data.eq(prog.data),
                             mask_wr.en.eq(1)]
                summary = Cat(Const(1, 1), *[prog.data[k * nt:(k + 1) * nt].any()
                                             for k in range(1, cfg.planes)])
                for c, pa in enumerate(plane_any):
                    with m.If(prog.addr == c):
                        m.d.sync += pa.eq(summary)
            with m.Case(ProgOp.BUDGET):
                m.d.sync += budget_reg.eq(Mux(prog.data > cfg.num_supports, cfg.num_supports,
                                              prog.data))
            with m.Case(ProgOp.EXIT_MARGIN):
                m.d.sync += margin_reg.eq(prog.data)
