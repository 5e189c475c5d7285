"""Fast cosim: the harness on Verilator under cocotb, image batches in parallel processes.

Same job description as the per-cycle bench (:class:`~sbnn.cosim.runner.CosimJob`), same
checks (every macro transaction's cycle, context, DAC codes, column enables and ADC codes,
every result field), same first-mismatch report; the difference is that the stimulus and the
monitor live in the simulator (cosim/harness.py) and the comparison is done in bulk
(cosim/bulk.py). Independent image batches run as separate simulator processes.

Also here: the harness built without cocotb (``raw``), for the simulator's own speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sbnn import progress
from sbnn.config import SbnnConfig
from sbnn.gen.image import build_image
from sbnn.gen.lint import waiver_flags
from sbnn.gen.verilog import SIM_TOP, cache_dir, emit_all, write_if_changed
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import ProgOp
from sbnn.toolchain import fst_available, setup_toolchain, trace_flags

from .codec import Codec
from .controls import random_controls
from .harness import HARNESS_TOP, RAW_MAIN_CPP, HarnessLayout, harness_verilog
from .job_file import JOB_ENV
from .report import FastReport, RawRunReport, WorkerReport, summarize_images
from .runner import REWRITE_ASSERTION_FILES, CosimJob, _config_dir, verilator_build
from .runner import VERILATOR_OPT as _OPT

__all__ = ["Block", "Plan", "plan_job", "write_commands", "build_fast", "build_raw",
           "run_fast", "execute", "run_raw", "FAST_TB"]

FAST_TB = "sbnn.cosim.tb_fast"
#: The harness makes its own clock (Verilator --timing): no call into cocotb per edge.
HDL_CLOCK = True


@dataclass(frozen=True)
class Block:
    """Images run back to back under one programmed state, after ``prog`` is sent."""

    images: tuple[int, ...]
    budget: int
    on_stream: bool  # budget sent with each image (else the budget register applies)
    margin: int | None  # exit margin in force (None: the reset value, never exit)
    mask: str | None  # key of the support mask in force (None: the model's own)
    prog: tuple[tuple[int, int, int], ...] = ()
    run: str = "budget"  # the report groups images by run: "budget", "random", ...
    #: The block programs its own random model, drawn from this seed (equivalence runs).
    model_seed: int | None = None
    #: Single-image blocks of one group run in the same worker, in order (default: by image).
    group: int | None = None
    #: Position in the job's plan (reports name mismatching images by block and image).
    index: int = -1


@dataclass
class Plan:
    blocks: list[Block]
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def plan_job(job: CosimJob, model: QuantizedModel, count: int) -> Plan:
    """The whole job as blocks: every budget run, then the random-controls run if asked."""
    blocks: list[Block] = []
    margin = job.exit_margin
    first_prog: list[tuple[int, int, int]] = []
    if margin is not None:
        first_prog.append((ProgOp.EXIT_MARGIN.value, 0, margin))
    for budget in job.budgets:
        prog = tuple(first_prog) + ((ProgOp.BUDGET.value, 0, budget),)
        first_prog = []
        blocks.append(Block(tuple(range(count)), budget, False, margin, None, prog))
    masks: dict[str, np.ndarray] = {}
    if job.random_seed is not None:
        # The same draws as the per-cycle bench (cosim/controls.py).
        for ctl in random_controls(model, count, job.random_seed):
            if ctl.prog:  # a new mask: the testbench rebuilds the model from it
                key = f"m{ctl.image}"
                for layer, mk in enumerate(ctl.model.support_mask):
                    masks[f"{key}_{layer}"] = mk
            prog = tuple((int(op.value), a, d) for op, a, d in ctl.prog)
            blocks.append(Block((ctl.image,), ctl.budget, True, ctl.margin, key, prog,
                                "random"))
    return Plan(blocks, masks)


def _split(plan: Plan, workers: int) -> list[Plan]:
    """Share every block's images among workers; each worker replays the programming."""
    parts = [Plan([], plan.masks) for _ in range(workers)]
    pending = [[] for _ in range(workers)]  # programming a worker has not sent yet
    for blk in plan.blocks:
        if len(blk.images) == 1:  # single-image blocks go round-robin, whole
            w = (blk.images[0] if blk.group is None else blk.group) % workers
            for k in range(workers):
                if k != w and blk.model_seed is None:  # (a model block programs it all)
                    pending[k].extend(blk.prog)
            parts[w].blocks.append(replace(blk, prog=tuple(pending[w]) + blk.prog))
            pending[w] = []
            continue
        for w, chunk in enumerate(np.array_split(np.array(blk.images), workers)):
            if len(chunk):
                parts[w].blocks.append(replace(blk, images=tuple(int(i) for i in chunk),
                                               prog=tuple(pending[w]) + blk.prog))
                pending[w] = []
            else:
                pending[w].extend(blk.prog)
    return [p for p in parts if p.blocks]


