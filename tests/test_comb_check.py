"""The linear combinational-cycle check (gen/comb_check.py) agrees with Amaranth's own."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, Signal, _nir
from amaranth.hdl._ir import Fragment, _emit_netlist

from sbnn.gen import comb_check


def _netlist(m: Module, ports):
    """The netlist Amaranth checks, as build_netlist has it right before the check."""
    design = Fragment.get(m, None).prepare(ports=ports, hierarchy=("top",))
    netlist = _nir.Netlist()
    _emit_netlist(netlist, design)
    return netlist


def _verdict(check, netlist) -> bool:
    """True if ``check`` finds a cycle."""
    try:
        check(netlist)
    except _nir.CombinationalCycle:
        return True
    return False


def test_cycle_through_a_part_select_is_found():
    m = Module()
    sel = Signal(3)
    word = Signal(8)
    out = Signal(1)
    # out is one bit of word picked by sel; word's bit 5 is out itself: a real cycle
    m.d.comb += out.eq(word.bit_select(sel, 1))
    m.d.comb += word.eq(out << 5)
    netlist = _netlist(m, [sel, out])
    assert _verdict(comb_check.AMARANTH_CHECK, netlist)  # the reference agrees it is one
    with pytest.raises(_nir.CombinationalCycle, match="Combinational cycle detected"):
        comb_check.check_comb_cycles(_netlist(m, [sel, out]))


def test_wide_part_selects_without_cycle_pass():
    m = Module()
    sel = Signal(6)
    bank = Signal(64 * 16)
    outs = [Signal(16, name=f"o{i}") for i in range(8)]
    for i, o in enumerate(outs):
        m.d.comb += o.eq(bank.word_select(sel + i, 16))
    m.d.sync += bank.eq(bank.rotate_left(1) ^ sel)
    comb_check.check_comb_cycles(_netlist(m, [sel, *outs]))  # must not raise


def _random_design(rng: random.Random):
    """Random comb logic over a few signals: part-selects, arithmetic, muxes, some flops."""
    sigs = [Signal(rng.randint(1, 12), name=f"s{i}") for i in range(rng.randint(3, 7))]
    inputs = [Signal(rng.randint(1, 6), name=f"i{i}") for i in range(2)]
    m = Module()
    pool = sigs + inputs
    for s in sigs:
        a, b = rng.choice(pool), rng.choice(pool)
        kind = rng.randrange(5)
        if kind == 0:
            expr = a.bit_select(rng.choice(inputs + sigs)[:3], 1)
        elif kind == 1:
            expr = a + b
        elif kind == 2:
            expr = a[rng.randrange(len(a))].replicate(len(s))
        elif kind == 3:
            expr = (a & b) | rng.choice(inputs)
        else:
            m.d.sync += s.eq(a ^ b)
            continue
        if rng.random() < 0.3:  # partial assignment: only some bits depend on the expr
            lo = rng.randrange(len(s))
            m.d.comb += s[lo:].eq(expr)
        else:
            m.d.comb += s.eq(expr)
    return m, inputs + sigs


def test_same_verdict_as_amaranth():
    verdicts = []
    for seed in range(300):
        ours = _verdict(comb_check.check_comb_cycles,
                        _netlist(*_random_design(random.Random(seed))))
        theirs = _verdict(comb_check.AMARANTH_CHECK,
                          _netlist(*_random_design(random.Random(seed))))
        assert ours == theirs, f"seed {seed}: ours {ours}, amaranth {theirs}"
        verdicts.append(theirs)
    # both outcomes occur, else the comparison would prove little
    assert 20 < sum(verdicts) < 280
