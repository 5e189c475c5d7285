"""One Amaranth-simulator test per controller component (rtl/), each against values worked
out by hand or from docs/architecture.md, never from the component itself."""

import random

import pytest
from amaranth.hdl import Array, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from test_rtl import SINGLE, TINY, TINY_K2  # the configs of the system tests

from sbnn.config import SbnnConfig
from sbnn.rtl.accumulate import Accumulator, InFlight, ThresholdStage
from sbnn.rtl.activations import ActivationBuffers
from sbnn.rtl.counters import Counters
from sbnn.rtl.exit import ExitDecision
from sbnn.rtl.interfaces import ProgOp, Sizes
from sbnn.rtl.loader import ImageLoader
from sbnn.rtl.program import ProgramDecoder
from sbnn.rtl.sequencer import Sequencer
from sbnn.rtl.stores import AccumulatorStore, ColumnEnableStore, ThresholdStore

# TINY: 3 weight layers 12-7-5-6, K = 1 (2 planes), 2 neurons per tile: column blocks
# (4, 3, 3), row blocks (3, 2, 2), 3 input beats of 5 lanes, dac_bits 4, x_bits 5.
# TINY_K2: 9-6-3, K = 2 (3 planes, 2-bit budget fields), 2 neurons per tile, latency 2.
# SINGLE: one weight layer 10-5, K = 2, 3 neurons per tile, 2 column blocks.


def simulate(dut, bench) -> None:
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def values(ctx, view, count: int) -> list[int]:
    got = ctx.get(view)
    return [got[i] for i in range(count)]


def test_threshold_store_writes_one_neuron_and_reads_a_block_of_a_pass():
    dut = ThresholdStore(TINY)  # 2 passes, 10 column blocks (4-bit block field)

    async def write(ctx, pass_, col_block, neuron, theta, en=1):
        ctx.set(dut.write.en, en)
        ctx.set(dut.write.pass_, pass_)
        ctx.set(dut.write.col_block, col_block)
        ctx.set(dut.write.neuron, neuron)
        ctx.set(dut.write.theta, theta)
        await ctx.tick()

    async def read(ctx, pass_, col_block):
        ctx.set(dut.read.addr, {"pass_": pass_, "col_block": col_block})
        await ctx.tick()  # a registered read: the word follows its address by a cycle
        return values(ctx, dut.read.data, 2)

    async def bench(ctx):
        for neuron, theta in ((0, 7), (1, -5)):
            await write(ctx, 0, 3, neuron, theta)
        await write(ctx, 0, 3, 1, 2)  # rewrite neuron 1 only
        await write(ctx, 1, 3, 0, -9)  # the same block in pass 1: another word
        await write(ctx, 0, 3, 0, 100, en=0)  # not written
        await write(ctx, 0, 10, 0, 55)  # block 10 does not exist (no alias of pass 1's 0)
        await write(ctx, 1, 15, 1, 56)
        ctx.set(dut.write.en, 0)
        assert await read(ctx, 0, 3) == [7, 2]
        assert await read(ctx, 1, 3) == [-9, 0]
        assert await read(ctx, 0, 2) == [0, 0]
        assert await read(ctx, 1, 0) == [0, 0] and await read(ctx, 1, 9) == [0, 0]
        # Registered: the data is the word of the previous cycle's address, not this one's.
        ctx.set(dut.read.addr, {"pass_": 0, "col_block": 3})
        await ctx.tick()
        ctx.set(dut.read.addr, {"pass_": 1, "col_block": 3})
        assert values(ctx, dut.read.data, 2) == [7, 2]
        await ctx.tick()
        assert values(ctx, dut.read.data, 2) == [-9, 0]

    simulate(dut, bench)


def test_column_enable_store_keeps_words_and_plane_summary():
    dut = ColumnEnableStore(TINY)  # plane k of neuron i at bit 2k + i

    async def bench(ctx):
        assert [ctx.get(dut.plane_any[c]) for c in range(10)] == [0b01] * 10  # reset
        for block, word in ((2, 0b1001), (5, 0b0011)):
            ctx.set(dut.write.en, 1)
            ctx.set(dut.write.addr, block)
            ctx.set(dut.write.data, word)
            await ctx.tick()
        # 18 aliases block 2 in the memory (4 address bits), but is no block of the summary.
        ctx.set(dut.write.addr, 16 + 2)
        ctx.set(dut.write.data, 0b0110)
        await ctx.tick()
        ctx.set(dut.write.en, 0)
        ctx.set(dut.read.addr, 5)
        assert ctx.get(dut.read.data) == 0b0011
        ctx.set(dut.read.addr, 2)
        assert ctx.get(dut.read.data) == 0b0110
        summary = [ctx.get(dut.plane_any[c]) for c in range(10)]
        assert summary[2] == 0b11 and summary[5] == 0b01  # plane 1 enabled in block 2 only
        assert summary[:2] + summary[3:5] + summary[6:] == [0b01] * 8

    simulate(dut, bench)


