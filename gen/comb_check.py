"""Amaranth's combinational-cycle check, exact but linear in the netlist size.

Amaranth 0.5 checks every netlist for combinational cycles before it writes Verilog
(``Netlist.check_comb_cycles``). It walks the bit-level dependency graph once, which is
linear in the number of *edges*, but a dynamic part-select (``Part``: ``bit_select`` /
``word_select`` with a variable offset, which the controller uses to pick rows, lanes and
register-file words) makes every output bit depend on every input bit. The edge count of one
such cell is then output width x input width, and on this design the check took about 90 %
of Verilog generation (33 of 37 CPU-s for the default controller; amaranth issue #1628,
fixed upstream after 0.5 by PR #1632, not in a 0.5 release).

This module replaces the method with the same depth-first search plus one observation:
all output bits of a ``Part`` cell have the *same* inputs, so once one of its bits has been
fully explored without finding a cycle, every other bit of that cell is acyclic too and need
not walk the inputs again. A bit whose exploration is still in progress is never
short-cut, so a cycle through a ``Part`` cell is still found: the check stays exact (same
netlists accepted, same ``CombinationalCycle`` raised), it only stops re-enumerating edges.
The search is iterative, so deep logic cannot hit Python's recursion limit.

:func:`install` patches ``amaranth.hdl._nir.Netlist`` (a private API: the patch refuses to
install on any Amaranth other than the 0.5 series pinned in constraints.txt).
"""

from __future__ import annotations

import amaranth
from amaranth.hdl import _ast, _nir

__all__ = ["check_comb_cycles", "install", "AMARANTH_CHECK"]

#: Amaranth's own method, kept for the differential tests (tests/test_comb_check.py).
AMARANTH_CHECK = _nir.Netlist.check_comb_cycles


def _uniform(cell) -> bool:
    """Cells whose every output bit depends on exactly the same input nets."""
    return isinstance(cell, _nir.Part)


def _sources(netlist, net):
    """(source net, src_loc) pairs that ``net`` depends on combinationally."""
    if net.is_const:
        return iter(())
    if net.is_late:
        return iter(((netlist.connections[net], None),))
    return iter(netlist.cells[net.cell].comb_edges_to(net.bit))


def _describe(netlist, net, src_loc) -> tuple[object, int, object]:
    """One step of a cycle, as amaranth's own message describes it."""
    if net.is_late:
        sig, bit = netlist.late_to_signal[net]
        return sig, bit, sig.src_loc
    return netlist.cells[net.cell], net.bit, src_loc


def _raise_cycle(netlist, stack: list, start, closing_loc) -> None:
    """``stack`` entries are [net, sources, src_loc of the edge into net]; the cycle runs
    from ``start`` (on the stack) to the top and back to ``start`` by ``closing_loc``."""
    begin = next(i for i, entry in enumerate(stack) if entry[0] == start)
    msg = ["Combinational cycle detected, path:\n"]
    for depth in range(begin, len(stack)):
        # each step is described with the location of the edge taken out of it
        out_loc = stack[depth + 1][2] if depth + 1 < len(stack) else closing_loc
        obj, bit, src_loc = _describe(netlist, stack[depth][0], out_loc)
        if isinstance(obj, _ast.Signal):
            obj = f"signal {obj.name}"
        elif isinstance(obj, _nir.Operator):
            obj = f"operator {obj.operator}"
        else:
            obj = f"cell {obj.__class__.__qualname__}"
        src_loc = "<unknown>:0" if src_loc is None else f"{src_loc[0]}:{src_loc[1]}"
        msg.append(f"  {src_loc}: {obj} bit {bit}\n")
    raise _nir.CombinationalCycle("".join(msg))


def check_comb_cycles(netlist) -> None:
    """Raise ``CombinationalCycle`` if ``netlist`` (before ``resolve_all_nets``) has one."""
    checked: set = set()
    busy: set = set()  # nets on the current search path
    explored_cells: set[int] = set()  # uniform cells with one bit fully explored

    def shortcut(net) -> bool:
        return not net.is_const and not net.is_late and net.cell in explored_cells

    def visit(root) -> None:
        if root in checked:
            return
        if shortcut(root):
            checked.add(root)
            return
        # entries: [net, iterator over its sources, src_loc of the edge that led here]
        stack = [[root, _sources(netlist, root), None]]
        busy.add(root)
        while stack:
            top = stack[-1]
            for src, src_loc in top[1]:
                if src in checked:
                    continue
                if src in busy:
                    _raise_cycle(netlist, stack, src, src_loc)
                if shortcut(src):
                    checked.add(src)
                    continue
                busy.add(src)
                stack.append([src, _sources(netlist, src), src_loc])
                break
            else:
                stack.pop()
                net = top[0]
                busy.discard(net)
                checked.add(net)
                if not net.is_const and not net.is_late and \
                        _uniform(netlist.cells[net.cell]):
                    explored_cells.add(net.cell)

    for cell_idx, cell in enumerate(netlist.cells):
        for net in cell.output_nets(cell_idx):
            visit(net)
    for value in netlist.signals.values():
        for net in value:
            visit(net)


_installed = False


def install() -> None:
    """Use :func:`check_comb_cycles` for every Amaranth conversion in this process."""
    global _installed
    if _installed:
        return
    if not amaranth.__version__.startswith("0.5."):
        raise RuntimeError(f"sbnn.gen.comb_check patches Amaranth 0.5 internals; found "
                           f"amaranth {amaranth.__version__} (see constraints.txt)")
    _nir.Netlist.check_comb_cycles = check_comb_cycles
    _installed = True
