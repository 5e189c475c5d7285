"""The long randomized-equivalence run (``sbnn equiv``) on the engine (sbnn/engine.py).

cosim/equivalence.py draws a config, its models and cases and runs cases of one config on
the fast harness; this module turns a run of many configs into Dask jobs and keeps the
ledger. Each config not yet in the ledger becomes

- one *build* job: generate its Verilog and build the harness with Verilator (cached
  under ``build_root``), placed one config ahead of that config's cases so that the next
  build runs beside the cases of the one before;
- *case* jobs of up to ``CASES_PER_JOB`` consecutive cases, each on one simulator process.

A case depends only on its config seed and index, and the chunks are fixed by the case
count alone, so every job computes the same thing on any worker and for any number of
workers. The results come back in job order: when the last chunk of a config is in, its
ledger line (JSON, one per config, the same format as before) is appended, so the ledger
holds the same lines, in the same order, for any number of workers (only the times
``wall_s``, the job time of its case chunks, and ``build_s`` differ). The run stops at the
first config that has a mismatch, after every config before it is in the ledger; configs
already in the ledger are skipped (resume).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CASES_PER_JOB", "EquivJob", "plan_jobs", "run_job", "run_equivalence",
           "read_ledger"]

#: Cases per case job: short enough to share a config over many workers, long enough
#: that the simulator start (a few seconds) stays small beside it. A multiple of
#: CASES_PER_MODEL, so that a chunk starts with a model of its own, as it would in one run.
CASES_PER_JOB = 500


@dataclass(frozen=True)
class EquivJob:
    """One job of the run: the build of a config, or cases ``first .. first+count-1``."""

    config_seed: int
    kind: str  # "build" or "cases"
    first: int
    count: int
    build_root: str  # absolute: the workers may run elsewhere (on a shared file system)


def plan_jobs(seeds: list[int], cases: int, build_root: str | Path) -> list[EquivJob]:
    """The jobs of ``seeds``' configs, ``cases`` cases each: each config's build placed
    before the cases of the config before it."""
    from .equivalence import CASES_PER_MODEL

    assert CASES_PER_JOB % CASES_PER_MODEL == 0
    root = str(Path(build_root).resolve())
    jobs: list[EquivJob] = []
    for n, seed in enumerate(seeds):
        if n == 0:
            jobs.append(EquivJob(seed, "build", 0, 0, root))
        if n + 1 < len(seeds):
            jobs.append(EquivJob(seeds[n + 1], "build", 0, 0, root))
        jobs.extend(EquivJob(seed, "cases", first, min(CASES_PER_JOB, cases - first), root)
                    for first in range(0, cases, CASES_PER_JOB))
    return jobs


def run_job(job: EquivJob) -> dict:
    """Run one job (in any process). A build that fails is reported by the config's case
    jobs, which build again and raise: the error comes in the config's turn."""
    from .equivalence import random_config, run_config
    from .fast import build_fast

    t0, cpu0 = time.time(), _cpu_seconds()
    if job.kind == "build":
        try:
            build_fast(random_config(job.config_seed), job.build_root)
        except Exception as exc:  # reported by the case jobs
            return {"build_error": " ".join(str(exc).split())[:500] or type(exc).__name__}
        return {"build_s": round(time.time() - t0, 1),
                "build_cpu_s": round(_cpu_seconds() - cpu0, 1)}
    try:
        rep = run_config(job.config_seed, Path(job.build_root), job.first, job.count,
                         workers=1)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RuntimeError(f"config seed {job.config_seed}, cases "
                           f"{job.config_seed}:{job.first}..{job.first + job.count - 1}: "
                           f"{first}") from exc
    return {"cases": rep.images, "mismatches": rep.mismatches,
            "transactions": rep.transactions_checked, "sim_cycles": rep.sim_cycles,
            "wall_s": round(time.time() - t0, 1), "cpu_s": round(_cpu_seconds() - cpu0, 1),
            "first_mismatch": rep.first_mismatch, "failing_case": rep.failing_case}