def test_accumulator_store_keeps_each_block():
    dut = AccumulatorStore(TINY)

    async def bench(ctx):
        ctx.set(dut.write.en, 1)
        ctx.set(dut.write.addr, 1)
        ctx.set(dut.write.data, [5, -3])
        await ctx.tick()
        ctx.set(dut.write.addr, 3)
        ctx.set(dut.write.data, [-256, 255])
        await ctx.tick()
        ctx.set(dut.write.en, 0)
        ctx.set(dut.read.en, 1)
        for block, sums in ((1, [5, -3]), (3, [-256, 255]), (0, [0, 0])):
            ctx.set(dut.read.addr, block)
            await ctx.tick()  # registered: the word is there the cycle after its address
            assert values(ctx, dut.read.data, 2) == sums
        ctx.set(dut.read.addr, 1)
        await ctx.tick()
        ctx.set(dut.read.en, 0)  # held while the enable is low, whatever the address
        ctx.set(dut.read.addr, 3)
        for _ in range(3):
            await ctx.tick()
            assert values(ctx, dut.read.data, 2) == [5, -3]

    simulate(dut, bench)


def test_program_decoder_turns_each_op_into_one_write():
    cfg = TINY_K2
    dut = ProgramDecoder(cfg)
    sizes = Sizes(cfg)

    async def op(ctx, code, addr, data):
        ctx.set(dut.prog.payload, {"op": code, "addr": addr, "data": data})
        ctx.set(dut.prog.valid, 1)

    async def bench(ctx):
        assert ctx.get(dut.budget) == 2 and ctx.get(dut.margin) == (1 << sizes.margin_bits) - 1
        ctx.set(dut.enable, 1)
        assert ctx.get(dut.prog.ready) == 1
        await op(ctx, ProgOp.WEIGHT_ROW, sizes.weight_addr(5, 2), 0b101101)
        assert [ctx.get(getattr(dut.weight_write, n)) for n in ("en", "group", "row", "data")] \
            == [1, 5, 2, 0b101101]
        assert ctx.get(dut.threshold_write.en) == 0
        await ctx.tick()
        # TINY_K2: 5 column blocks, 2 neurons per tile: addr = pass . 3-bit block . neuron
        assert sizes.threshold_addr(2, 4, 1) == 0b10_100_1
        await op(ctx, ProgOp.THRESHOLD, 0b10_100_1, (1 << 16) - 3)
        tw = dut.threshold_write
        assert [ctx.get(tw.en), ctx.get(tw.pass_), ctx.get(tw.col_block), ctx.get(tw.neuron),
                ctx.get(tw.theta)] == [1, 2, 4, 1, -3]
        assert ctx.get(dut.weight_write.en) == 0
        await ctx.tick()
        await op(ctx, ProgOp.COL_MASK, 3, 0b110011)
        cw = dut.column_enable_write
        assert [ctx.get(cw.en), ctx.get(cw.addr), ctx.get(cw.data)] == [1, 3, 0b110011]
        await ctx.tick()
        await op(ctx, ProgOp.BUDGET, 0, 7)  # clamps to K = 2, and applies in this cycle
        assert ctx.get(dut.budget) == 2
        await ctx.tick()
        await op(ctx, ProgOp.BUDGET, 0, 1)
        assert ctx.get(dut.budget) == 1
        await ctx.tick()
        await op(ctx, ProgOp.EXIT_MARGIN, 0, 9)
        await ctx.tick()
        ctx.set(dut.prog.valid, 0)
        assert ctx.get(dut.budget) == 1 and ctx.get(dut.margin) == 9
        ctx.set(dut.enable, 0)  # not between images: nothing is taken
        await op(ctx, ProgOp.BUDGET, 0, 0)
        assert ctx.get(dut.prog.ready) == 0 and ctx.get(dut.budget) == 1
        await ctx.tick()
        assert ctx.get(dut.budget) == 1

    simulate(dut, bench)


def test_image_loader_takes_beats_and_latches_the_budget():
    cfg = TINY_K2  # 9 pixels in 3 beats of 4 lanes, dac_bits 3: code = pixel >> 5
    dut = ImageLoader(cfg)
    image = [[0, 31, 32, 255], [100, 200, 64, 96], [224, 1, 2, 3]]

    async def beat(ctx, pixels, budget=0, use_budget=0):
        ctx.set(dut.pixels.payload, {"pixels": pixels, "budget": budget,
                                     "use_budget": use_budget})
        ctx.set(dut.pixels.valid, 1)

    async def bench(ctx):
        ctx.set(dut.default_budget, 1)
        ctx.set(dut.enable, 1)
        for use_budget, expect_budget in ((1, 2), (0, 1)):  # 3 clamps to K = 2
            for index, pixels in enumerate(image):
                assert ctx.get(dut.first_beat) == (index == 0)
                await beat(ctx, pixels, budget=3, use_budget=use_budget)
                write = dut.pixel_write
                assert ctx.get(write.en) == 1 and ctx.get(write.beat) == index
                assert values(ctx, write.codes, 4) == [p >> 5 for p in pixels]
                assert ctx.get(dut.loaded) == (index == 2)
                await ctx.tick()
                ctx.set(dut.pixels.valid, 0)  # a gap: nothing taken
                assert ctx.get(dut.pixel_write.en) == 0 and ctx.get(dut.loaded) == 0
                await ctx.tick()
            assert ctx.get(dut.budget) == expect_budget
        ctx.set(dut.enable, 0)
        await beat(ctx, image[0])
        assert ctx.get(dut.pixels.ready) == 0 and ctx.get(dut.pixel_write.en) == 0

    simulate(dut, bench)


