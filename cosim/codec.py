"""Packing and unpacking of port payloads, from the same layouts the RTL is built with.

Payloads are built with ``Layout.const`` and read with ``Layout.from_bits`` of the stream
layouts (rtl/interfaces.py), so the cocotb testbenches and the Amaranth-simulator tests
drive and read the ports exactly as the Verilog lays them out.
"""

from __future__ import annotations

import numpy as np

from sbnn.config import SbnnConfig
from sbnn.rtl.interfaces import ProgOp, pixel_layout, prog_layout, result_layout

__all__ = ["Codec"]


def _signed(value: int, width: int) -> int:
    return value - (1 << width) if value >> (width - 1) & 1 else value


def _split(value: int, width: int, count: int, signed: bool) -> tuple[int, ...]:
    mask = (1 << width) - 1
    out = [(value >> (i * width)) & mask for i in range(count)]
    return tuple(_signed(v, width) for v in out) if signed else tuple(out)


class Codec:
    """Payload words of the ``prog``, ``pixels`` and ``result`` streams (and the probes'
    lane arrays) for one config."""

    def __init__(self, config: SbnnConfig):
        self.cfg = config
        self._prog = prog_layout(config)
        self._result = result_layout(config)
        self._pixel = pixel_layout(config)
        self._lanes = self._pixel["pixels"].shape  # ArrayLayout of the beat's pixels

    def prog(self, op: ProgOp, addr: int, data: int) -> int:
        return self._prog.const({"op": op, "addr": addr, "data": data}).as_bits()

    def pixel_beats(self, pixels: np.ndarray, budget: int | None = None) -> list[int]:
        """Beats of ``input_lanes`` pixels, lane 0 in the low bits, last beat zero-padded;
        ``budget`` (on the first beat) overrides the budget register for this image."""
        cfg = self.cfg
        flat = np.asarray(pixels, dtype=np.uint8).reshape(-1)
        if flat.size != cfg.layers[0]:
            raise ValueError(f"image has {flat.size} pixels, layers[0] is {cfg.layers[0]}")
        padded = np.zeros(cfg.input_beats * cfg.input_lanes, dtype=np.uint8)
        padded[: flat.size] = flat
        # Lane i of the ArrayLayout of 8-bit pixels is bits 8i..8i+7: a beat's lanes are its
        # bytes, little-endian (from_bits takes them whole; one const per lane would cost
        # ~0.2 ms a beat, seconds on a 10,000-image run).
        beats = []
        for b in range(cfg.input_beats):
            lanes = padded[b * cfg.input_lanes:(b + 1) * cfg.input_lanes]
            fields: dict = {"pixels": self._lanes.from_bits(
                int.from_bytes(lanes.tobytes(), "little"))}
            if budget is not None and b == 0:
                fields |= {"budget": budget, "use_budget": 1}
            beats.append(self._pixel.const(fields).as_bits())
        return beats

    def row_x(self, value: int) -> tuple[int, ...]:
        return _split(value, self.cfg.x_bits, self.cfg.active_rows, signed=True)

    def adc(self, value: int) -> tuple[int, ...]:
        return _split(value, self.cfg.adc_bits, self.cfg.macro_cols, signed=True)

    def result(self, value: int) -> dict:
        """The result payload's fields (``logits`` a tuple of signed values)."""
        view = self._result.from_bits(value)
        out = {name: int(view[name]) for name, _ in self._result if name != "logits"}
        out["logits"] = tuple(int(v) for v in view["logits"])
        return {name: out[name] for name, _ in self._result}