def image_commands(model: QuantizedModel) -> list[str]:
    """Command lines that program ``model``'s whole hardware image."""
    codec = Codec(model.config)
    return [f"p {codec.prog(op, a, d):x}" for op, a, d in build_image(model).program()]


def write_commands(path: Path, model: QuantizedModel | None, plan: Plan, pixels: np.ndarray,
                   cfg: SbnnConfig | None = None, preamble: list[str] | None = None) -> int:
    """The harness's command file: the full hardware image of ``model`` (if given; or the
    ``preamble`` lines of :func:`image_commands`, encoded once for every worker), then each
    block. Returns the number of images."""
    codec = Codec(model.config if model is not None else cfg)
    if preamble is None:
        preamble = [] if model is None else image_commands(model)
    lines = list(preamble)
    images = 0
    for blk in plan.blocks:
        lines.extend(f"p {codec.prog(ProgOp(op), a, d):x}" for op, a, d in blk.prog)
        for i in blk.images:
            beats = codec.pixel_beats(pixels[i], blk.budget if blk.on_stream else None)
            lines.extend(f"i {b:x}" for b in beats[:-1])
            lines.append(f"l {beats[-1]:x}")
            images += 1
    path.write_text("\n".join(lines) + "\n")
    return images


def _sources(cfg: SbnnConfig, base: Path, hdl_clock: bool = False) -> list[Path]:
    files = emit_all(cfg, base / "rtl")
    harness = base / "rtl" / f"{HARNESS_TOP}{'_hdlclk' if hdl_clock else ''}.sv"
    write_if_changed(harness, harness_verilog(cfg, SIM_TOP, hdl_clock))
    return [files["controller"], files["sim_top"], harness]


def _lean_runner():
    from cocotb_tools.runner import Verilator

    class LeanVerilator(Verilator):
        """cocotb's Verilator runner without ``--public-flat-rw``: the harness marks the
        three signals cocotb touches public itself, so Verilator may optimise the rest."""

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds

    return LeanVerilator()


def build_fast(cfg: SbnnConfig, build_root: str | Path, waves: bool = False,
               hdl_clock: bool = HDL_CLOCK) -> Path:
    """Emit Verilog + harness (cached) and build them for cocotb; returns the build dir."""
    setup_toolchain()
    base = _config_dir(Path(build_root).resolve(), cfg)
    sources = _sources(cfg, base, hdl_clock)
    build_dir = base / ("fast_build" + ("_hdlclk" if hdl_clock else "")
                        + ("_waves" if waves else ""))
    with verilator_build(build_dir / HARNESS_TOP):
        _lean_runner().build(
            sources=sources, hdl_toplevel=HARNESS_TOP, build_dir=build_dir,
            build_args=[*waiver_flags(), *_OPT, *(trace_flags() if waves else []),
                        *(["--timing", "--timescale", "1ps/1ps"] if hdl_clock else [])],
            waves=waves, always=False, log_file=build_dir / "build.log")
    return build_dir


