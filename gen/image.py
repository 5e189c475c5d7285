"""Hardware image: a :class:`QuantizedModel` tiled onto the macro and the controller memories.

The image is what a chip is programmed with: one C-bit word per bitcell row, one column-
enable word per column block, one threshold per pass and neuron slot (pass p's answer is a
one-shot budget-p model). It is exported as $readmemh files and as the ``prog`` command
sequence the controller accepts.

Tiling (docs/architecture.md, sbnn/tiling.py): tiles are numbered layer by layer, column
block by column block, row block by row block; tile t lives in word-line group t. In a tile,
row r is input ``rb*A + r`` and column ``k*Nt + i`` is plane k of neuron ``cb*Nt + i``.
Bit 1 = weight +1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbnn.config import SbnnConfig
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import ProgOp, Sizes

__all__ = ["HardwareImage", "build_image"]


@dataclass(frozen=True)
class HardwareImage:
    """Physical contents: bitcells (groups*A, C), column enables (CB, C), thresholds
    (K+1, CB, Nt): ``thresholds[p, cb, i]`` is used in pass p by neuron slot i of global
    column block cb."""

    config: SbnnConfig
    bitcells: np.ndarray  # uint8 (tiles * active_rows, macro_cols), 1 = +1
    col_enables: np.ndarray  # uint8 (total_col_blocks, macro_cols)
    thresholds: np.ndarray  # int64 (planes, total_col_blocks, neurons_per_tile)

    def program(self, budget: int | None = None) -> list[tuple[ProgOp, int, int]]:
        """The ``prog`` stream commands that load this image (and optionally a budget)."""
        cfg, sz = self.config, Sizes(self.config)
        a = cfg.active_rows
        ops: list[tuple[ProgOp, int, int]] = []
        weights = _pack_rows(self.bitcells)
        for row, word in enumerate(weights):  # macro row = word-line group * A + row in group
            ops.append((ProgOp.WEIGHT_ROW, sz.weight_addr(row // a, row % a), word))
        tmask = (1 << cfg.threshold_bits) - 1
        for (pass_, cb, i), theta in np.ndenumerate(self.thresholds):
            ops.append((ProgOp.THRESHOLD, sz.threshold_addr(pass_, cb, i),
                        int(theta) & tmask))
        for cb, word in enumerate(_pack_rows(self.col_enables)):
            ops.append((ProgOp.COL_MASK, cb, word))
        if budget is not None:
            ops.append((ProgOp.BUDGET, 0, budget))
        return ops

    def program_text(self, budget: int | None = None) -> str:
        """:meth:`program` as text, one ``OP addr data`` command per line (hex numbers)."""
        return "".join(f"{op.name} {addr:#x} {data:#x}\n"
                       for op, addr, data in self.program(budget))

    def write_readmemh(self, folder: str | Path) -> list[Path]:
        """$readmemh files for the bitcell array, column enables and thresholds. The
        threshold file has one word per (pass, global column block), pass-major (line
        ``p * total_col_blocks + cb``, the threshold memory's own order), neuron slot 0 in
        the low bits."""
        folder = Path(folder)
        cfg = self.config
        tb = cfg.threshold_bits
        files = {
            "bitcells.hex": [_hex(w, cfg.macro_cols) for w in _pack_rows(self.bitcells)],
            "col_enables.hex": [_hex(w, cfg.macro_cols) for w in _pack_rows(self.col_enables)],
            "thresholds.hex": [
                "".join(_hex(int(t) & ((1 << tb) - 1), tb) for t in reversed(row))
                for row in self.thresholds.reshape(-1, self.thresholds.shape[-1])],
        }
        out = []
        for name, lines in files.items():
            path = folder / name
            path.write_text("\n".join(lines) + "\n")
            out.append(path)
        return out

    def summary(self) -> dict:
        cfg = self.config
        return {"tiles": cfg.tiling.total_tiles, "bitcell_rows": int(self.bitcells.shape[0]),
                "col_blocks": cfg.tiling.total_col_blocks,
                "enabled_columns": int(self.col_enables.sum())}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        np.savez_compressed(path, bitcells=np.packbits(self.bitcells, axis=1),
                            col_enables=self.col_enables, thresholds=self.thresholds,
                            config_json=np.frombuffer(self.config.to_json().encode(), np.uint8))
        return path

    @classmethod
    def load(cls, path: str | Path) -> HardwareImage:
        with np.load(path) as d:
            cfg = SbnnConfig.from_dict(json.loads(bytes(d["config_json"]).decode()))
            bits = np.unpackbits(d["bitcells"], axis=1, count=cfg.macro_cols)
            col_enables, thresholds = d["col_enables"], d["thresholds"]
        if thresholds.ndim == 2:  # saved before the pass dimension: one row, every pass
            thresholds = np.broadcast_to(thresholds, (cfg.planes,) + thresholds.shape).copy()
        return cls(cfg, bits, col_enables, thresholds)


def _pack_rows(bits: np.ndarray) -> list[int]:
    """Rows of 0/1 into integers, column 0 in bit 0."""
    weights = 1 << np.arange(bits.shape[1], dtype=object)
    return [int((row.astype(object) * weights).sum()) for row in bits]


def _hex(value: int, width: int) -> str:
    return f"{value:0{-(-width // 4)}x}"


def build_image(model: QuantizedModel) -> HardwareImage:
    """Tile a quantized model onto the macro and controller memories (sbnn/tiling.py)."""
    cfg = model.config
    tiling = cfg.tiling
    nt = tiling.neurons_per_tile
    bitcells = np.zeros((tiling.total_tiles * cfg.active_rows, cfg.macro_cols), dtype=np.uint8)
    col_en = np.zeros((tiling.total_col_blocks, cfg.macro_cols), dtype=np.uint8)
    thresholds = np.zeros((cfg.planes, tiling.total_col_blocks, nt), dtype=np.int64)
    for layer in range(cfg.num_layers):
        rows = tiling.macro_rows(layer)  # (m, n), the same for every plane
        for plane in range(cfg.planes):
            columns = tiling.plane_columns(layer, plane)
            bitcells[rows, columns[:, None]] = model.planes[layer][plane] > 0
        neurons = np.arange(cfg.layers[layer + 1])
        blocks = tiling.global_col_block(layer, neurons // nt)
        thresholds[:, blocks, neurons % nt] = model.thresholds[layer]
        col_en[blocks, tiling.plane_columns(layer, 0)] = 1
        for plane in range(1, cfg.planes):
            col_en[blocks, tiling.plane_columns(layer, plane)] = \
                model.support_mask[layer][:, plane - 1]
    return HardwareImage(cfg, bitcells, col_en, thresholds)
