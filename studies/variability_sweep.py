"""Monte Carlo sweep of MNIST error vs process variability (``sbnn variability``).

One *job* is one (model, support mask, swept sigma, seed): it draws the mismatch, runs the
test images through the hardware-exact integer path (and, for the first ``float_seeds``
seeds, the unrounded float path too) and writes one JSON file. A file whose ``key`` matches
is never recomputed, so a sweep can be stopped, resumed, extended with seeds or sigmas, or
split over machines (``--shard I/N``, or a Dask cluster: ``--scheduler``, docs/cluster.md).
The jobs run on the engine (sbnn/engine.py); the report is made from the files.

Every job of a model runs its full latency budget; the base-plane-only result (pass 0, the
binarized network without supports, "baseline BNN") comes from the same run, since pass p
is exactly a one-shot run with budget p (docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbnn.fileio import atomic_file, atomic_write_text
from sbnn.golden.hwpath import run_hw
from sbnn.golden.qmodel import QuantizedModel
from sbnn.golden.variability import FloatMacro, IntegerMacro, Variation, draw

__all__ = ["ModelSpec", "Job", "plan", "stored_result", "run_job", "run_all", "aggregate",
           "write_report", "SWEPT_PARAMS", "PRUNE_RULE"]

#: Fields of :class:`Variation` that a sweep can vary.
SWEPT_PARAMS = ("cell_sigma", "vth_sigma_mv", "dac_gain_sigma", "adc_offset_sigma")

#: Bump when a change makes old result files wrong; it is part of every job's key.
RESULT_VERSION = 1

PRUNE_RULE = ("support columns ranked by how many bits differ from the base plane "
              "(fewest first: they add least beyond a rescaled B0), the first ones masked "
              "until the kept fraction is reached; thresholds unchanged "
              "(studies/sweep.py: keep_support_fraction)")


@dataclass(frozen=True)
class ModelSpec:
    """A deployed model: a file and either its own support mask (``keep`` None) or a mask
    keeping that fraction of support columns by :data:`PRUNE_RULE`."""

    name: str
    path: str
    keep: float | None = None

    @property
    def label(self) -> str:
        return self.name if self.keep is None else f"{self.name} pruned {self.keep:.0%}"

    @property
    def tag(self) -> str:
        return "own-mask" if self.keep is None else f"keep{round(self.keep * 100):03d}"


@dataclass(frozen=True)
class Job:
    spec: ModelSpec
    model_sha: str  # sha256 of the model file: a retrained model never reuses old results
    variation: dict  # Variation fields, the swept one and the seed set
    param: str
    sigma: float
    images: str  # "mnist-test:<data dir>" or an .npz path
    count: int
    float_path: bool
    out_file: str

    @property
    def key(self) -> str:
        text = json.dumps([RESULT_VERSION, self.spec.keep, self.model_sha, self.variation,
                           self.images, self.count, self.float_path], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _sigma_text(sigma: float) -> str:
    return f"{sigma:g}"


def plan(specs: Iterable[ModelSpec], base: Variation, param: str, sigmas: Iterable[float],
         seeds: int, images: str, count: int, float_seeds: int, work: str | Path) -> list[Job]:
    """Every job of the sweep, in a stable order. An ideal point (every sigma 0) needs one
    seed only: all draws are the same."""
    if param not in SWEPT_PARAMS:
        raise ValueError(f"param must be one of {', '.join(SWEPT_PARAMS)}, got {param!r}")
    jobs = []
    work = Path(work).absolute()  # the same path for workers elsewhere
    for spec in specs:
        sha = _sha(spec.path)
        for sigma in sigmas:
            point = base.replace(**{param: float(sigma)})
            for seed in range(1 if point.is_ideal else seeds):
                var = point.replace(seed=seed)
                out = work / spec.name / spec.tag / param / _sigma_text(sigma) / f"seed{seed}.json"
                jobs.append(Job(spec, sha, var.to_dict(), param, float(sigma), images, count,
                                seed < float_seeds, str(out)))
    return jobs


# ---------------------------------------------------------------- one job (any process)

_CACHE: dict = {}


def _images(spec: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    key = ("images", spec, count)
    if key not in _CACHE:
        if spec.startswith("mnist-test:"):
            from .mnist import load_mnist

            folder = spec.split(":", 1)[1] or None
            images, labels = load_mnist("test", folder, download=False)
        else:
            with np.load(spec) as data:
                images, labels = data["images"], data["labels"]
        _CACHE[key] = (images.reshape(len(images), -1)[:count], labels[:count])
    return _CACHE[key]


def _model(spec: ModelSpec) -> QuantizedModel:
    key = ("model", spec)
    if key not in _CACHE:
        model = QuantizedModel.load(spec.path)
        if spec.keep is not None and model.config.num_supports:
            from .sweep import keep_support_fraction

            model = keep_support_fraction(model, spec.keep)
        _CACHE[key] = model
    return _CACHE[key]


def _errors(result, labels) -> dict[str, float]:
    return {str(p): round(float((np.argmax(v, axis=1) != labels).mean() * 100), 4)
            for p, v in result.pass_logits.items()}


def stored_result(job: Job) -> dict | None:
    """The job's record from its file, or None when it has to run (no file, a torn one,
    or one of another job). A ``wall_s`` that older files hold is dropped: the time of a
    job belongs to the run that ran it."""
    try:
        done = json.loads(Path(job.out_file).read_text())
    except (ValueError, OSError):
        return None
    if not isinstance(done, dict) or done.get("key") != job.key:
        return None
    done.pop("wall_s", None)
    return done


def run_job(job: Job) -> dict:
    """Run one job (or read its file if it is already done); returns the stored record.
    The file holds only what the job computes (the same bytes on any worker); the record
    returned by a job that ran also has its ``wall_s``."""
    done = stored_result(job)
    if done is not None:
        return done
    t0 = time.time()
    model = _model(job.spec)
    pixels, labels = _images(job.images, job.count)
    drawn = draw(Variation.from_dict(job.variation), model.config)
    record = {"key": job.key, "model": job.spec.name, "path": job.spec.path,
              "keep": job.spec.keep, "support_kept_pct": round(
                  100 * model.support_columns_kept, 1),
              "num_supports": model.config.num_supports, "param": job.param,
              "sigma": job.sigma, "seed": job.variation["seed"],
              "variation": job.variation, "images": job.count,
              "exact_error_pct": _errors(run_hw(model, pixels,
                                                variation=IntegerMacro(drawn)), labels)}
    if job.float_path:
        record["float_error_pct"] = _errors(run_hw(model, pixels, variation=FloatMacro(drawn)),
                                            labels)
    out = Path(job.out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(out)  # atomic: a killed run leaves no half file behind
    return record | {"wall_s": round(time.time() - t0, 2)}


def run_all(jobs: list[Job], workers: int | None = None,
            progress: Callable[[int, int, dict], None] | None = None,
            scheduler: str | None = None) -> list[dict]:
    """Run the jobs that have no result yet on the engine (sbnn/engine.py: in this process
    for one worker, else a local Dask cluster of ``workers`` processes, or the cluster at
    ``scheduler``); every record in job order. ``progress(index, total, record)`` sees
    each job that ran, in job order."""
    from sbnn.engine import map_jobs

    def report(index: int, record: dict) -> None:
        if progress is not None and "wall_s" in record:
            progress(index, len(jobs), record)

    return map_jobs(run_job, jobs, workers=workers, scheduler=scheduler,
                    finished=stored_result, on_result=report, desc="variability jobs")


# ---------------------------------------------------------------- report

def _stats(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float)
    return {"n": len(arr), "mean": round(float(arr.mean()), 3),
            "std": round(float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, 3),
            "min": round(float(arr.min()), 3), "max": round(float(arr.max()), 3)}


def _curves(spec_records: list[dict]) -> list[tuple[str, str, str]]:
    """(curve label, pass key) per model variant: base plane only and full budget."""
    first = spec_records[0]
    k = first["num_supports"]
    name = first["model"]
    if not k:
        return [(f"{name} (K=0)", "0")]
    if first["keep"] is None:
        return [(f"{name}: base plane only (budget 0, baseline BNN)", "0"),
                (f"{name}: supports, budget {k} ({first['support_kept_pct']:g} % kept)",
                 str(k))]
    return [(f"{name}: supports pruned to {first['support_kept_pct']:g} %, budget {k}",
             str(k))]


def crossing(sigmas: list[float], means: list[float], loss_pp: float = 0.5) -> float | None:
    """Smallest sigma at which the mean error exceeds the sigma-0 error by ``loss_pp``
    (linear interpolation between sweep points); None if it never does."""
    if not sigmas or sigmas[0] != 0:
        return None
    ref = means[0] + loss_pp
    for i in range(1, len(sigmas)):
        if means[i] >= ref:
            s0, s1, m0, m1 = sigmas[i - 1], sigmas[i], means[i - 1], means[i]
            return s1 if m1 == m0 else s0 + (ref - m0) * (s1 - s0) / (m1 - m0)
    return None


def aggregate(records: list[dict]) -> dict:
    """Per curve and sigma: error statistics over seeds, exact and float paths."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["model"], r["keep"] if r["keep"] is not None else -1), []) \
            .append(r)
    curves = []
    # own mask first, then pruned variants from most to least kept
    for (_, _), recs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] >= 0,
                                                               -kv[0][1])):
        for label, pkey in _curves(recs):
            by_sigma: dict[float, list[dict]] = {}
            for r in recs:
                by_sigma.setdefault(r["sigma"], []).append(r)
            points = []
            for sigma in sorted(by_sigma):
                rs = by_sigma[sigma]
                exact = [r["exact_error_pct"][pkey] for r in rs]
                pt = {"sigma": sigma, "exact": _stats(exact)}
                fl = [r for r in rs if "float_error_pct" in r]
                if fl:
                    pt["float"] = _stats([r["float_error_pct"][pkey] for r in fl])
                    pt["exact_same_seeds"] = _stats([r["exact_error_pct"][pkey] for r in fl])
                points.append(pt)
            sig = [p["sigma"] for p in points]
            curves.append({"label": label, "model": recs[0]["model"], "path": recs[0]["path"],
                           "support_kept_pct": recs[0]["support_kept_pct"], "pass": int(pkey),
                           "points": points,
                           "sigma_at_0p5pp": crossing(sig, [p["exact"]["mean"] for p in points]),
                           # the float path runs on fewer seeds: compare it with the exact
                           # path on those same seeds
                           "sigma_at_0p5pp_float": crossing(
                               sig, [p["float"]["mean"] for p in points])
                           if all("float" in p for p in points) else None,
                           "sigma_at_0p5pp_exact_float_seeds": crossing(
                               sig, [p["exact_same_seeds"]["mean"] for p in points])
                           if all("float" in p for p in points) else None})
    return {"curves": curves}


