"""Where every weight of the network lives in the macro: the tiling of docs/architecture.md.

One home for the mapping that the golden model (golden/hwpath.py), the variability model
(golden/variability.py), the hardware image (gen/image.py), the config checks
(sbnn/config.py) and the controller (rtl/controller.py) all follow:

* weight layer ``l`` of ``n`` inputs and ``m`` neurons is cut into *row blocks* of
  ``active_rows`` inputs and *column blocks* of ``neurons_per_tile`` neurons;
* a (column block, row block) pair is a *tile*; tiles are numbered layer by layer, column
  block by column block, row block by row block, and tile ``t`` is stored in word-line group
  ``t`` (macro rows ``t * active_rows`` ..); row ``r`` of a tile holds input
  ``row_block * active_rows + r``;
* column blocks are also numbered across layers (the *global* column block indexes the
  threshold and column-enable memories);
* inside a tile, column ``k * neurons_per_tile + i`` holds plane ``k`` (0 = base, 1..K =
  supports) of neuron ``col_block * neurons_per_tile + i``.

The index methods accept numpy arrays as well as integers, so callers that would loop over
neurons or inputs index whole layers at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import accumulate
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sbnn.config import SbnnConfig

__all__ = ["Tiling"]

#: An index argument: one integer, or a numpy array of them (the result has its shape).
Index = int | np.ndarray


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


@dataclass(frozen=True)
class Tiling:
    """The tiling of a design: the fields of :class:`~sbnn.config.SbnnConfig` it depends on,
    and every index derived from them. Build it with :meth:`of` (or ``config.tiling``)."""

    #: Layer widths, inputs first (``SbnnConfig.layers``).
    layers: tuple[int, ...]
    #: Inputs of one row block: rows driven together in one evaluation.
    active_rows: int
    #: Bitcell columns of the macro.
    macro_cols: int
    #: Weight planes per neuron (base plane plus K supports).
    planes: int

    @classmethod
    def of(cls, config: SbnnConfig) -> Tiling:
        """The tiling of ``config`` (one shared object per distinct shape)."""
        return _cached_tiling(tuple(config.layers), config.active_rows, config.macro_cols,
                              config.num_supports + 1)

    # ---------------------------------------------------------------- sizes

    @property
    def num_layers(self) -> int:
        """Number of weight layers."""
        return len(self.layers) - 1

    @property
    def neurons_per_tile(self) -> int:
        """Neurons of one column block: each takes one column per plane."""
        return self.macro_cols // self.planes

    def row_blocks(self, layer: int) -> int:
        """Row blocks of ``layer``: its inputs in groups of ``active_rows``."""
        return _ceil_div(self.layers[layer], self.active_rows)

    def col_blocks(self, layer: int) -> int:
        """Column blocks of ``layer``: its neurons in groups of ``neurons_per_tile``."""
        return _ceil_div(self.layers[layer + 1], self.neurons_per_tile)

    def tiles(self, layer: int) -> int:
        """Tiles of ``layer``: one per (column block, row block)."""
        return self.row_blocks(layer) * self.col_blocks(layer)

    @cached_property
    def _first_tiles(self) -> tuple[int, ...]:
        """First tile of each layer, and the total after the last."""
        return tuple(accumulate((self.tiles(i) for i in range(self.num_layers)), initial=0))

    @cached_property
    def _first_col_blocks(self) -> tuple[int, ...]:
        """First global column block of each layer, and the total after the last."""
        return tuple(accumulate((self.col_blocks(i) for i in range(self.num_layers)),
                                initial=0))

    @property
    def total_tiles(self) -> int:
        """Tiles of every layer: the word-line groups the network occupies."""
        return self._first_tiles[-1]

    @property
    def total_col_blocks(self) -> int:
        """Column blocks of every layer: entries of the threshold and column-enable memories."""
        return self._first_col_blocks[-1]

    def first_tile(self, layer: int) -> int:
        """Tile number (= word-line group) of the first tile of ``layer``."""
        return self._first_tiles[layer]

    def first_col_block(self, layer: int) -> int:
        """Global column block of the first column block of ``layer``."""
        return self._first_col_blocks[layer]

    # ---------------------------------------------------------------- indices

    def tile(self, layer: int, col_block: Index, row_block: Index) -> Index:
        """Tile number (= word-line group) holding (``col_block``, ``row_block``) of ``layer``."""
        return self.first_tile(layer) + col_block * self.row_blocks(layer) + row_block

    def global_col_block(self, layer: int, col_block: Index) -> Index:
        """Global column block of ``col_block`` of ``layer`` (threshold/enable memory entry)."""
        return self.first_col_block(layer) + col_block

    def input_rows(self, layer: int, row_block: int) -> slice:
        """The inputs of ``layer`` that row block ``row_block`` drives (the last may be short)."""
        lo = row_block * self.active_rows
        return slice(lo, min(self.layers[layer], lo + self.active_rows))

    def block_neurons(self, layer: int, col_block: int) -> range:
        """The neurons of ``layer`` that column block ``col_block`` holds (the last may be
        short)."""
        lo = col_block * self.neurons_per_tile
        return range(lo, min(self.layers[layer + 1], lo + self.neurons_per_tile))

    def plane_column(self, plane: Index, neuron: Index) -> Index:
        """Macro column holding plane ``plane`` of ``neuron`` (any neuron of any layer: only
        its place inside its column block matters)."""
        return plane * self.neurons_per_tile + neuron % self.neurons_per_tile

    def tile_rows(self, layer: int) -> np.ndarray:
        """(n,) row of its tile that each input of ``layer`` is on: the row DAC driving it."""
        return np.arange(self.layers[layer]) % self.active_rows

    def macro_rows(self, layer: int) -> np.ndarray:
        """(m, n) macro row holding the weight (neuron j, input i) of ``layer``, every plane
        alike: row ``i % active_rows`` of tile (``j // neurons_per_tile``,
        ``i // active_rows``)."""
        neuron = np.arange(self.layers[layer + 1])[:, None]
        inputs = np.arange(self.layers[layer])[None, :]
        tile = self.tile(layer, neuron // self.neurons_per_tile, inputs // self.active_rows)
        return tile * self.active_rows + self.tile_rows(layer)[None, :]

    def plane_columns(self, layer: int, plane: int) -> np.ndarray:
        """(m,) macro column holding plane ``plane`` of each neuron of ``layer``."""
        return self.plane_column(plane, np.arange(self.layers[layer + 1]))


@lru_cache(maxsize=256)
def _cached_tiling(layers: tuple[int, ...], active_rows: int, macro_cols: int,
                   planes: int) -> Tiling:
    return Tiling(layers, active_rows, macro_cols, planes)
