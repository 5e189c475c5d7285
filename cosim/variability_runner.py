"""Cosim of the varied macro: the ideal build, with one drawn mismatch table as data files.

The behavioral macro of the simulation top (gen/sim_macro.py) reads a mismatch table from
``$readmemh`` files named by the plusarg ``+sbnn_mismatch=PREFIX`` at time 0, so every
Monte Carlo draw runs on the same Verilator build as the ideal cosim (cosim/runner.py):
no Verilog or build per draw. The draw's files live in
``<build_root>/<sha of config + tables>/``: ``mismatch.*.hex`` (what the macro reads),
``mismatch.npz`` (the same tables, for the golden model), ``config.json`` and
``variation.json`` (the parameters), then ``run/``. The testbench is cosim/tb_variability.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sbnn.config import SbnnConfig
from sbnn.gen.sim_macro import MISMATCH_PLUSARG, write_mismatch_files
from sbnn.gen.verilog import write_if_changed
from sbnn.golden.variability import DrawnVariation, Variation, draw
from sbnn.rtl.macro import MismatchTable

from .report import VariedBenchReport
from .runner import CosimJob, build_sim, run_bench

__all__ = ["VariabilityJob", "mismatch_table", "emit_varied", "build_varied", "run_varied"]

TB_MODULE = "sbnn.cosim.tb_variability"


@dataclass(frozen=True)
class VariabilityJob:
    """A cosim job (config, model, images, budgets, ...) plus the variation to draw."""

    job: CosimJob
    variation: Variation
    #: Expected values from another draw than the one built in (to prove the check bites).
    golden_variation: Variation | None = None


def mismatch_table(drawn: DrawnVariation) -> MismatchTable:
    """The integer tables of a draw, in the form the behavioral macro takes."""
    return MismatchTable.of(drawn.frac_bits, drawn.cell_int, drawn.row_gain_int,
                            drawn.adc_offset_int)


def _digest(cfg: SbnnConfig, drawn: DrawnVariation) -> str:
    h = hashlib.sha256(cfg.to_json().encode())
    h.update(drawn.variation.to_json().encode())
    for arr in (drawn.cell_int, drawn.row_gain_int, drawn.adc_offset_int):
        h.update(arr.astype("<i8").tobytes())
    return h.hexdigest()[:12]


def emit_varied(cfg: SbnnConfig, variation: Variation, build_root: str | Path) -> Path:
    """Draw the variation and write its tables (cached); return the folder. The macro's
    files are ``<folder>/mismatch.*.hex``: pass ``+sbnn_mismatch=<folder>/mismatch``."""
    drawn = draw(variation, cfg)
    base = Path(build_root).resolve() / _digest(cfg, drawn)
    base.mkdir(parents=True, exist_ok=True)
    if not (base / "mismatch.npz").exists():
        write_mismatch_files(mismatch_table(drawn), base / "mismatch")
        drawn.save(base / "mismatch.npz")
    write_if_changed(base / "config.json", cfg.to_json())
    write_if_changed(base / "variation.json", variation.to_json())
    return base


def build_varied(cfg: SbnnConfig, variation: Variation, build_root: str | Path) -> Path:
    """The simulator build for ``cfg`` (the ideal one: the variation is run-time data)."""
    return build_sim(cfg, build_root)


def run_varied(vjob: VariabilityJob, build_root: str | Path,
               test_module: str = TB_MODULE) -> VariedBenchReport:
    """Run the variability testbench on the varied top; returns its report."""
    job = vjob.job
    build_dir = build_varied(job.config, vjob.variation, build_root)
    tables = emit_varied(job.config, vjob.variation, build_root)
    run_dir = tables / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    vjob.variation.write_snapshot(run_dir / "variation.json")
    mismatch = tables / "mismatch.npz"
    if vjob.golden_variation is not None:
        mismatch = draw(vjob.golden_variation, job.config).save(run_dir / "golden_mismatch.npz")
    return run_bench(job, build_dir, run_dir, test_module, VariedBenchReport,
                     extra={"mismatch": str(mismatch)},
                     plusargs=[f"+{MISMATCH_PLUSARG}={tables / 'mismatch'}"])