def _cpu_seconds() -> float:
    """User + system seconds of this process and its waited-for children (the simulator,
    Verilator's make and g++): what a job costs, whatever else runs beside it."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def read_ledger(path: Path) -> list[dict]:
    """The ledger's entries, one per finished config, oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _describe(seed: int, cases: int) -> str:
    from .equivalence import random_config

    cfg = random_config(seed)
    return (f"config seed {seed}: layers {list(cfg.layers)}, K={cfg.num_supports}, "
            f"rows {cfg.active_rows}/{cfg.macro_rows}, cols {cfg.macro_cols}, "
            f"dac {cfg.dac_bits}, adc {cfg.adc_bits} step {list(cfg.adc_steps)}, gains "
            f"{list(cfg.plane_gains)}, latency {cfg.macro_latency}, lanes {cfg.input_lanes}, "
            f"{cfg.num_macros} macro(s) interval {cfg.interval}; "
            f"cases {seed}:0..{seed}:{cases - 1}")


class _Ledger:
    """``on_result`` of the run: gathers each config's chunks (in job order), appends its
    ledger line when the last is in, and asks to stop at a failing config."""

    def __init__(self, path: Path, jobs: list[EquivJob], cases: int, total: int, log):
        self.path, self.jobs, self.cases, self.total, self.log = path, jobs, cases, total, log
        self.build_s: dict[int, float | None] = {}
        self.build_cpu_s: dict[int, float | None] = {}
        self.chunks: list[dict] = []
        self.failed: dict | None = None

    def __call__(self, index: int, result: dict) -> bool:
        job = self.jobs[index]
        if job.kind == "build":
            self.build_s[job.config_seed] = result.get("build_s")
            self.build_cpu_s[job.config_seed] = result.get("build_cpu_s")
            return False
        self.chunks.append(result)
        if job.first + job.count < self.cases:
            return False  # more chunks of this config to come
        chunks, self.chunks = self.chunks, []
        bad = next((c for c in chunks if c["mismatches"]), None)
        entry = {"config_seed": job.config_seed, "cases": sum(c["cases"] for c in chunks),
                 "mismatches": sum(c["mismatches"] for c in chunks),
                 "transactions": sum(c["transactions"] for c in chunks),
                 "sim_cycles": sum(c["sim_cycles"] for c in chunks),
                 "wall_s": round(sum(c["wall_s"] for c in chunks), 1),
                 "cpu_s": round(sum(c.get("cpu_s", 0.0) for c in chunks), 1),
                 "build_s": self.build_s.get(job.config_seed),
                 "build_cpu_s": self.build_cpu_s.get(job.config_seed),
                 "first_mismatch": bad["first_mismatch"] if bad else None,
                 "failing_case": bad["failing_case"] if bad else None}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.log(_describe(job.config_seed, self.cases))
        if entry["mismatches"] or entry["cases"] != self.cases:
            self.log(f"  MISMATCH in case {entry['failing_case']}: {entry['first_mismatch']}\n"
                     f"  rerun: sbnn equiv --case {entry['failing_case']}")
            self.failed = entry
            return True
        self.total += entry["cases"]
        self.log(f"  {entry['cases']} cases, {entry['transactions']} transactions, "
                 f"0 mismatches, {entry['wall_s']} s of job time (build {entry['build_s']} s);"
                 f" total so far {self.total} cases")
        return False


def run_equivalence(configs: int, cases: int, seed: int, build_root: Path, ledger: Path,
                    workers: int | None = None, log=print,
                    scheduler: str | None = None) -> dict:
    """Configs ``seed .. seed+configs-1``, ``cases`` cases each, on the engine (in this
    process for ``workers=1``, else a local Dask cluster of ``workers`` processes, or the
    cluster at ``scheduler``); skips the configs in the ledger. Stops at the first failing
    config and names its failing case. Raises sbnn.engine.EngineError when the cluster
    cannot be started or reached."""
    from sbnn.engine import map_jobs

    ledger = Path(ledger)
    good = [e for e in read_ledger(ledger) if e["mismatches"] == 0]
    done = {(e["config_seed"], e["cases"]) for e in good}
    seeds = [s for s in range(seed, seed + configs) if (s, cases) not in done]
    jobs = plan_jobs(seeds, cases, build_root)
    gather = _Ledger(ledger, jobs, cases, sum(e["cases"] for e in good), log)
    if seeds:
        log(f"{len(seeds)} configs to run ({configs - len(seeds)} already in the ledger): "
            f"{len(jobs)} jobs (a build per config, cases in jobs of up to {CASES_PER_JOB})")
    t0 = time.time()
    map_jobs(run_job, jobs, workers=workers, scheduler=scheduler, on_result=gather,
             desc="equivalence jobs")
    if gather.failed is not None:
        return {"ok": False, "entry": gather.failed, "total_cases": gather.total}
    return {"ok": True, "total_cases": gather.total, "wall_s": round(time.time() - t0, 1),
            "configs": configs}