def test_activation_buffers_give_row_codes_zero_past_the_inputs():
    dut = ActivationBuffers(TINY)  # layer 1 reads hidden buffer 0, layer 2 buffer 1
    codes = [3, 0, 15, 7, 1, 2, 4, 8, 9, 10, 11, 12, 13, 14, 5]  # 3 beats of 5 lanes

    async def bench(ctx):
        ctx.set(dut.pixel_write.en, 1)
        for beat in range(3):
            ctx.set(dut.pixel_write.beat, beat)
            ctx.set(dut.pixel_write.codes, codes[beat * 5:(beat + 1) * 5])
            await ctx.tick()
        ctx.set(dut.pixel_write.en, 0)
        hidden = [[1, 0], [0, 1], [1, 1], [0, 0]]  # buffer 0, blocks 0..3: inputs 0..7
        write = dut.hidden_write
        ctx.set(write.en, 1)
        for block, bits in enumerate(hidden):
            ctx.set(write.buffer, 0)
            ctx.set(write.col_block, block)
            ctx.set(write.activations, bits[0] | bits[1] << 1)
            await ctx.tick()
        ctx.set(write.buffer, 1)  # buffer 1, block 1: inputs 2 and 3 of layer 2
        ctx.set(write.col_block, 1)
        ctx.set(write.activations, 0b01)
        await ctx.tick()
        ctx.set(write.en, 0)
        signs = [1 if b else -1 for bits in hidden for b in bits]
        cases = {(0, 0): codes[0:4], (0, 2): codes[8:12],
                 (1, 0): signs[0:4], (1, 1): signs[4:7] + [0],  # layer 1 has 7 inputs
                 (2, 0): [0, 0, 1, -1], (2, 1): [0, 0, 0, 0]}  # 5 inputs; 4 never written
        for (layer, row_block), expect in cases.items():
            ctx.set(dut.read.layer, layer)
            ctx.set(dut.read.row_block, row_block)
            assert values(ctx, dut.read.row_x, 4) == expect, (layer, row_block)

    simulate(dut, bench)


def _expected_schedule(cfg, plane_any, budget):
    """(pass, layer, col_block, row_block, plane, rethreshold) in the order the spec gives:
    passes, layers, column blocks, row blocks, planes; pass p > 0 adds plane p only in the
    first layer, and a first-layer block without plane p is one rethreshold step (row block
    0) instead; planes with no enabled column are skipped."""
    order = []
    for p in range(budget + 1):
        base = 0
        for layer in range(cfg.num_layers):
            for cb in range(cfg.col_blocks(layer)):
                wanted = [p] if layer == 0 and p > 0 else range(p + 1)
                planes = [k for k in wanted if plane_any[base + cb] >> k & 1]
                if layer == 0 and p > 0 and not planes:
                    order.append((p, 0, cb, 0, p, True))
                for rb in range(cfg.row_blocks(layer)) if planes else ():
                    order += [(p, layer, cb, rb, k, False) for k in planes]
            base += cfg.col_blocks(layer)
    return order


def test_sequencer_issues_in_spec_order_at_contract_cycles():
    cfg = TINY_K2  # layers 9-6-3: col blocks (3, 2), row blocks (3, 2)
    latency, budget = 2, 2
    plane_any = [0b101, 0b001, 0b111, 0b011, 0b001]  # block 1: plane 0 only
    words = [0b111111, 0b000011, 0b111111, 0b001111, 0b000011]
    dut = Sequencer(cfg)
    m = Module()
    m.submodules.sequencer = dut
    m.d.comb += [dut.plane_any[c].eq(v) for c, v in enumerate(plane_any)]
    m.d.comb += dut.column_enables.data.eq(Array(words)[dut.column_enables.addr])
    expect = _expected_schedule(cfg, plane_any, budget)
    # pass 1: blocks 0 and 1 rethresholded (no plane 1), block 2 evaluated; pass 2: block 1
    assert [e[:3] for e in expect if e[5]] == [(1, 0, 0), (1, 0, 1), (2, 0, 1)]
    tile_base, block_base = [0, 9], [0, 3]
    seen, starts = [], []

    async def bench(ctx):
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        ctx.set(dut.run, 1)
        done_at, events = None, {}
        for cycle in range(400):
            ctx.set(dut.step_done, cycle == done_at)
            ctx.set(dut.busy, done_at is not None and cycle <= done_at)
            ctx.set(dut.layer_ready, events.get(cycle) == "layer")
            ctx.set(dut.pass_control.begin, events.get(cycle) == "pass")
            ctx.set(dut.pass_control.next_pass, len({s[0] for s in seen}))
            if ctx.get(dut.issue.start):
                context = ctx.get(dut.issue.context)
                trace = ctx.get(dut.trace)
                p, layer, k = trace.pass_, trace.layer, trace.plane
                cb = context.block.col_block
                # tile = first tile of the layer + col_block * row_blocks + row_block
                rb = ctx.get(dut.evaluation.group) - tile_base[layer] - cb * \
                    cfg.row_blocks(layer)
                again = bool(context.rethreshold)
                entry = (p, layer, cb, rb, k, again)
                seen.append(entry)
                starts.append(cycle)
                # a rethreshold starts no macro evaluation
                assert ctx.get(dut.evaluation.start) == (not again)
                mask = ((1 << 2) - 1) << (2 * k)
                assert ctx.get(dut.evaluation.col_en) == words[block_base[layer] + cb] & mask
                assert ctx.get(dut.evaluation.gain) == cfg.plane_gains[k]
                assert context.plane == k and context.resume == (layer == 0 and p > 0)
                assert context.block.global_col_block == block_base[layer] + cb
                if again:  # the stored sums alone, thresholded the cycle after
                    assert context.first == 1 and context.last == 1
                done_at = cycle + (1 if again else latency)
                nxt = expect[len(seen)] if len(seen) < len(expect) else None
                block_over = nxt is None or nxt[:3] != (p, layer, cb)
                assert context.last == block_over, entry
                layer_over = nxt is None or nxt[:2] != (p, layer)
                assert context.block.layer_end == layer_over
                if layer_over:  # threshold stage the cycle after done, decision one later
                    last = layer == cfg.num_layers - 1
                    if not last:
                        events[done_at + 1] = "layer"
                    elif p < budget:
                        events[done_at + 2] = "pass"
            await ctx.tick()

    simulate(m, bench)
    assert seen == expect
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # a step's latency (1 for a rethreshold), plus the pass or layer gap
    expect_gaps = [(1 if a[5] else latency) + (3 if b[0] != a[0] else 2 if b[1] != a[1]
                                                else 0)
                   for a, b in zip(expect, expect[1:])]
    assert gaps == expect_gaps