def build_raw(cfg: SbnnConfig, build_root: str | Path, opt: str | None = None,
              jobs: int | None = None) -> Path:
    """The harness with a C++ main and no cocotb: the simulator alone. Returns the binary.
    ``opt``: g++ level for the generated code (default: sbnn.toolchain.opt_level())."""
    setup_toolchain()
    base = _config_dir(Path(build_root).resolve(), cfg)
    sources = _sources(cfg, base)
    build_dir = base / "raw_build"
    build_dir.mkdir(parents=True, exist_ok=True)
    main = build_dir / "raw_main.cpp"
    write_if_changed(main, RAW_MAIN_CPP)
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", str(jobs or os.cpu_count() or 1),
           "--top-module", HARNESS_TOP, "--prefix", "Vraw", "-Mdir", str(build_dir),
           "-o", "sbnn_raw", *waiver_flags(), *_OPT, str(main), *map(str, sources)]
    if opt is not None:
        cmd += ["-MAKEFLAGS", " ".join(f"{v}={opt}" for v in ("OPT_FAST", "OPT_SLOW",
                                                               "OPT_GLOBAL"))]
    log = build_dir / "build.log"
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise RuntimeError(f"Verilator build of the raw harness failed; see {log}")
    return build_dir / "sbnn_raw"


def golden_cache() -> str | None:
    """Folder of cached golden signatures (cosim/digest.py): ``$SBNN_GOLDEN_CACHE``, else
    ``golden/`` in the Verilog cache; ``SBNN_GOLDEN_CACHE=off`` computes every time."""
    setting = os.environ.get("SBNN_GOLDEN_CACHE")
    if setting == "off":
        return None
    return setting or str(cache_dir() / "golden")


def _write_plans(cfg: SbnnConfig, plan: Plan, run_root: Path, workers: int, images: Path,
                 model: QuantizedModel | None, model_path: Path | None,
                 golden_model: Path | None, hdl_clock: bool,
                 full: bool = False) -> tuple[list[Path], int]:
    """Command files and plan JSONs for each worker; returns (plan files, images).

    ``model`` is programmed first in every worker (None: each block programs its own)."""
    with np.load(images) as data:
        pixels = data["images"]
    run_root.mkdir(parents=True, exist_ok=True)
    masks_file = None
    if plan.masks:
        masks_file = run_root / "masks.npz"
        np.savez(masks_file, **plan.masks)
    cfg.write_snapshot(run_root / "config.json")
    files, total = [], 0
    preamble = [] if model is None else image_commands(model)
    for w, part in enumerate(_split(plan, workers)):
        wdir = run_root / f"w{w}"
        wdir.mkdir(exist_ok=True)
        total += write_commands(wdir / "commands.txt", model, part, pixels, cfg, preamble)
        plan_file = wdir / "plan.json"
        plan_file.write_text(json.dumps({
            "config": str(run_root / "config.json"),
            "model": str(Path(model_path).resolve()) if model_path else None,
            "golden_model": str(Path(golden_model).resolve()) if golden_model else None,
            "images": str(Path(images).resolve()),
            "masks": str(masks_file) if masks_file else None,
            "log": str(wdir / "log"), "report": str(wdir / "report.json"),
            "hdl_clock": hdl_clock, "full": full, "golden_cache": golden_cache(),
            "blocks": [{"images": list(b.images), "budget": b.budget, "margin": b.margin,
                        "mask": b.mask, "run": b.run, "model_seed": b.model_seed,
                        "index": b.index} for b in part.blocks],
        }, indent=1))
        files.append(plan_file)
    return files, total


def run_fast(job: CosimJob, build_root: str | Path, workers: int | None = None,
             waves: bool = False, only_image: int | None = None,
             hdl_clock: bool = HDL_CLOCK) -> FastReport:
    """Run the job on the fast harness in ``workers`` parallel simulator processes; returns
    the merged report (raises RuntimeError if a worker produced none)."""
    model = QuantizedModel.load(job.model, job.config)
    with np.load(job.images) as data:
        count = min(job.count, len(data["images"]))
    plan = _indexed(plan_job(job, model, count))
    if only_image is not None:
        blk = next(b for b in plan.blocks if only_image in b.images)
        plan = _alone(plan, blk.index, only_image)
        workers = 1
    return execute(job.config, build_root, plan, job.images, model, job.model,
                   job.golden_model, workers, waves=waves, hdl_clock=hdl_clock)


