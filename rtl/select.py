"""Small selection circuits shared by the controller's components."""

from __future__ import annotations

from collections.abc import Sequence

from amaranth.hdl import Array, Const, Module, Signal, Value

__all__ = ["lut", "lowest_set"]


def lut(values: Sequence[int], index: Value) -> Value:
    """Constant table indexed by a signal."""
    width = max(1, max(int(v) for v in values).bit_length())
    return Array([Const(int(v), width) for v in values])[index]


def lowest_set(m: Module, bits: Value, width: int, name: str) -> tuple[Value, Signal]:
    """(found, index) of the lowest set bit of ``bits``; ``index`` is a Signal named
    ``name`` (a priority chain of ``width`` stages, built once)."""
    index = Signal(range(max(width, 2)), name=name)
    for k in reversed(range(width)):
        with m.If(bits[k]):
            m.d.comb += index.eq(k)
    return bits.any(), index