def plot(summary: dict, param: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    any_float = False
    for curve in summary["curves"]:
        pts = curve["points"]
        s = np.array([p["sigma"] for p in pts])
        mean = np.array([p["exact"]["mean"] for p in pts])
        std = np.array([p["exact"]["std"] for p in pts])
        lo = np.array([p["exact"]["min"] for p in pts])
        hi = np.array([p["exact"]["max"] for p in pts])
        line = axes[0].errorbar(s, mean, yerr=std, marker="o", ms=3, capsize=3,
                                label=curve["label"])
        axes[0].fill_between(s, lo, hi, alpha=0.12, color=line[0].get_color())
        axes[1].plot(s, mean - mean[0], marker="o", ms=3, color=line[0].get_color(),
                     label=curve["label"])
        if all("float" in p for p in pts):
            fl = np.array([p["float"]["mean"] for p in pts])
            axes[1].plot(s, fl - fl[0], ls=":", color=line[0].get_color())
            any_float = True
    if any_float:
        axes[1].plot([], [], ls=":", color="gray", label="float path, first seeds (dotted)")
    axes[1].axhline(0.5, color="gray", lw=0.8, ls="--")
    unit = " (mV)" if param == "vth_sigma_mv" else ""
    axes[0].set_title("MNIST test error: mean +- std over seeds, shaded min..max")
    axes[1].set_title("error increase vs sigma 0 (dashed: +0.5 pp)")
    for ax in axes:
        ax.set_xlabel(f"{param}{unit}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("error (%)")
    axes[1].set_ylabel("error - error at sigma 0 (pp)")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _workers_text(workers: int | str) -> str:
    """``meta["workers"]``: a local worker count, or the scheduler address of a cluster."""
    if isinstance(workers, int):
        return f"{workers} worker{'s' if workers != 1 else ''}"
    return f"the Dask cluster at {workers}"


def _jobs_text(meta: dict) -> str:
    """How many jobs, how many of them this command ran (the others were read back), in
    how much job time, on what."""
    jobs, ran = meta["jobs"], meta.get("ran", meta["jobs"])
    time_text = f"{meta['job_s']:.0f} s of job time"
    if ran == 0:
        return f"{jobs} jobs, every one read back from an earlier run"
    done = f"{jobs} jobs, {time_text}" if ran == jobs else \
        f"{jobs} jobs: {ran} run by it in {time_text}, the others read back"
    return f"{done}, {_workers_text(meta['workers'])}"


def markdown_section(summary: dict, meta: dict) -> str:
    param = meta["param"]
    lines = [f"### Sweep of `{param}`", "",
             f"Made by `{meta['command']}` ({_jobs_text(meta)}) on {meta['images_desc']}; "
             f"other sources from "
             f"{json.dumps({k: v for k, v in meta['base'].items() if k not in (param, 'seed')})}"
             f"; {meta['seeds']} seeds per nonzero sigma; the float path on the first "
             f"{meta['float_seeds']} seeds.", "",
             f"![error vs {param}](variability_{param}.png)", "",
             "Error (%) in the hardware-exact path, mean +- std over seeds [min, max]:", ""]
    curves = summary["curves"]
    sigmas = sorted({p["sigma"] for c in curves for p in c["points"]})
    lines.append("| model | " + " | ".join(f"{param} {_sigma_text(s)}" for s in sigmas) + " |")
    lines.append("| --- |" + " --- |" * len(sigmas))
    for c in curves:
        by = {p["sigma"]: p for p in c["points"]}
        cells = []
        for s in sigmas:
            p = by.get(s)
            if p is None:
                cells.append("")
            elif p["exact"]["n"] == 1:
                cells.append(f"{p['exact']['mean']:.2f}")
            else:
                e = p["exact"]
                cells.append(f"{e['mean']:.2f} +- {e['std']:.2f} [{e['min']:.2f}, "
                             f"{e['max']:.2f}]")
        lines.append(f"| {c['label']} | " + " | ".join(cells) + " |")
    lines += ["", "Sigma at which the mean error has grown by 0.5 pp (linear interpolation; "
                  "'-' = not within the sweep):", "",
              f"| model | error at 0 (%) | +0.5 pp at (exact, {meta['seeds']} seeds) | "
              f"exact, first {meta['float_seeds']} seeds | float, same seeds |",
              "| --- | --- | --- | --- | --- |"]
    for c in curves:
        def fmt(v):
            return "-" if v is None else f"{v:.3g}"
        lines.append(f"| {c['label']} | {c['points'][0]['exact']['mean']:.2f} | "
                     f"{fmt(c['sigma_at_0p5pp'])} | {fmt(c['sigma_at_0p5pp_exact_float_seeds'])}"
                     f" | {fmt(c['sigma_at_0p5pp_float'])} |")
    lines += ["", "Hardware-exact (integerized) vs float (unrounded factors) path, same seeds, "
                  "mean error (%):", "",
              "| model | sigma | seeds | exact | float | difference (pp) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for c in curves:
        for p in c["points"]:
            if "float" in p and p["sigma"]:
                ex, fl = p["exact_same_seeds"]["mean"], p["float"]["mean"]
                lines.append(f"| {c['label']} | {_sigma_text(p['sigma'])} | {p['float']['n']} "
                             f"| {ex:.2f} | {fl:.2f} | {fl - ex:+.2f} |")
    return "\n".join(lines) + "\n"


def write_report(summary: dict, meta: dict, out: Path) -> list[Path]:
    """docs/variability.json (one entry per swept parameter), the PNG, and the generated
    section of docs/variability.md between its markers (the rest is hand-written)."""
    out.mkdir(parents=True, exist_ok=True)
    param = meta["param"]
    jpath = out / "variability.json"
    data = json.loads(jpath.read_text()) if jpath.exists() else {}
    data[param] = {"meta": meta, **summary}
    atomic_write_text(jpath, json.dumps(data, indent=1) + "\n")
    png = out / f"variability_{param}.png"
    plot(summary, param, png)
    md = out / "variability.md"
    begin, end = f"<!-- sweep {param}: begin -->", f"<!-- sweep {param}: end -->"
    text = md.read_text() if md.exists() else "# Process variability\n\n"
    section = f"{begin}\n{markdown_section(summary, meta)}{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_text(md, text)
    return [jpath, png, md]


def describe_images(spec: str, count: int) -> str:
    if spec.startswith("mnist-test:"):
        return f"the first {count} MNIST test images" if count < 10000 else \
            "the 10,000 MNIST test images"
    return f"{count} images of {spec}"


def command_line() -> str:
    return " ".join(["sbnn", *sys.argv[1:]])
