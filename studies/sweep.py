"""Accuracy / latency / energy sweep over budgets, exit margins and support masks.

Everything here is the golden model (hardware-exact integer path and the timing contract);
``sbnn sweep --confirm N`` reruns a sample of the points on the RTL through the cosim.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sbnn.fileio import atomic_file
from sbnn.golden.energy import EnergyModel
from sbnn.golden.hwpath import Schedule, input_codes, run_hw, schedule
from sbnn.golden.qmodel import QuantizedModel

__all__ = ["pass_counters", "rank_support_columns", "keep_support_fraction", "sweep",
           "latency_table", "plot_sweep", "MACRO_VARIANTS"]


def pass_counters(model: QuantizedModel, sched: Schedule, pixels: np.ndarray) -> dict:
    """Counters of an inference that stops after each pass: {pass: dict of (B,) arrays}."""
    cfg = model.config
    a = cfg.active_rows
    x0 = input_codes(cfg, pixels)
    nz0 = np.stack([np.count_nonzero(x0[:, rb * a:(rb + 1) * a], axis=1)
                    for rb in range(cfg.row_blocks(0))], axis=1)
    out = {}
    evals = cols = 0
    dac = np.zeros(len(x0), dtype=np.int64)
    for p in sched.passes:
        for ev in (e for e in sched.evals if e.pass_ == p):
            evals += 1
            cols += bin(ev.col_en).count("1")
            if ev.layer == 0:
                dac += nz0[:, ev.row_block]
            else:
                dac += min(a, cfg.layers[ev.layer] - ev.row_block * a)
        n = len(x0)
        out[p] = {"cycles": np.full(n, sched.total_cycles(p)), "macro_evals": np.full(n, evals),
                  "column_evals": np.full(n, cols), "dac_conversions": dac.copy(),
                  "adc_conversions": np.full(n, cols)}
    return out


def rank_support_columns(model: QuantizedModel) -> list[tuple[int, int, int]]:
    """Support columns (layer, neuron, k) ordered least useful first.

    Heuristic: a support plane that agrees with the base plane on most bits adds little
    beyond a rescaling of it, so columns are ranked by how many bits differ from B0.
    """
    scored = []
    for layer, planes in enumerate(model.planes):
        base = planes[0]
        for k in range(1, planes.shape[0]):
            differ = (planes[k] != base).sum(axis=1)
            scored += [(int(d), layer, j, k) for j, d in enumerate(differ)]
    scored.sort()
    return [(layer, j, k) for _, layer, j, k in scored]


def keep_support_fraction(model: QuantizedModel, keep: float) -> QuantizedModel:
    """Mask the least useful support columns so that ``keep`` of them stay enabled."""
    order = rank_support_columns(model)
    masks = [np.ones_like(mk) for mk in model.support_mask]
    for layer, j, k in order[: round(len(order) * (1 - keep))]:
        masks[layer][j, k - 1] = False
    return model.with_mask(tuple(masks))


def sweep(model: QuantizedModel, pixels: np.ndarray, labels: np.ndarray,
          margins: list[int | None], keeps: list[float], energy: EnergyModel,
          progress=None) -> list[dict]:
    """One row per (support fraction kept, budget, exit margin)."""
    cfg = model.config
    rows = []
    for keep in keeps:
        masked = keep_support_fraction(model, keep) if cfg.num_supports else model
        for budget in range(cfg.num_supports + 1):
            sched = schedule(masked, budget)
            counters = pass_counters(masked, sched, pixels)
            # With budget 0 there is no later pass to skip: only "no exit" is a distinct point.
            for margin in (margins if budget else [None]):
                res = run_hw(masked, pixels, budget, margin)
                idx = np.searchsorted(sched.passes, res.exit_pass)
                per = {name: np.stack([counters[p][name] for p in sched.passes])[
                    idx, np.arange(len(labels))] for name in counters[sched.passes[0]]}
                e = energy.energy_pj(**per)
                rows.append({
                    "support_kept_pct": round(100 * masked.support_columns_kept, 1),
                    "budget": budget, "exit_margin": margin,
                    "error_pct": round(float((res.classes != labels).mean() * 100), 3),
                    "mean_cycles": round(float(per["cycles"].mean()), 1),
                    "mean_energy_pj": round(float(e.mean()), 1),
                    "exit_early_pct": round(float((res.exit_pass < budget).mean() * 100), 1),
                })
                if progress:
                    progress(rows[-1])
    return rows


#: The macro arrangements (num_macros, macro_interval; None = macro_latency) that
#: :func:`latency_table` reports beside the model's own design.
MACRO_VARIANTS = ((1, None), (1, 1), (2, None), (2, 1), (4, None), (4, 1))


def latency_table(model: QuantizedModel, pixels: np.ndarray, labels: np.ndarray,
                  variants=MACRO_VARIANTS) -> list[dict]:
    """Per macro arrangement and budget: cycles, the physical minimum, the macros'
    utilization, error. The model's own design comes first (one row per budget, in budget
    order), then each of ``variants`` (num_macros, macro_interval) that differs from it.

    ``minimum_cycles``: the evaluations on the macros without any dependency (the last of
    ``ceil(evaluations / num_macros)`` starts per macro, ``macro_interval`` apart, plus its
    latency); ``macro_utilization_pct`` / ``min_macro_utilization_pct``: the mean / least
    over the macros of the cycles with an evaluation in flight (``Schedule.macro_busy``).
    The error does not depend on the arrangement.
    """
    cfg = model.config
    own = (cfg.num_macros, cfg.interval)
    arrangements = [own] + [v for v in dict.fromkeys(
        (n, cfg.macro_latency if i is None else i) for n, i in variants) if v != own]
    errors = [round(float((run_hw(model, pixels, b).classes != labels).mean() * 100), 3)
              for b in range(cfg.num_supports + 1)]
    out = []
    for n, interval in arrangements:
        arranged = dataclasses.replace(model, config=cfg.replace(
            num_macros=n, macro_interval=None if interval == cfg.macro_latency else interval))
        for budget in range(cfg.num_supports + 1):
            sched = schedule(arranged, budget)
            last = sched.passes[-1]
            cycles = sched.total_cycles(last)
            evals = len(sched.upto(last))
            minimum = -(-evals // n) * interval + cfg.macro_latency - interval if evals else 0
            busy = [100 * b / cycles for b in sched.macro_busy(last)]
            out.append({"num_macros": n, "macro_interval": interval, "budget": budget,
                        "cycles_per_inference": cycles, "minimum_cycles": minimum,
                        "macro_utilization_pct": round(sum(busy) / n, 2),
                        "min_macro_utilization_pct": round(min(busy), 2),
                        "error_pct": errors[budget]})
    return out


def plot_sweep(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    keeps = sorted({r["support_kept_pct"] for r in rows}, reverse=True)
    for keep in keeps:
        sel = [r for r in rows if r["support_kept_pct"] == keep]
        for ax, key, unit in ((axes[0], "mean_cycles", "mean cycles per inference"),
                              (axes[1], "mean_energy_pj", "mean energy per inference (pJ)")):
            ax.scatter([r[key] for r in sel], [r["error_pct"] for r in sel], s=14,
                       label=f"{keep:g} % support columns kept")
            ax.set_xlabel(unit)
            ax.set_ylabel("MNIST test error (%)")
            ax.grid(alpha=0.3)
    axes[0].set_title("error vs latency (budgets x exit margins)")
    axes[1].set_title("error vs energy")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