def test_in_flight_holds_the_context_until_done():
    dut = InFlight(TINY)
    first = {"plane": 1, "first": 1, "resume": 0, "last": 1, "rethreshold": 0,
             "block": {"layer": 2, "col_block": 1, "global_col_block": 8, "layer_end": 1}}
    second = {"plane": 0, "first": 0, "resume": 1, "last": 0, "rethreshold": 0,
              "block": {"layer": 0, "col_block": 3, "global_col_block": 3, "layer_end": 0}}
    again = {"plane": 1, "first": 1, "resume": 1, "last": 1, "rethreshold": 1,
             "block": {"layer": 0, "col_block": 2, "global_col_block": 2, "layer_end": 0}}

    async def bench(ctx):
        ctx.set(dut.issue.start, 1)
        ctx.set(dut.issue.context, first)
        await ctx.tick()
        ctx.set(dut.issue.start, 0)
        ctx.set(dut.issue.context, second)  # not started: not taken
        for _ in range(2):
            context = ctx.get(dut.retire.context)
            assert ctx.get(dut.busy) == 1 and context.plane == 1
            assert context.block.global_col_block == 8 and context.block.layer == 2
            await ctx.tick()
        ctx.set(dut.done, 1)  # done, and the next starts in the same cycle
        assert ctx.get(dut.retire.done) == 1 and ctx.get(dut.retire.context).plane == 1
        ctx.set(dut.issue.start, 1)
        await ctx.tick()
        ctx.set(dut.issue.start, 0)
        context = ctx.get(dut.retire.context)
        assert ctx.get(dut.busy) == 1 and context.resume == 1 and context.block.col_block == 3
        await ctx.tick()  # done with nothing starting
        ctx.set(dut.done, 0)
        assert ctx.get(dut.busy) == 0
        ctx.set(dut.issue.start, 1)
        await ctx.tick()
        ctx.set(dut.issue.start, 0)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        assert ctx.get(dut.busy) == 0
        ctx.set(dut.clear, 0)
        # A rethreshold step retires the cycle after its start, with no macro done; the
        # next (another rethreshold here) may start in that cycle.
        ctx.set(dut.issue.context, again)
        ctx.set(dut.issue.start, 1)
        assert ctx.get(dut.retire.done) == 0
        await ctx.tick()
        assert ctx.get(dut.busy) == 1 and ctx.get(dut.retire.done) == 1
        assert ctx.get(dut.retire.context).block.col_block == 2
        ctx.set(dut.issue.context, {**again, "block": {**again["block"], "col_block": 3}})
        await ctx.tick()
        ctx.set(dut.issue.start, 0)
        assert ctx.get(dut.retire.done) == 1
        assert ctx.get(dut.retire.context).block.col_block == 3
        await ctx.tick()  # retired, nothing started: idle, and no macro done counts
        assert ctx.get(dut.busy) == 0 and ctx.get(dut.retire.done) == 0

    simulate(dut, bench)


