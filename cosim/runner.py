"""Build the generated Verilog with Verilator and run the cocotb regression (cocotb 2 runner)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbnn import progress
from sbnn.config import SbnnConfig
from sbnn.gen.lint import waiver_flags
from sbnn.gen.verilog import SIM_TOP, emit_all
from sbnn.toolchain import opt_level, setup_toolchain, trace_flags

from .job_file import JOB_ENV
from .report import BenchReport, JsonRecord, ProtocolReport

__all__ = ["CosimJob", "build_sim", "run_cosim", "run_bench", "REWRITE_ASSERTION_FILES",
           "TB_MODULE", "PROTOCOL_TB_MODULE"]

TB_MODULE = "sbnn.cosim.tb_inference"
PROTOCOL_TB_MODULE = "sbnn.cosim.tb_protocol"
#: The report each per-cycle test module writes.
REPORT_TYPES: dict[str, type[JsonRecord]] = {TB_MODULE: BenchReport,
                                            PROTOCOL_TB_MODULE: ProtocolReport}
#: Files whose asserts cocotb rewrites for pytest-style messages: the cocotb test modules
#: and the bench libraries they run (cosim/), not every module imported (numpy and amaranth
#: would cost seconds). Patterns with a folder match the end of the file's path.
REWRITE_ASSERTION_FILES = " ".join(f"cosim/{name}.py" for name in (
    "tb_*", "bench", "regression", "stream_checker", "protocol_bench", "protocol_corner"))
#: Verilator's own optimization, X handling, and C++ split into files make -j can share.
VERILATOR_OPT = ("-O3", "--x-assign", "fast", "--x-initial", "fast", "--output-split", "3000")


@dataclass(frozen=True)
class CosimJob:
    config: SbnnConfig
    model: Path  # QuantizedModel .npz
    images: Path  # .npz with 'images' (N, 28, 28) uint8 and 'labels' (N,)
    count: int = 200
    budgets: tuple[int, ...] = (1,)
    stop_on_mismatch: bool = True
    #: Expected values from another model than the one programmed (to prove the check bites).
    golden_model: Path | None = None
    #: Confidence-exit margin programmed before the budget runs (None: never exit early).
    exit_margin: int | None = None
    #: Also run the images with random per-inference budgets, margins and masks.
    random_seed: int | None = None


def _config_dir(root: Path, cfg: SbnnConfig) -> Path:
    return root / hashlib.sha256(cfg.to_json().encode()).hexdigest()[:12]


def build_sim(cfg: SbnnConfig, build_root: str | Path, waves: bool = False) -> Path:
    """Emit Verilog (cached) and build it with Verilator (incremental); return build dir."""
    setup_toolchain()
    from cocotb_tools.runner import get_runner

    # Absolute: the simulator runs with the run folder as its working directory.
    base = _config_dir(Path(build_root).resolve(), cfg)
    files = emit_all(cfg, base / "rtl")
    build_dir = base / ("sim_build_waves" if waves else "sim_build")
    with verilator_build(build_dir / SIM_TOP):
        get_runner("verilator").build(
            sources=[files["controller"], files["sim_top"]], hdl_toplevel=SIM_TOP,
            build_dir=build_dir,
            build_args=[*waiver_flags(), *VERILATOR_OPT, *(trace_flags() if waves else [])],
            waves=waves, always=False, log_file=build_dir / "build.log",
        )
    return build_dir


@contextmanager
def verilator_build(binary: Path):
    """One build of ``binary``'s folder at a time across processes (pytest -n, parallel
    commands), with progress that says when the build was up to date."""
    binary.parent.mkdir(parents=True, exist_ok=True)
    with open(binary.parent.parent / f".{binary.parent.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        before = binary.stat().st_mtime if binary.exists() else None
        with progress.step(f"building the simulator (Verilator + g++, {opt_level()})") as info:
            yield
            if before is not None and binary.exists() and binary.stat().st_mtime == before:
                info["detail"] = "up to date"


def run_cosim(job: CosimJob, build_root: str | Path, waves: bool = False,
              test_module: str = TB_MODULE) -> BenchReport | ProtocolReport:
    """Run a testbench (default: the inference regression; or the protocol corners); returns
    its report (raises if it could not run; ValueError for several macros, whose probes
    only the fast harness reads: cosim/fast.py)."""
    if job.config.num_macros > 1:
        raise ValueError(f"the per-cycle bench monitors one macro, the config has "
                         f"{job.config.num_macros}: use the fast engine (cosim/fast.py)")
    build_dir = build_sim(job.config, build_root, waves=waves)
    # One folder per distinct job, so parallel runs (pytest -n) of one design do not collide.
    run_dir = build_dir.parent / f"run_{_digest_of(repr((job, test_module, waves)))}"
    return run_bench(job, build_dir, run_dir, test_module, REPORT_TYPES[test_module],
                     waves=waves)


def _digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def run_bench(job: CosimJob, build_dir: Path, run_dir: Path, test_module: str,
              report_type: type[JsonRecord], waves: bool = False, extra: dict | None = None,
              plusargs: list[str] | None = None) -> Any:
    """Write the job file (plus ``extra`` entries) into ``run_dir``, run ``test_module`` on
    the simulator built in ``build_dir`` (with ``plusargs``) and return its report (of
    ``report_type``)."""
    from cocotb_tools.runner import get_runner

    run_dir.mkdir(parents=True, exist_ok=True)
    report = run_dir / "report.json"
    report.unlink(missing_ok=True)
    job_file = run_dir / "job.json"
    job.config.write_snapshot(run_dir / "config.json")
    job_file.write_text(json.dumps({
        "config": str(run_dir / "config.json"), "model": str(Path(job.model).resolve()),
        "images": str(Path(job.images).resolve()), "count": job.count,
        "budgets": list(job.budgets), "report": str(report),
        "stop_on_mismatch": job.stop_on_mismatch,
        "golden_model": str(Path(job.golden_model).resolve()) if job.golden_model else None,
        "exit_margin": job.exit_margin, "random_seed": job.random_seed,
    } | (extra or {}), indent=2))
    env = {
        JOB_ENV: str(job_file),
        "COCOTB_REWRITE_ASSERTION_FILES": REWRITE_ASSERTION_FILES,
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    runner = get_runner("verilator")
    try:  # under pytest the runner sys.exit()s on a failed test; the report says why
        runner.test(test_module=test_module, hdl_toplevel=SIM_TOP, hdl_toplevel_lang="verilog",
                    build_dir=build_dir, test_dir=run_dir, extra_env=env, waves=waves,
                    plusargs=plusargs or [], results_xml=str(run_dir / "results.xml"),
                    log_file=run_dir / "sim.log")
    except SystemExit:
        pass
    if not report.exists():
        log = (run_dir / "sim.log")
        tail = log.read_text()[-3000:] if log.exists() else ""
        raise RuntimeError(f"cosim ({test_module}) produced no report; see {log}\n{tail}")
    return report_type.read(report)
