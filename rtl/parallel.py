"""Parallel macros (``num_macros`` N > 1): the issue side, the retire side and the counters
of a controller that starts up to N steps per cycle on N macros.

The timing contract is docs/architecture.md, "Parallel and pipelined macros"; the golden
schedule (golden/hwpath.py ``schedule``) implements it independently. What the rules mean
for the circuit:

* the j-th evaluation of a layer and pass goes to macro ``j mod N``, so the evaluations
  starting in one cycle are consecutive in issue order and go to consecutive macros from a
  round-robin pointer ``rr`` (restarting at 0 with each layer and pass);
* in each cycle the sequencer issues the longest prefix of the next N steps that every
  rule allows (:class:`ParallelSequencer`, a chain of N copies of the pointer-advance logic
  of rtl/sequencer.py). That is the golden schedule: each rule is a lower bound on a step's
  start, so a step allowed in one cycle is allowed in every later one;
* a rethreshold step starts only when every earlier step has retired and the next step
  only after it retires, so it always starts alone; an evaluation's retirement (its start
  plus ``macro_latency``) is then in issue order by itself;
* no two column blocks end in one cycle: at most one block end among the steps issued in
  one cycle (all of them retire together, ``macro_latency`` later), so the steps retiring in
  one cycle belong to at most two blocks, the end of one and the start of the next;
* every evaluation retires exactly ``macro_latency`` cycles after its start, so the retire
  side is a delay line of issue groups (:class:`InFlightGroups`) rather than a queue.

The N = 1 controller does not use this module (its Verilog is kept byte for byte).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sbnn.config import SbnnConfig

from .interfaces import (
    EvaluationSignature,
    HeldReadSignature,
    IndexShapes,
    PassControlSignature,
    ReadSignature,
    RetireContext,
    RowReadSignature,
    StageSignature,
    trace_layout,
)
from .select import lowest_set, lut
from .sequencer import block_base, tile_base

__all__ = ["IssueGroupLayout", "ParallelSequencer", "InFlightGroups", "ParallelAccumulator"]


class IssueGroupLayout(data.StructLayout):
    """The steps starting in one cycle, in issue order: ``valid`` (bit k: slot k starts),
    ``context`` (slot k's :class:`RetireContext`), ``first_macro`` (slot k runs on macro
    ``(first_macro + k) mod N``; a rethreshold step, slot 0 only, on none)."""

    def __init__(self, cfg: SbnnConfig):
        n = cfg.num_macros
        super().__init__({"valid": n, "context": data.ArrayLayout(RetireContext(cfg), n),
                          "first_macro": range(n)})


def _macro_of_slot(first_macro, slot: int, n: int):
    """Macro of slot ``slot`` of a group whose slot 0 runs on ``first_macro``."""
    if slot == 0:
        return first_macro
    total = first_macro + slot
    return Mux(total >= n, total - n, total).as_unsigned()  # never negative


class _Pointer:
    """One copy of the sequencer's pointer (layer, column block, row block, plane, tile,
    global column block) with what the step at it is and where the pointer goes after it:
    the logic of rtl/sequencer.py ``_find_next`` and ``_advance``, combinational."""

    FIELDS = ("layer", "col_block", "row_block", "plane", "tile", "global_col_block")

    def __init__(self, cfg: SbnnConfig, name: str):
        shapes = IndexShapes(cfg)
        shape = {"layer": shapes.layer, "col_block": shapes.col_block,
                 "row_block": shapes.row_block, "plane": shapes.plane, "tile": shapes.tile,
                 "global_col_block": shapes.global_col_block}
        for field in self.FIELDS:
            setattr(self, field, Signal(shape[field], name=f"{field}{name}"))

    def fields(self) -> list[Signal]:
        return [getattr(self, f) for f in self.FIELDS]


class ParallelSequencer(wiring.Component):
    """The issue side for N > 1 macros: up to N steps per cycle (see the module docstring).

    Inputs as :class:`~.sequencer.Sequencer` (``clear``, ``run``, ``layer_ready``,
    ``pass_control``, ``plane_any``) and ``drained`` (every step in flight retires by now:
    a rethreshold step may start). Outputs: ``column_enables`` and ``rows`` (one read per
    slot), ``evaluation`` and ``trace`` (one per macro), ``issue`` (the group starting).
    """

    def __init__(self, cfg: SbnnConfig):
        self._cfg = cfg
        n = cfg.num_macros
        shapes = IndexShapes(cfg)
        super().__init__({
            "clear": In(1), "run": In(1), "drained": In(1), "layer_ready": In(1),
            "pass_control": In(PassControlSignature(cfg)),
            "plane_any": In(data.ArrayLayout(cfg.planes, cfg.total_col_blocks)),
            "column_enables": Out(ReadSignature(shapes.global_col_block,
                                                cfg.macro_cols)).array(n),
            "rows": Out(RowReadSignature(cfg)).array(n),
            "evaluation": Out(EvaluationSignature(cfg)).array(n),
            "issue": Out(IssueGroupLayout(cfg)),
            "trace": Out(data.ArrayLayout(trace_layout(cfg), n)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        n, planes, neurons = cfg.num_macros, cfg.planes, cfg.neurons_per_tile
        m = Module()
        pass_ = self.pass_control.current_pass
        state = _Pointer(cfg, "")
        have_next = Signal(name="have_next")  # a step is left in this pass
        layer_wait = Signal(name="layer_wait")  # the layer's inputs are not ready
        rr = Signal(range(n), name="rr")  # macro of the next evaluation (round-robin)

        # The chain: slot k's pointer is the pointer after slots 0..k-1.
        slots = [state]
        info = []
        for k in range(n):
            nxt = _Pointer(cfg, f"_after{k}")
            info.append(self._step(m, slots[k], nxt, pass_, k))
            slots.append(nxt)

        ready = self._macro_ready(m, n)
        issued = Signal(n, name="issued")
        ends = [i["end_of_block"] for i in info]
        for k in range(n):
            macro = _macro_of_slot(rr, k, n)
            if k == 0:
                allowed = (self.run & have_next & ~layer_wait &
                           Mux(info[0]["rethreshold"], self.drained, ready.bit_select(macro, 1)))
            else:
                # Same layer, no rethreshold on either side, a free macro, and at most one
                # column block ending per cycle (rule 4).
                allowed = (issued[k - 1] & ~info[k - 1]["rethreshold"] &
                           ~info[k - 1]["end_of_layer"] & ~info[k]["rethreshold"] &
                           ready.bit_select(macro, 1) & ~(ends[k] & Cat(*ends[:k]).any()))
            m.d.comb += issued[k].eq(allowed)

        # Reads, macro buses and the issue group.
        plane_columns = [((1 << neurons) - 1) << (k * neurons) for k in range(planes)]
        shifts = [step.bit_length() - 1 for step in cfg.adc_steps]
        slot_bus = []
        for k in range(n):
            p = slots[k]
            m.d.comb += [self.column_enables[k].addr.eq(p.global_col_block),
                         self.rows[k].layer.eq(p.layer), self.rows[k].row_block.eq(p.row_block)]
            col_en = Signal(cfg.macro_cols, name=f"col_en{k}")
            m.d.comb += col_en.eq(self.column_enables[k].data & lut(plane_columns, p.plane))
            slot_bus.append({"start": issued[k] & ~info[k]["rethreshold"], "group": p.tile,
                             "row_x": self.rows[k].row_x,
                             "gain": lut(cfg.plane_gains, p.plane), "col_en": col_en,
                             "adc_shift": lut(shifts, p.layer), "plane": p.plane})
            context = self.issue.context[k]
            m.d.comb += [
                context.plane.eq(p.plane),
                context.first.eq((p.row_block == 0) & (info[k]["fixed"] | (p.plane == 0))),
                context.resume.eq(info[k]["fixed"]), context.last.eq(info[k]["end_of_block"]),
                context.rethreshold.eq(info[k]["rethreshold"]),
                context.block.layer.eq(p.layer), context.block.col_block.eq(p.col_block),
                context.block.global_col_block.eq(p.global_col_block),
                context.block.layer_end.eq(info[k]["end_of_layer"]),
            ]
        m.d.comb += [self.issue.valid.eq(issued), self.issue.first_macro.eq(rr)]
        # Macro j gets slot (j - rr) mod N: a crossbar from slots to macros.
        for j in range(n):
            slot = Signal(range(n), name=f"slot_of_macro{j}")
            # (macro N-1: rr <= j always; a constant compare is a Verilator lint warning)
            m.d.comb += slot.eq(j - rr if j == n - 1 else Mux(rr > j, j + n - rr, j - rr))
            bus, trace = self.evaluation[j], self.trace[j]
            for name in EvaluationSignature.EVALUATION_MEMBERS:
                choice = Array([slot_bus[k][name] for k in range(n)])[slot]
                m.d.comb += getattr(bus, name).eq(choice)
            m.d.comb += [trace.layer.eq(state.layer), trace.pass_.eq(pass_),
                         trace.plane.eq(Array([slot_bus[k]["plane"] for k in range(n)])[slot])]

        # The pointer moves past the last slot issued; the round-robin by the evaluations.
        for k in range(n):
            last_issued = issued[k] & (~issued[k + 1] if k + 1 < n else 1)
            with m.If(last_issued):
                m.d.sync += [a.eq(b) for a, b in zip(state.fields(), slots[k + 1].fields())]
                evals = k + 1 - info[0]["rethreshold"]  # a rethreshold starts alone
                moved = rr + evals
                m.d.sync += rr.eq(Mux(moved >= n, moved - n, moved))
                with m.If(info[k]["end_of_layer"]):
                    m.d.sync += rr.eq(0)
                    with m.If(state.layer != cfg.num_layers - 1):
                        m.d.sync += layer_wait.eq(1)
                    with m.Else():
                        m.d.sync += have_next.eq(0)
        with m.If(self.layer_ready):
            m.d.sync += layer_wait.eq(0)
        with m.If(self.pass_control.begin):
            m.d.sync += [pass_.eq(self.pass_control.next_pass), have_next.eq(1),
                         state.layer.eq(0), state.col_block.eq(0), state.row_block.eq(0),
                         state.global_col_block.eq(0), state.tile.eq(0),
                         state.plane.eq(self.pass_control.next_pass), rr.eq(0)]
        with m.If(self.clear):
            m.d.sync += [pass_.eq(0), *[f.eq(0) for f in state.fields()], have_next.eq(1),
                         layer_wait.eq(0), rr.eq(0)]
        return m

    def _macro_ready(self, m: Module, n: int) -> Value:
        """Bit j: macro j may start now (``macro_interval`` cycles since its last start)."""
        interval = self._cfg.interval
        ready = Signal(n, name="macro_ready")
        if interval == 1:
            m.d.comb += ready.eq(-1)
            return ready
        for j in range(n):
            since = Signal(range(interval + 1), name=f"since_start{j}", init=interval)
            with m.If(self.evaluation[j].start):
                m.d.sync += since.eq(1)
            with m.Elif(since != interval):
                m.d.sync += since.eq(since + 1)
            with m.If(self.clear):
                m.d.sync += since.eq(interval)
            m.d.comb += ready[j].eq(since == interval)
        return ready

    def _step(self, m: Module, p: _Pointer, nxt: _Pointer, pass_, k: int) -> dict:
        """What the step at ``p`` is (rethreshold, end of its block or layer) and ``nxt``,
        the pointer after it (as rtl/sequencer.py moves it)."""
        cfg = self._cfg
        planes, layers = cfg.planes, cfg.num_layers
        row_blocks = [cfg.row_blocks(i) for i in range(layers)]
        here = self.plane_any[p.global_col_block]
        fixed = Signal(name=f"fixed_plane{k}")
        m.d.comb += fixed.eq((p.layer == 0) & (pass_ != 0))
        rethreshold = Signal(name=f"rethreshold{k}")
        m.d.comb += rethreshold.eq(fixed & ~(here >> pass_)[0])
        later = Signal(planes, name=f"later{k}")
        m.d.comb += [later[j].eq(here[j] & (p.plane < j) & (j <= pass_))
                     for j in range(1, planes)]
        has_later, next_plane = lowest_set(m, later, planes, f"next_plane{k}")
        last_row_block = p.row_block == lut([r - 1 for r in row_blocks], p.layer)
        last_col_block = p.col_block == lut([cfg.col_blocks(i) - 1 for i in range(layers)],
                                            p.layer)
        end_of_block = Signal(name=f"end_of_block{k}")
        end_of_layer = Signal(name=f"end_of_layer{k}")
        m.d.comb += [end_of_block.eq(rethreshold | last_row_block &
                                     Mux(fixed, 1, ~has_later)),
                     end_of_layer.eq(end_of_block & last_col_block)]
        m.d.comb += [a.eq(b) for a, b in zip(nxt.fields(), p.fields())]
        with m.If(~fixed & has_later):
            m.d.comb += nxt.plane.eq(next_plane)
        with m.Elif(~last_row_block & ~rethreshold):
            m.d.comb += [nxt.row_block.eq(p.row_block + 1), nxt.tile.eq(p.tile + 1),
                         nxt.plane.eq(Mux(fixed, pass_, 0))]
        with m.Elif(fixed & ~last_col_block):  # the next first-layer block
            following = p.col_block + 1
            m.d.comb += [nxt.col_block.eq(following), nxt.global_col_block.eq(following),
                         nxt.row_block.eq(0), nxt.tile.eq(following * row_blocks[0])]
        with m.Elif(~fixed & ~last_col_block):
            m.d.comb += [nxt.col_block.eq(p.col_block + 1),
                         nxt.global_col_block.eq(p.global_col_block + 1),
                         nxt.row_block.eq(0), nxt.plane.eq(0), nxt.tile.eq(p.tile + 1)]
        with m.Elif(p.layer != layers - 1):
            following = p.layer + 1
            m.d.comb += [nxt.layer.eq(following), nxt.col_block.eq(0), nxt.row_block.eq(0),
                         nxt.plane.eq(0), nxt.tile.eq(lut(tile_base(cfg), following)),
                         nxt.global_col_block.eq(lut(block_base(cfg), following))]
        return {"fixed": fixed, "rethreshold": rethreshold, "end_of_block": end_of_block,
                "end_of_layer": end_of_layer}



class InFlightGroups(wiring.Component):
    """The retire side's view of the steps in flight on N macros.

    Every evaluation retires exactly ``macro_latency`` cycles after its start, so the groups
    issued in the last L cycles sit in a delay line of L registers and the oldest retires
    (slot k when its macro, ``(first_macro + k) mod N``, is ``done``); a rethreshold step
    (alone in its group) retires the cycle after its start, from a register of its own.
    Ports: ``issue`` (the group starting), ``done`` (bit j: macro j's codes arrive),
    ``clear``; ``retire`` (the group retiring now, slot k's macro in ``macro[k]``);
    ``drained`` (every step in flight retires by now); ``fetch``/``fetch_en`` (the first
    layer's kept sums, read the cycle before the last step of a block that resumes from them
    retires, or as a rethreshold step starts: at most one block ends per cycle, so one read
    port suffices, and the sums are added at the block's last step).
    """

    def __init__(self, cfg: SbnnConfig):
        self._cfg = cfg
        n = cfg.num_macros
        super().__init__({"issue": In(IssueGroupLayout(cfg)), "done": In(n), "clear": In(1),
                          "retire": Out(IssueGroupLayout(cfg)),
                          "macro": Out(data.ArrayLayout(range(n), n)),
                          "drained": Out(1),
                          "fetch": Out(IndexShapes(cfg).col_block), "fetch_en": Out(1)})

    def elaborate(self, platform):
        cfg = self._cfg
        n, lat = cfg.num_macros, cfg.macro_latency
        m = Module()
        layout = IssueGroupLayout(cfg)
        line = [Signal(layout, name=f"in_flight{s}") for s in range(lat)]  # issued s+1 ago
        rethreshold = Signal(RetireContext(cfg), name="rethreshold_ctx")
        rethreshold_valid = Signal(name="rethreshold_in_flight")
        issue = self.issue
        evals = Signal(n)
        starting_rethreshold = issue.valid[0] & issue.context[0].rethreshold
        m.d.comb += evals.eq(Mux(starting_rethreshold, 0, issue.valid))
        m.d.sync += [line[0].eq(issue), line[0].valid.eq(evals),
                     *[line[s].eq(line[s - 1]) for s in range(1, lat)],
                     rethreshold_valid.eq(starting_rethreshold),
                     rethreshold.eq(issue.context[0])]

        oldest = line[lat - 1]
        macros = [_macro_of_slot(oldest.first_macro, k, n) for k in range(n)]
        m.d.comb += [self.macro[k].eq(macros[k]) for k in range(n)]
        with m.If(rethreshold_valid):  # alone: every earlier step retired when it started
            m.d.comb += [self.retire.valid.eq(1), self.retire.context[0].eq(rethreshold)]
        with m.Else():
            m.d.comb += [self.retire.context.eq(oldest.context),
                         self.retire.first_macro.eq(oldest.first_macro),
                         self.retire.valid.eq(Cat(*[oldest.valid[k] & self.done.bit_select(
                             macros[k], 1) for k in range(n)]))]
        m.d.comb += self.drained.eq(~Cat(*[line[s].valid.any() for s in range(lat - 1)]).any())

        # The kept sums of the block whose last step retires next cycle (it resumes).
        soon = line[lat - 2]
        resume_soon = Signal(name="resume_soon")
        soon_block = Signal(IndexShapes(cfg).col_block, name="resume_soon_block")
        for k in reversed(range(n)):
            ctx = soon.context[k]
            with m.If(soon.valid[k] & ctx.last & ctx.resume):
                m.d.comb += [resume_soon.eq(1), soon_block.eq(ctx.block.col_block)]
        m.d.comb += [
            self.fetch.eq(Mux(starting_rethreshold, issue.context[0].block.col_block,
                              soon_block)),
            self.fetch_en.eq(starting_rethreshold | resume_soon),
        ]
        with m.If(self.clear):
            m.d.sync += [*[line[s].valid.eq(0) for s in range(lat)],
                         rethreshold_valid.eq(0)]
        return m


class ParallelAccumulator(wiring.Component):
    """Adds the codes of up to N retiring steps per cycle, in issue order, to a running sum,
    and hands each column block that ends to the threshold stage (at most one per cycle).

    Slot k of ``retire`` takes the codes of ``adc[macro[k]]`` at its plane; ``first``
    restarts the running sum at 0, and the block's last step adds the first layer's kept
    sums (``resume``: read by ``fetch``, held in ``stored``) as the block goes to the stage:
    the same sums as adding them at the first step, with one read per block end (two blocks
    may start in one retire cycle, but only one ends). Ports: ``retire``, ``macro``, ``adc``
    (per macro), ``clear``, ``fetch``/``fetch_en`` (in), ``stored``, ``stage``, and
    ``threshold_fetch`` (the global column block ending now: its thresholds are read).
    """

    def __init__(self, cfg: SbnnConfig):
        self._cfg = cfg
        n = cfg.num_macros
        word = data.ArrayLayout(signed(cfg.acc_bits), cfg.neurons_per_tile)
        address = range(max(2, cfg.col_blocks(0)))
        shapes = IndexShapes(cfg)
        super().__init__({
            "retire": In(IssueGroupLayout(cfg)), "macro": In(data.ArrayLayout(range(n), n)),
            "adc": In(data.ArrayLayout(data.ArrayLayout(signed(cfg.adc_bits), cfg.macro_cols),
                                       n)),
            "clear": In(1), "fetch": In(shapes.col_block), "fetch_en": In(1),
            "stored": Out(HeldReadSignature(address, word)),
            "stage": Out(StageSignature(cfg)),
            "threshold_fetch": Out(shapes.global_col_block),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        n, neurons, ab = cfg.num_macros, cfg.neurons_per_tile, cfg.adc_bits
        stage = self.stage
        m = Module()
        m.d.comb += [self.stored.addr.eq(self.fetch), self.stored.en.eq(self.fetch_en)]
        running = [Signal(signed(cfg.acc_bits), name=f"running{i}") for i in range(neurons)]
        with m.If(stage.pending):
            m.d.sync += stage.pending.eq(0)
        values = list(running)
        for k in range(n):
            ctx, valid = self.retire.context[k], self.retire.valid[k]
            codes = Signal(cfg.macro_cols * ab, name=f"codes{k}")  # of the slot's macro
            m.d.comb += codes.eq(Array(self.adc[j].as_value() for j in range(n))[self.macro[k]])
            after = []
            for i in range(neurons):
                code = Mux(ctx.rethreshold, 0, Array([
                    codes[(p * neurons + i) * ab:(p * neurons + i + 1) * ab].as_signed()
                    for p in range(cfg.planes)])[ctx.plane])
                value = Signal(signed(cfg.acc_bits), name=f"sum{k}_{i}")
                m.d.comb += value.eq(Mux(valid, Mux(ctx.first, 0, values[i]) + code,
                                         values[i]))
                after.append(value)
            with m.If(valid & ctx.last):
                m.d.sync += [stage.pending.eq(1), stage.block.eq(ctx.block),
                             *[stage.acc[i].eq(after[i] + Mux(ctx.resume, self.stored.data[i],
                                                              0)) for i in range(neurons)]]
                m.d.comb += self.threshold_fetch.eq(ctx.block.global_col_block)
            values = after
        m.d.sync += [running[i].eq(values[i]) for i in range(neurons)]
        with m.If(self.clear):
            m.d.sync += stage.pending.eq(0)
        return m