def test_accumulator_adds_the_plane_codes_and_hands_the_block_over():
    dut = Accumulator(TINY)  # 2 neurons, code of plane k, neuron i in column 2k + i
    block = {"layer": 1, "col_block": 2, "global_col_block": 6, "layer_end": 1}

    def context(plane, first, last, resume=0, blk=block, rethreshold=0):
        return {"plane": plane, "first": first, "resume": resume, "last": last,
                "rethreshold": rethreshold, "block": blk}

    async def bench(ctx):
        ctx.set(dut.retire.done, 1)
        ctx.set(dut.retire.context, context(0, 1, 0))
        ctx.set(dut.adc, [3, -2, 5, 7])
        await ctx.tick()
        assert values(ctx, dut.stage.acc, 2) == [3, -2] and ctx.get(dut.stage.pending) == 0
        ctx.set(dut.retire.context, context(1, 0, 1))
        ctx.set(dut.adc, [1, 1, -4, 6])
        await ctx.tick()
        ctx.set(dut.retire.done, 0)
        assert values(ctx, dut.stage.acc, 2) == [-1, 4] and ctx.get(dut.stage.pending) == 1
        handed = ctx.get(dut.stage.block)
        assert (handed.layer, handed.col_block, handed.global_col_block, handed.layer_end) \
            == (1, 2, 6, 1)
        await ctx.tick()
        assert ctx.get(dut.stage.pending) == 0  # one cycle only
        first_layer = {"layer": 0, "col_block": 3, "global_col_block": 3, "layer_end": 0}
        ctx.set(dut.retire.context, context(1, 1, 0, resume=1, blk=first_layer))
        # The stored sums' read is addressed by the step starting (``fetch``), not by the
        # one retiring; the store's read register (set directly here) holds the block's.
        ctx.set(dut.fetch, 2)
        ctx.set(dut.fetch_en, 1)
        assert ctx.get(dut.stored.addr) == 2 and ctx.get(dut.stored.en) == 1
        ctx.set(dut.fetch_en, 0)
        assert ctx.get(dut.stored.en) == 0
        ctx.set(dut.stored.data, [10, -20])
        ctx.set(dut.adc, [9, 9, 2, -1])
        ctx.set(dut.retire.done, 1)
        await ctx.tick()
        assert values(ctx, dut.stage.acc, 2) == [12, -21]  # stored sums + plane 1 codes
        ctx.set(dut.retire.done, 0)
        ctx.set(dut.adc, [0, 0, 0, 0])
        await ctx.tick()
        assert values(ctx, dut.stage.acc, 2) == [12, -21]  # held without done
        # Rethresholds of two blocks in consecutive cycles: the stored sums, no code added
        # (whatever the macro's adc shows), each handed over for one cycle.
        ctx.set(dut.adc, [9, 9, 2, -1])
        ctx.set(dut.retire.done, 1)
        for cb, stored in ((0, [4, -6]), (1, [-3, 8])):
            blk = {"layer": 0, "col_block": cb, "global_col_block": cb, "layer_end": cb}
            ctx.set(dut.retire.context, context(1, 1, 1, resume=1, blk=blk, rethreshold=1))
            ctx.set(dut.stored.data, stored)
            await ctx.tick()
            assert values(ctx, dut.stage.acc, 2) == stored
            assert ctx.get(dut.stage.pending) == 1 and ctx.get(dut.stage.block).col_block == cb
        ctx.set(dut.retire.done, 0)
        await ctx.tick()
        assert ctx.get(dut.stage.pending) == 0

    simulate(dut, bench)


def test_accumulator_reads_the_stored_sums_as_the_step_starts():
    """Accumulator and AccumulatorStore joined as in the controller: the stored sums of a
    first-layer block are read (registered) in the cycle its step starts, and that word is
    the one added to when the step retires ``macro_latency`` cycles later, whatever the
    address does in between; a rethreshold step starting as it retires reads its own."""
    cfg = TINY  # latency 3, 2 neurons, code of plane k, neuron i in column 2k + i
    m = Module()
    m.submodules.acc = acc = Accumulator(cfg)
    m.submodules.store = store = AccumulatorStore(cfg)
    wiring.connect(m, acc.stored, store.read)

    def first_layer(cb, rethreshold=0):
        return {"plane": 1, "first": 1, "resume": 1, "last": 1, "rethreshold": rethreshold,
                "block": {"layer": 0, "col_block": cb, "global_col_block": cb,
                          "layer_end": 0}}

    async def bench(ctx):
        for block, sums in ((0, [4, -6]), (2, [10, -20]), (1, [-3, 8])):
            ctx.set(store.write.en, 1)
            ctx.set(store.write.addr, block)
            ctx.set(store.write.data, sums)
            await ctx.tick()
        ctx.set(store.write.en, 0)
        ctx.set(acc.fetch, 2)  # cycle t: block 2's plane-1 evaluation starts
        ctx.set(acc.fetch_en, 1)
        await ctx.tick()
        ctx.set(acc.fetch, 0)  # t + 1, t + 2: nothing starts, the pointer is elsewhere
        ctx.set(acc.fetch_en, 0)
        await ctx.tick()
        await ctx.tick()
        # t + 3: its codes arrive; block 1's rethreshold starts in the same cycle.
        ctx.set(acc.retire.done, 1)
        ctx.set(acc.retire.context, first_layer(2))
        ctx.set(acc.adc, [9, 9, 2, -1])  # plane 1: columns 2 and 3
        ctx.set(acc.fetch, 1)
        ctx.set(acc.fetch_en, 1)
        await ctx.tick()
        assert values(ctx, acc.stage.acc, 2) == [10 + 2, -20 - 1]  # block 2's, not 1's
        assert ctx.get(acc.stage.pending) == 1 and ctx.get(acc.stage.block).col_block == 2
        # t + 4: the rethreshold retires with block 1's stored sums, no code added.
        ctx.set(acc.retire.context, first_layer(1, rethreshold=1))
        ctx.set(acc.fetch, 3)
        ctx.set(acc.fetch_en, 0)
        await ctx.tick()
        assert values(ctx, acc.stage.acc, 2) == [-3, 8]
        assert ctx.get(acc.stage.pending) == 1 and ctx.get(acc.stage.block).col_block == 1

    simulate(m, bench)