def _indexed(plan: Plan) -> Plan:
    return Plan([replace(b, index=i) for i, b in enumerate(plan.blocks)], plan.masks)


def _alone(plan: Plan, block: int, image: int) -> Plan:
    """One image of one block, after replaying the programming of every block before it
    (so the hardware is in the state it was in when that image ran)."""
    before = [replace(b, images=()) for b in plan.blocks if b.index < block]
    target = next(b for b in plan.blocks if b.index == block)
    return Plan(before + [replace(target, images=(image,))], plan.masks)


def _run_workers(cfg: SbnnConfig, build_dir: Path, plans: list[Path], total: int,
                 waves: bool, full: bool) -> list[WorkerReport]:
    """One cocotb simulator process per plan, in parallel, with a progress bar fed by the
    digest records the harnesses write."""

    def one(plan_file: Path) -> WorkerReport:
        wdir = plan_file.parent
        report = wdir / "report.json"
        report.unlink(missing_ok=True)
        for suffix in (".start", ".done", ".image", ".result", ".digest", ".totals"):
            (wdir / f"log{suffix}").unlink(missing_ok=True)
        env = {JOB_ENV: str(plan_file), "COCOTB_REWRITE_ASSERTION_FILES": REWRITE_ASSERTION_FILES,
               "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        try:
            _lean_runner().test(
                test_module=FAST_TB, hdl_toplevel=HARNESS_TOP, hdl_toplevel_lang="verilog",
                build_dir=build_dir, test_dir=wdir, extra_env=env, waves=waves,
                plusargs=[f"+cmd={wdir / 'commands.txt'}", f"+log={wdir / 'log'}",
                          *(["+full"] if full else [])],
                results_xml=str(wdir / "results.xml"), log_file=wdir / "sim.log")
        except SystemExit:
            pass
        if not report.exists():
            tail = (wdir / "sim.log").read_text()[-3000:] if (wdir / "sim.log").exists() else ""
            raise RuntimeError(f"fast cosim worker produced no report; see {wdir / 'sim.log'}"
                               f"\n{tail}")
        return WorkerReport.read(report)

    # records are fixed width; the simulator flushes them in blocks, so the count lags
    record = HarnessLayout.of(cfg).digest_record_bytes()

    def done_images() -> int:
        n = 0
        for plan_file in plans:
            try:
                n += (plan_file.parent / "log.digest").stat().st_size // record
            except OSError:
                pass
        return n

    with ThreadPoolExecutor(max_workers=len(plans)) as pool, \
            progress.bar(total, f"simulating on {len(plans)} process(es)", "image") as pbar:
        futures = [pool.submit(one, p) for p in plans]
        checking = False
        while not all(f.done() for f in futures):
            time.sleep(0.25)
            n = min(total, done_images())
            pbar.update(n - pbar.n)
            if n == total and not checking:
                pbar.close()  # simulated; each worker now checks its images
                progress.note("checking against the golden model ...")
                checking = True
        pbar.update(total - pbar.n)
        return [f.result() for f in futures]


def execute(cfg: SbnnConfig, build_root: str | Path, plan: Plan, images: Path,
            model: QuantizedModel | None, model_path: Path | None,
            golden_model: Path | None = None, workers: int | None = None,
            waves: bool = False, hdl_clock: bool = HDL_CLOCK, full: bool = False,
            localize: bool = True) -> FastReport:
    """Build (cached), write the workers' stimulus, run them in parallel, merge reports.

    The check compares per-image signatures (cosim/digest.py) unless ``full`` (or ``waves``)
    asks for the full transaction log; when an image differs and ``localize``, that image is
    rerun alone with the full log, so ``first_mismatch`` names the transaction and field."""
    workers = workers or os.cpu_count() or 1
    if any(b.index < 0 for b in plan.blocks):
        plan = _indexed(plan)
    t_build = time.time()
    build_dir = build_fast(cfg, build_root, waves=waves, hdl_clock=hdl_clock)
    build_s = time.time() - t_build
    # One folder per distinct run, so parallel runs (pytest -n) of one design do not collide.
    key = hashlib.sha256(repr((plan.blocks, str(images), str(model_path), str(golden_model),
                               workers, full, waves)).encode())
    for name in sorted(plan.masks):
        key.update(np.ascontiguousarray(plan.masks[name]).tobytes())
    run_root = build_dir.parent / f"{build_dir.name.replace('build', 'run')}_{key.hexdigest()[:10]}"
    plans, total = _write_plans(cfg, plan, run_root, workers, images, model, model_path,
                                golden_model, hdl_clock, full or waves)
    t0 = time.time()
    reports = _run_workers(cfg, build_dir, plans, total, waves, full or waves)
    wall = time.time() - t0
    first = next((r.first_mismatch for r in reports if r.first_mismatch), None)
    per_image = [p for r in reports for p in r.per_image]
    merged = FastReport(
        runs=summarize_images(per_image), engine="fast", workers=len(plans),
        images=sum(r.images for r in reports),
        transactions_checked=sum(r.transactions_checked for r in reports),
        results_checked=sum(r.results_checked for r in reports),
        mismatches=sum(r.mismatches for r in reports), first_mismatch=first,
        harness_failed=any(r.harness_failed for r in reports),
        sim_cycles=sum(r.sim_cycles for r in reports),
        wall_s=round(wall, 3), build_s=round(build_s, 3),
        sim_wall_s=round(max(r.sim_wall_s for r in reports), 3),
        check_wall_s=round(max(r.check_wall_s for r in reports), 3),
        log_bytes=sum(f.stat().st_size for p in plans for f in p.parent.glob("log.*")),
        per_image=per_image, run_dir=str(run_root),
        waves=[str(p.parent / ("dump.fst" if fst_available() else "dump.vcd"))
               for p in plans] if waves else [],
        expected_images=total)
    bad = [p for p in per_image if not p.ok]
    if bad and localize and not (full or waves):
        worst = min(bad, key=lambda p: (p.block, p.image))
        progress.note(f"{len(bad)} image(s) differ; rerunning image {worst.image} "
                      f"(block {worst.block}) with the full transaction log")
        loc = execute(cfg, build_root, _alone(plan, worst.block, worst.image), images,
                      model, model_path, golden_model, workers=1, hdl_clock=hdl_clock,
                      full=True, localize=False)
        merged.first_mismatch_digest = merged.first_mismatch
        merged.first_mismatch = loc.first_mismatch or merged.first_mismatch
    return merged


_RAW_LINE = re.compile(r"sbnn-raw cycles=(\d+) seconds=([\d.]+) failed=(\d+)")


def run_raw(job: CosimJob, build_root: str | Path, workers: int | None = None) -> RawRunReport:
    """The same stimulus through the harness with no cocotb and no checks, in parallel."""
    workers = workers or os.cpu_count() or 1
    binary = build_raw(job.config, build_root)
    run_root = binary.parent.parent / "raw_run"
    model = QuantizedModel.load(job.model, job.config)
    with np.load(job.images) as data:
        count = min(job.count, len(data["images"]))
    plans, total = _write_plans(job.config, plan_job(job, model, count), run_root, workers,
                                job.images, model, job.model, job.golden_model, False)
    t0 = time.time()
    procs = [subprocess.Popen([str(binary), f"+cmd={p.parent / 'commands.txt'}",
                               f"+log={p.parent / 'log'}"], cwd=p.parent,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for p in plans]
    outs = [p.communicate()[0] for p in procs]
    wall = time.time() - t0
    cycles, failed = 0, False
    for text in outs:
        m = _RAW_LINE.search(text)
        if not m:
            raise RuntimeError(f"raw harness printed no summary:\n{text[-2000:]}")
        cycles += int(m.group(1))
        failed |= m.group(3) != "0"
    return RawRunReport(images=total, sim_cycles=cycles, wall_s=round(wall, 3),
                        workers=len(plans), failed=failed)
