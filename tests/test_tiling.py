"""The tiling (sbnn/tiling.py) against nested loops written from docs/architecture.md, and
the timing contract's names (sbnn/timing.py) against the document's own numbers."""

import re
from pathlib import Path

import numpy as np
import pytest

from sbnn import timing
from sbnn.config import SbnnConfig
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.tiling import Tiling

CONFIGS = [
    SbnnConfig(layers=(10, 7, 3), active_rows=4, macro_cols=6, macro_rows=128,
               num_supports=2, gain_bits=3, adc_bits=5, adc_steps=(4, 1)),
    SbnnConfig(layers=(13, 5, 4, 3), active_rows=3, macro_cols=4, macro_rows=255,
               num_supports=1, adc_bits=4, dac_bits=3, adc_steps=(2, 1, 2)),
    SbnnConfig(layers=(9, 4), active_rows=9, macro_cols=3, macro_rows=18, num_supports=0,
               adc_bits=6, adc_steps=(8,)),
]
ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _walk(cfg: SbnnConfig):
    """(layer, col_block, row_block, tile, global col block) in the documented order:
    layer by layer, column block by column block, row block by row block."""
    nt = cfg.macro_cols // (cfg.num_supports + 1)
    tile = global_cb = 0
    for layer in range(len(cfg.layers) - 1):
        n, m = cfg.layers[layer], cfg.layers[layer + 1]
        for cb in range((m + nt - 1) // nt):
            for rb in range((n + cfg.active_rows - 1) // cfg.active_rows):
                yield layer, cb, rb, tile, global_cb
                tile += 1
            global_cb += 1


@pytest.mark.parametrize("cfg", CONFIGS, ids=["K2", "3layer", "K0"])
def test_tile_numbers_follow_the_documented_order(cfg):
    tiling = Tiling.of(cfg)
    walk = list(_walk(cfg))
    for layer, cb, rb, tile, global_cb in walk:
        assert tiling.tile(layer, cb, rb) == tile
        assert tiling.global_col_block(layer, cb) == global_cb
    assert tiling.total_tiles == len(walk) == cfg.total_tiles
    assert tiling.total_col_blocks == walk[-1][4] + 1 == cfg.total_col_blocks
    for layer in range(cfg.num_layers):
        first = min(w for w in walk if w[0] == layer)
        assert (tiling.first_tile(layer), tiling.first_col_block(layer)) == (first[3], first[4])
        assert tiling.tiles(layer) == sum(1 for w in walk if w[0] == layer)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["K2", "3layer", "K0"])
def test_every_weight_has_its_own_bitcell(cfg):
    """Row r of a tile is input rb*A + r; column k*Nt + i is plane k of neuron cb*Nt + i."""
    tiling = cfg.tiling
    a, nt = cfg.active_rows, cfg.macro_cols // cfg.planes
    cells = set()
    for layer in range(cfg.num_layers):
        rows = tiling.macro_rows(layer)
        n, m = cfg.layers[layer], cfg.layers[layer + 1]
        assert rows.shape == (m, n)
        for plane in range(cfg.planes):
            columns = tiling.plane_columns(layer, plane)
            for j in range(m):
                assert columns[j] == plane * nt + j % nt
                for i in range(n):
                    tile = next(w[3] for w in _walk(cfg)
                                if w[:3] == (layer, j // nt, i // a))
                    assert rows[j, i] == tile * a + i % a
                    cells.add((int(rows[j, i]), int(columns[j])))
        assert list(tiling.tile_rows(layer)) == [i % a for i in range(n)]
    # no two weights (of any layer or plane) share a bitcell, and all fit the macro
    assert len(cells) == sum(cfg.layers[i] * cfg.layers[i + 1] * cfg.planes
                             for i in range(cfg.num_layers))
    assert max(r for r, _ in cells) < cfg.macro_rows and max(c for _, c in cells) < \
        cfg.macro_cols


@pytest.mark.parametrize("cfg", CONFIGS, ids=["K2", "3layer", "K0"])
def test_blocks_partition_inputs_and_neurons(cfg):
    tiling = cfg.tiling
    for layer in range(cfg.num_layers):
        n, m = cfg.layers[layer], cfg.layers[layer + 1]
        rows = [list(range(n))[tiling.input_rows(layer, rb)]
                for rb in range(tiling.row_blocks(layer))]
        assert sum(rows, []) == list(range(n))
        assert all(len(r) == cfg.active_rows for r in rows[:-1]) and 0 < len(rows[-1])
        neurons = [list(tiling.block_neurons(layer, cb)) for cb in range(tiling.col_blocks(layer))]
        assert sum(neurons, []) == list(range(m))
        assert all(len(b) == tiling.neurons_per_tile for b in neurons[:-1])


def test_vectorized_indices_equal_scalar_ones():
    cfg = CONFIGS[1]
    tiling = cfg.tiling
    cb, rb = np.meshgrid(np.arange(tiling.col_blocks(1)), np.arange(tiling.row_blocks(1)))
    got = tiling.tile(1, cb, rb)
    want = [[tiling.tile(1, int(c), int(r)) for c, r in zip(cr, rr)] for cr, rr in zip(cb, rb)]
    assert got.tolist() == want
    assert tiling.plane_column(1, np.arange(5)).tolist() == [tiling.plane_column(1, j)
                                                             for j in range(5)]


def test_default_design_sizes_and_one_shared_frozen_object():
    cfg = SbnnConfig()  # 784-256-10, 64 active rows, 32 columns, K=1: 16 neurons per tile
    tiling = cfg.tiling
    assert tiling.neurons_per_tile == 16
    assert [tiling.row_blocks(i) for i in range(2)] == [13, 4]
    assert [tiling.col_blocks(i) for i in range(2)] == [16, 1]
    assert (tiling.total_tiles, tiling.total_col_blocks) == (13 * 16 + 4, 17)
    assert (tiling.first_tile(1), tiling.first_col_block(1)) == (208, 16)
    assert Tiling.of(SbnnConfig()) is tiling
    with pytest.raises(AttributeError):
        tiling.active_rows = 3


def _contract_gap(pattern: str) -> int:
    section = ARCHITECTURE.read_text().split("## Timing contract", 1)[1].split("\n## ", 1)[0]
    found = re.search(pattern, " ".join(section.split()))
    assert found, f"docs/architecture.md's timing contract no longer says {pattern!r}"
    return int(found.group(1))


def test_timing_names_are_the_documented_contract():
    assert timing.LAYER_GAP == _contract_gap(r"new layer starts `macro_latency \+ (\d+)`")
    assert timing.PASS_GAP == _contract_gap(r"new pass starts `macro_latency \+ (\d+)`")
    assert timing.RESULT_GAP == _contract_gap(r"result is valid `macro_latency \+ (\d+)`")
    assert "Cycle 0 is the cycle after the last input beat is accepted" in \
        " ".join(ARCHITECTURE.read_text().split())
    assert timing.COMPUTE_START_DELAY == 1
    assert timing.start_gap(4, new_layer=False, new_pass=False) == 4
    assert timing.start_gap(4, new_layer=True, new_pass=False) == 6
    assert timing.start_gap(4, new_layer=True, new_pass=True) == 7
    assert timing.result_cycle(100, 5) == 108
    # a rethreshold step: latency 1 in place of macro_latency in the same rules
    assert timing.RETHRESHOLD_LATENCY == _contract_gap(
        r"an evaluation whose latency is (\d+) instead of `macro_latency`")
    assert timing.start_gap(timing.RETHRESHOLD_LATENCY, new_layer=True, new_pass=False) == 3


def test_default_design_cycles_are_the_documented_ones():
    """docs/architecture.md: 212 evaluations and 853 cycles at budget 0, 428 and 1722 at
    budget 1 (every support column evaluated)."""
    model = QuantizedModel.random(SbnnConfig(), np.random.default_rng(0), mask_keep=1.0)
    for budget, evaluations, cycles in ((0, 212, 853), (1, 428, 1722)):
        sched = hwpath.schedule(model, budget)
        assert (len(sched), sched.total_cycles()) == (evaluations, cycles)