def test_threshold_stage_writes_activations_sums_and_logits():
    dut = ThresholdStage(TINY)  # output layer 2 has 6 classes in 3 blocks

    async def stage(ctx, layer, col_block, global_col_block, layer_end, acc, theta):
        ctx.set(dut.stage.pending, 1)
        ctx.set(dut.stage.block, {"layer": layer, "col_block": col_block,
                                  "global_col_block": global_col_block,
                                  "layer_end": layer_end})
        ctx.set(dut.stage.acc, acc)
        # The store's read is registered: the address is that of the block retiring now
        # (``fetch``, staged next cycle) in the pass being run; the data is the staged
        # block's word, fetched the cycle before.
        ctx.set(dut.pass_, 1)
        ctx.set(dut.fetch, (global_col_block + 1) % 10)
        assert ctx.get(dut.thresholds.addr.pass_) == 1
        assert ctx.get(dut.thresholds.addr.col_block) == (global_col_block + 1) % 10
        ctx.set(dut.thresholds.data, theta)

    def scores(ctx):
        return (ctx.get(dut.scores.en), ctx.get(dut.scores.col_block),
                values(ctx, dut.scores.values, 2))

    async def bench(ctx):
        await stage(ctx, 0, 3, 3, 1, [5, -2], [5, -1])  # 5 >= 5: +1; -2 < -1: -1
        hidden = dut.hidden_write
        assert [ctx.get(hidden.en), ctx.get(hidden.buffer), ctx.get(hidden.col_block),
                ctx.get(hidden.activations)] == [1, 0, 3, 0b01]
        assert ctx.get(dut.stored.en) == 1 and ctx.get(dut.stored.addr) == 3
        assert values(ctx, dut.stored.data, 2) == [5, -2]
        assert ctx.get(dut.layer_ready) == 1 and ctx.get(dut.pass_done) == 0
        assert scores(ctx)[0] == 0  # not the output layer
        await ctx.tick()
        await stage(ctx, 1, 1, 5, 0, [0, 7], [1, 7])
        assert [ctx.get(hidden.en), ctx.get(hidden.buffer), ctx.get(hidden.activations)] \
            == [1, 1, 0b10]
        assert ctx.get(dut.stored.en) == 0 and ctx.get(dut.layer_ready) == 0
        await ctx.tick()
        await stage(ctx, 2, 1, 8, 0, [40, -3], [10, 4])  # classes 2 and 3
        assert ctx.get(hidden.en) == 0 and ctx.get(dut.pass_done) == 0
        assert scores(ctx) == (1, 1, [30, -7])  # to the exit decision, in this cycle
        await ctx.tick()
        await stage(ctx, 2, 2, 9, 1, [1, 2], [3, -5])  # classes 4 and 5, last block
        assert ctx.get(dut.pass_done) == 1 and ctx.get(dut.layer_ready) == 0
        assert scores(ctx) == (1, 2, [-2, 7])
        await ctx.tick()
        ctx.set(dut.stage.pending, 0)
        await stage(ctx, 2, 0, 7, 1, [99, 99], [0, 0])
        ctx.set(dut.stage.pending, 0)  # not pending: no logit, no pulse
        assert ctx.get(dut.pass_done) == 0 and scores(ctx)[0] == 0
        await ctx.tick()
        assert values(ctx, dut.logits, 6) == [0, 0, 30, -7, -2, 7]

    simulate(dut, bench)


def test_threshold_stage_uses_the_word_fetched_as_the_block_retired():
    """ThresholdStage and ThresholdStore joined as in the controller: the word a block is
    compared with is the one addressed in the cycle before its stage cycle (its last step
    retiring: ``fetch`` and the pass then), while the stage cycle addresses the next."""
    cfg = TINY  # output layer 2: global blocks 7, 8, 9 (classes 0-1, 2-3, 4-5)
    m = Module()
    m.submodules.stage = stage = ThresholdStage(cfg)
    m.submodules.store = store = ThresholdStore(cfg)
    wiring.connect(m, stage.thresholds, store.read)

    async def bench(ctx):
        for pass_, block, neuron, theta in ((1, 8, 0, 10), (1, 8, 1, 4), (1, 9, 0, 3),
                                            (1, 9, 1, -5), (0, 8, 0, -100), (0, 8, 1, -100),
                                            (0, 9, 0, -100), (0, 9, 1, -100)):
            ctx.set(store.write.en, 1)
            ctx.set(store.write.pass_, pass_)
            ctx.set(store.write.col_block, block)
            ctx.set(store.write.neuron, neuron)
            ctx.set(store.write.theta, theta)
            await ctx.tick()
        ctx.set(store.write.en, 0)
        ctx.set(stage.pass_, 1)
        ctx.set(stage.fetch, 8)  # R: block 8's last step retires in pass 1
        await ctx.tick()
        ctx.set(stage.fetch, 9)  # its stage cycle, in which block 9's last step retires
        ctx.set(stage.stage.pending, 1)
        ctx.set(stage.stage.block, {"layer": 2, "col_block": 1, "global_col_block": 8,
                                    "layer_end": 0})
        ctx.set(stage.stage.acc, [40, -3])
        assert ctx.get(stage.scores.en) == 1 and ctx.get(stage.scores.col_block) == 1
        assert values(ctx, stage.scores.values, 2) == [40 - 10, -3 - 4]
        await ctx.tick()
        ctx.set(stage.fetch, 0)
        ctx.set(stage.pass_, 0)  # the pass of block 9's word was taken in the cycle before
        ctx.set(stage.stage.block, {"layer": 2, "col_block": 2, "global_col_block": 9,
                                    "layer_end": 1})
        ctx.set(stage.stage.acc, [1, 2])
        assert values(ctx, stage.scores.values, 2) == [1 - 3, 2 + 5]
        assert ctx.get(stage.pass_done) == 1
        await ctx.tick()
        ctx.set(stage.stage.pending, 0)
        assert values(ctx, stage.logits, 6)[2:] == [30, -7, -2, 7]

    simulate(m, bench)


