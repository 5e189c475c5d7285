"""Packing and unpacking of port payloads, from the same layouts the RTL is built with.

Used by the cocotb testbenches and the Amaranth-simulator tests alike, so both drive and read
the ports exactly as the Verilog lays them out.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Shape

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
    def __init__(self, config: SbnnConfig):
        self.cfg = config
        self._prog = prog_layout(config)
        self._result = result_layout(config)
        self._pixel = pixel_layout(config)

    def prog(self, op: ProgOp, addr: int, data: int) -> int:
        lay = self._prog
        return (op.value << lay["op"].offset | addr << lay["addr"].offset
                | data << lay["data"].offset)

    def pixel_beats(self, pixels: np.ndarray, budget: int | None = None) -> list[int]:
        """Beats of ``input_lanes`` pixels, lane 0 in the low bits, last beat zero-padded;
        ``budget`` (on the first beat) overrides the budget register for this image."""
        cfg = self.cfg
        flat = np.asarray(pixels, dtype=np.uint8).reshape(-1)
        if flat.size != cfg.layers[0]:
            raise ValueError(f"image has {flat.size} pixels, layers[0] is {cfg.layers[0]}")
        padded = np.zeros(cfg.input_beats * cfg.input_lanes, dtype=np.uint8)
        padded[: flat.size] = flat
        beats = []
        for b in range(cfg.input_beats):
            lanes = padded[b * cfg.input_lanes:(b + 1) * cfg.input_lanes]
            beats.append(int.from_bytes(lanes.tobytes(), "little")
                         << self._pixel["pixels"].offset)
        if budget is not None:
            beats[0] |= (budget << self._pixel["budget"].offset
                         | 1 << self._pixel["use_budget"].offset)
        return beats

    def row_x(self, value: int) -> tuple[int, ...]:
        return _split(value, self.cfg.x_bits, self.cfg.active_rows, signed=True)

    def adc(self, value: int) -> tuple[int, ...]:
        return _split(value, self.cfg.adc_bits, self.cfg.macro_cols, signed=True)

    def result(self, value: int) -> dict:
        lay = self._result
        out = {}
        for name, fld in lay:
            raw = (value >> fld.offset) & ((1 << Shape.cast(fld.shape).width) - 1)
            out[name] = raw
        out["logits"] = _split(out["logits"], self.cfg.threshold_bits, self.cfg.num_classes,
                               signed=True)
        return out