async def score_pass(ctx, dut, cfg, logits, gap=1):
    """Hand the output layer's logits over as the threshold stage does: one column block's
    ``scores`` per stage cycle, ``gap`` cycles apart (1: consecutive rethreshold steps),
    ``pass_done`` with the last. Slots past the last class carry the largest value, which
    the decision must ignore."""
    nt, big = cfg.neurons_per_tile, (1 << (cfg.threshold_bits - 1)) - 1
    blocks = cfg.col_blocks(cfg.num_layers - 1)
    for b in range(blocks):
        chunk = list(logits[b * nt:(b + 1) * nt])
        ctx.set(dut.scores.en, 1)
        ctx.set(dut.scores.col_block, b)
        ctx.set(dut.scores.values, chunk + [big] * (nt - len(chunk)))
        ctx.set(dut.pass_done, b == blocks - 1)
        await ctx.tick()
        ctx.set(dut.scores.en, 0)
        ctx.set(dut.scores.values, [big] * nt)  # only the cycle of en counts
        ctx.set(dut.pass_done, 0)
        for _ in range(gap - 1 if b < blocks - 1 else 0):
            await ctx.tick()


async def decide(ctx, dut, cfg, logits, margin, current_pass, budget, gap=1):
    ctx.set(dut.margin, margin)
    ctx.set(dut.pass_control.current_pass, current_pass)
    ctx.set(dut.budget, budget)
    await score_pass(ctx, dut, cfg, logits, gap)
    assert ctx.get(dut.pass_control.begin) == 1
    verdict = (ctx.get(dut.exit_now), ctx.get(dut.pass_control.next_pass))
    await ctx.tick()
    assert ctx.get(dut.pass_control.begin) == 0  # taken once
    return verdict, ctx.get(dut.best_class), ctx.get(dut.exit_pass)


def test_exit_decision_takes_class_margin_and_next_pass():
    cfg = TINY_K2  # 3 classes in 2 output blocks of 2 (the last partial), K = 2
    dut = ExitDecision(cfg)

    async def bench(ctx):
        ctx.set(dut.run, 1)
        assert await decide(ctx, dut, cfg, [3, 12, 9], 3, 0, 2) == ((1, 1), 1, 0)  # 12-9>=3
        assert await decide(ctx, dut, cfg, [3, 12, 9], 4, 0, 2) == ((0, 1), 1, 0)
        assert await decide(ctx, dut, cfg, [9, -4, 9], 1, 1, 2) == ((0, 2), 0, 1)  # tie
        (exit_now, _), best, passed = await decide(ctx, dut, cfg, [-8, -9, -7], 100, 2, 2)
        assert (exit_now, best, passed) == (1, 2, 2)  # budget spent: no next pass
        (exit_now, _), _, _ = await decide(ctx, dut, cfg, [1, 2, 3], 100, 0, 0)
        assert exit_now == 1  # budget 0: pass 0 is the last
        assert await decide(ctx, dut, cfg, [1, 2, 3], 100, 1, 2) == ((0, 2), 2, 1)
        assert await decide(ctx, dut, cfg, [5, 5, 1], 0, 0, 2, gap=3) == ((1, 1), 0, 0)
        ctx.set(dut.run, 0)  # not running: the decision waits
        ctx.set(dut.pass_done, 1)
        await ctx.tick()
        ctx.set(dut.pass_done, 0)
        assert ctx.get(dut.pass_control.begin) == 0
        ctx.set(dut.clear, 1)  # a new image drops it
        await ctx.tick()
        ctx.set(dut.clear, 0)
        ctx.set(dut.run, 1)
        assert ctx.get(dut.pass_control.begin) == 0

    simulate(dut, bench)

    # One layer: no pass is skipped, a masked plane's pass rethresholds with its own row.
    single = ExitDecision(SINGLE)

    async def bench_single(ctx):
        ctx.set(single.run, 1)
        for pass_, verdict in ((0, (0, 1)), (1, (0, 2))):
            assert (await decide(ctx, single, SINGLE, [5, 1, 0, 0, 0], 100, pass_, 2))[0] \
                == verdict
        assert (await decide(ctx, single, SINGLE, [5, 1, 0, 0, 0], 100, 2, 2))[0][0] == 1

    simulate(single, bench_single)


def test_exit_decision_that_waits_merges_the_last_block_once():
    """With several output blocks, a decision taken cycles after ``pass_done`` (``run``
    low meanwhile) still sees each block's logits once: the maximum in the last block
    must not also become the runner-up."""
    cfg = TINY  # 6 classes in 3 blocks of 2
    dut = ExitDecision(cfg)

    async def bench(ctx):
        for margin, verdict in ((5, (1, 1)), (6, (0, 1))):  # 9 - 4 = 5
            ctx.set(dut.run, 0)
            ctx.set(dut.margin, margin)
            ctx.set(dut.pass_control.current_pass, 0)
            ctx.set(dut.budget, 1)
            await score_pass(ctx, dut, cfg, [1, 2, 3, 0, 9, 4])
            for _ in range(3):
                assert ctx.get(dut.pass_control.begin) == 0
                await ctx.tick()
            ctx.set(dut.run, 1)
            assert ctx.get(dut.pass_control.begin) == 1
            assert (ctx.get(dut.exit_now), ctx.get(dut.pass_control.next_pass)) == verdict
            await ctx.tick()
            assert ctx.get(dut.best_class) == 4

    simulate(dut, bench)


# One output block holding every class (the default design's case: 10 classes, 16 per tile).
ONE_BLOCK = SbnnConfig(layers=(9, 6, 10), active_rows=3, macro_cols=32, macro_rows=120,
                       num_supports=1, input_lanes=3, adc_bits=5, macro_latency=2)


@pytest.mark.parametrize("cfg", [ONE_BLOCK, TINY, TINY_K2, SINGLE],
                         ids=["one-block", "3-blocks", "partial-block", "1layer"])
def test_exit_decision_matches_a_sort_over_blocks(cfg):
    """The tournament split over the score cycles and the decision cycle, against a sort:
    class = first index of the largest logit, exit when largest - runner-up >= margin
    (a repeated maximum is its own runner-up), whatever the blocks' spacing."""
    dut = ExitDecision(cfg)
    rng = random.Random(cfg.num_classes * 7 + cfg.neurons_per_tile)
    n, tb = cfg.num_classes, cfg.threshold_bits
    lo, hi = -(1 << (tb - 1)), (1 << (tb - 1)) - 1

    async def bench(ctx):
        ctx.set(dut.run, 1)
        for _ in range(60):
            logits = [rng.randint(lo, hi) if rng.random() < 0.3 else rng.randint(-3, 3)
                      for _ in range(n)]
            margin = rng.choice([0, 1, 2, 3, 5, (1 << tb) - 1, rng.randint(0, 1 << tb)])
            ordered = sorted(logits, reverse=True)
            runner_up = ordered[1] if n > 1 else lo
            best = max(range(n), key=lambda j: (logits[j], -j))
            (exit_now, _), got, _ = await decide(ctx, dut, cfg, logits, margin, 0, 1,
                                                 gap=rng.choice([1, 2, 4]))
            assert (exit_now, got) == (int(ordered[0] - runner_up >= margin), best), \
                (logits, margin)

    simulate(dut, bench)


def test_counters_count_evaluations_columns_and_nonzero_rows():
    dut = Counters(TINY)

    async def bench(ctx):
        ctx.set(dut.run, 1)
        starts = [(0b1011, [0, 3, -1, 0]), (0b0001, [1, 1, 1, 1]), (0b0000, [0, 0, 0, 0])]
        for col_en, row_x in starts:
            ctx.set(dut.evaluation.start, 1)
            ctx.set(dut.evaluation.col_en, col_en)
            ctx.set(dut.evaluation.row_x, row_x)
            await ctx.tick()
        ctx.set(dut.evaluation.start, 0)
        ctx.set(dut.evaluation.col_en, 0b1111)  # no start: not counted
        await ctx.tick()
        ctx.set(dut.run, 0)
        await ctx.tick()
        assert [ctx.get(dut.cycles), ctx.get(dut.macro_evals), ctx.get(dut.column_evals),
                ctx.get(dut.dac_conversions)] == [4, 3, 3 + 1, 2 + 4]
        ctx.set(dut.clear, 1)
        await ctx.tick()
        assert [ctx.get(dut.cycles), ctx.get(dut.macro_evals), ctx.get(dut.column_evals),
                ctx.get(dut.dac_conversions)] == [0, 0, 0, 0]

    simulate(dut, bench)


def test_counters_add_columns_and_rows_a_cycle_after_the_start():
    """The start registers its columns and nonzero rows; the counts are added the next
    cycle, so they are complete two cycles after the last start, well before the result
    is read (``macro_latency + 3`` cycles after it, docs/architecture.md); a clear drops
    a start not yet counted."""
    cfg = TINY  # 4 columns, 4 rows, latency 3
    dut = Counters(cfg)

    def counts(ctx):
        return [ctx.get(dut.macro_evals), ctx.get(dut.column_evals),
                ctx.get(dut.dac_conversions)]

    async def bench(ctx):
        ctx.set(dut.run, 1)
        ctx.set(dut.evaluation.start, 1)
        ctx.set(dut.evaluation.col_en, 0b1011)  # 3 columns
        ctx.set(dut.evaluation.row_x, [0, 3, -1, 0])  # 2 rows driven
        await ctx.tick()
        assert counts(ctx) == [1, 0, 0]
        ctx.set(dut.evaluation.col_en, 0b0001)  # back to back: 1 column, 4 rows
        ctx.set(dut.evaluation.row_x, [1, 1, 1, 1])
        await ctx.tick()
        assert counts(ctx) == [2, 3, 2]
        ctx.set(dut.evaluation.start, 0)
        ctx.set(dut.evaluation.col_en, 0b1111)  # no start: not counted
        ctx.set(dut.evaluation.row_x, [1, 1, 1, 1])
        for _ in range(cfg.macro_latency + 3 - 1):  # last start + 2 .. + latency + 3
            await ctx.tick()
            assert counts(ctx) == [2, 4, 6]
        ctx.set(dut.evaluation.start, 1)
        await ctx.tick()
        ctx.set(dut.evaluation.start, 0)
        ctx.set(dut.clear, 1)  # the cycle after a start (a new image): nothing left over
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert counts(ctx) == [0, 0, 0]
        await ctx.tick()
        assert counts(ctx) == [0, 0, 0]

    simulate(dut, bench)
