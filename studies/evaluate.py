"""Evaluation for the results table: hardware-exact and float error per latency budget, the
cycles each budget costs, and the accuracy-vs-latency and accuracy-vs-dropout plots (the
table over seeds itself is :mod:`sbnn.studies.results`).

The float path is the trained PyTorch model (its ``*_float.pt`` state dict beside the
``.npz``, with the .npz's support mask applied); the hardware-exact path is
:func:`golden.hwpath.run_hw` (DAC codes, per-tile ADC floor and saturation, tiling).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from sbnn.fileio import atomic_file
from sbnn.golden.hwpath import run_hw, schedule
from sbnn.golden.model import SupportedBNN, pixels_to_codes
from sbnn.golden.qmodel import QuantizedModel

from .results_targets import TARGETS

__all__ = ["PAPER", "TARGETS", "float_model_for", "load_float_model", "hw_pass_predictions",
           "evaluate_model", "plot_latency", "plot_dropout", "random_dropout_curve"]

#: arXiv 1911.08518 abstract: MNIST test error (%) and the dropped share of supports.
PAPER = {"baseline_error_pct": 1.40, "case_i_error_pct": 0.91, "case_ii_error_pct": 1.13,
         "support_columns_pruned_pct": 52.0,
         "abstract_relative_reduction_pct": {"case_i": 35.71, "case_ii": 27.65}}


def float_model_for(model_path: Path, qmodel: QuantizedModel) -> SupportedBNN | None:
    """The trained float model saved beside ``model_path`` (``<stem>_float.pt``, or the
    source run's for a pruned model), with the QuantizedModel's support mask; None if none."""
    model_path = Path(model_path)
    candidates = [model_path.with_name(model_path.stem + "_float.pt")]
    meta = model_path.with_suffix(".json")
    if meta.is_file():  # a pruned model names the model it came from
        src = json.loads(meta.read_text()).get("source_model")
        if src:
            candidates.append(Path(src).with_name(Path(src).stem + "_float.pt"))
    for cand in candidates:
        if cand.is_file():
            return load_float_model(cand, qmodel)
    return None


def load_float_model(path: Path, qmodel: QuantizedModel) -> SupportedBNN:
    """The float state dict at ``path`` for ``qmodel``'s config, with its support mask.
    Raises RuntimeError if the state does not fit the config."""
    net = SupportedBNN(qmodel.config)
    net.load_state_dict(torch.load(path, weights_only=True))
    with torch.no_grad():
        for lin, mask in zip(net.linears, qmodel.support_mask):
            lin.mask.copy_(torch.from_numpy(mask.astype(np.float32)))
    return net.eval()


@torch.no_grad()
def _float_errors(net: SupportedBNN, pixels: np.ndarray, labels: np.ndarray) -> list[float]:
    codes = pixels_to_codes(torch.from_numpy(pixels.reshape(len(pixels), -1)), net.cfg)
    out = []
    for b in range(net.cfg.num_supports + 1):
        pred = torch.cat([net(c, b).argmax(1) for c in codes.split(2000)]).numpy()
        out.append(float((pred != labels).mean() * 100))
    return out


def hw_pass_predictions(qmodel: QuantizedModel, pixels: np.ndarray,
                        chunk: int = 1000) -> dict[int, np.ndarray]:
    """Hardware-exact classes after each pass of a budget-K run: {pass: (N,) classes}."""
    flat = pixels.reshape(len(pixels), -1)
    parts: dict[int, list[np.ndarray]] = {}
    for i in range(0, len(flat), chunk):  # one run at budget K gives every pass
        res = run_hw(qmodel, flat[i:i + chunk])
        for p, logits in res.pass_logits.items():
            parts.setdefault(p, []).append(np.argmax(logits, 1))
    return {p: np.concatenate(v) for p, v in parts.items()}


def evaluate_model(qmodel: QuantizedModel, pixels: np.ndarray, labels: np.ndarray,
                   float_net: SupportedBNN | None = None, chunk: int = 1000,
                   pass_predictions: dict[int, np.ndarray] | None = None) -> dict:
    """Hardware-exact (and float, if given) error for every budget 0..K, with the cycles
    per inference of each budget under the timing contract; ``pass_predictions`` (from
    :func:`hw_pass_predictions`) saves recomputing the hardware-exact classes."""
    cfg = qmodel.config
    if pass_predictions is None:
        pass_predictions = hw_pass_predictions(qmodel, pixels, chunk)
    wrong = {p: int((pred != labels).sum()) for p, pred in pass_predictions.items()}
    fl = _float_errors(float_net, pixels, labels) if float_net is not None else None
    budgets = []
    for b in range(cfg.num_supports + 1):
        sched = schedule(qmodel, b)
        p = max(q for q in sched.passes if q <= b)  # a budget runs up to its last real pass
        budgets.append({"budget": b, "hw_error_pct": round(100 * wrong[p] / len(labels), 4),
                        "float_error_pct": None if fl is None else round(fl[b], 4),
                        "cycles": sched.total_cycles(),
                        "us_at_clock": round(sched.total_cycles() / cfg.clock_mhz, 3)})
    return {"hw_error_pct": budgets[-1]["hw_error_pct"],
            "float_error_pct": budgets[-1]["float_error_pct"],
            "budgets": budgets,
            "support_columns_pruned_pct": round(100 * (1 - qmodel.support_columns_kept), 2),
            "layers": list(cfg.layers), "num_supports": cfg.num_supports,
            "test_images": int(len(labels))}


def random_dropout_curve(qmodel: QuantizedModel, pixels: np.ndarray, labels: np.ndarray,
                         fractions: list[float], seed: int = 0) -> list[dict]:
    """Hardware-exact error with a random share of support columns masked (no re-fit):
    what dropping columns without the learned ranking costs."""
    from .prune import apply_pruning, hw_error, random_columns

    total = sum(m.size for m in qmodel.support_mask)
    out = []
    for f in fractions:
        cols = random_columns(qmodel, int(round(f * total)), np.random.default_rng(seed))
        cand = apply_pruning(qmodel, cols, np.zeros((0, qmodel.config.layers[0]), np.uint8),
                             refit=False)
        out.append({"pruned_pct": round(100 * f, 2), "error_pct": hw_error(cand, pixels, labels)})
    return out


def plot_latency(entries: dict[str, dict], path: Path) -> Path:
    """Error vs cycles per inference, one line per model, one point per budget (a star:
    the confidence exit, at its mean cycles, where the entry has ``exit``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ev in entries.items():
        cyc = [b["cycles"] for b in ev["budgets"]]
        err = [b["hw_error_pct"] for b in ev["budgets"]]
        line, = ax.plot(cyc, err, "o-", label=name)
        for b, x, y in zip(ev["budgets"], cyc, err):
            ax.annotate(f"b={b['budget']}", (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        if "exit" in ev:  # the confidence exit at the full budget: mean cycles per image
            ax.plot([ev["exit"]["cycles"]], [ev["exit"]["hw_error_pct"]], "*", ms=11,
                    color=line.get_color(), label=f"{name} + confidence exit")
    return _finish(plt, fig, ax, "cycles per inference (timing contract)",
                   "accuracy vs latency budget", path)


def plot_dropout(ranked: list[dict], random: list[dict], limit: float | None,
                 path: Path, finetuned: bool = False, ranked_split: str = "val") -> Path:
    """Error vs share of support columns masked: learned ranking (+ threshold re-fit, or
    + fine-tuning; its errors on ``ranked_split``, as sbnn prune measured them), and random
    columns (test error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    if ranked:
        ax.plot([r["pruned_pct"] for r in ranked], [r["error_pct"] for r in ranked], "o-",
                label=("learned ranking + fine-tuning" if finetuned
                       else "learned ranking + threshold re-fit") + f" ({ranked_split} error)")
    if random:
        ax.plot([r["pruned_pct"] for r in random], [r["error_pct"] for r in random], "s--",
                label="random columns, no re-fit (test error)")
    if limit is not None:
        ax.axhline(limit, color="gray", lw=0.8, ls=":", label="limit: unpruned + 0.05 pp")
    return _finish(plt, fig, ax, "support columns masked %",
                   "accuracy vs support-column dropout", path)


def _finish(plt, fig, ax, xlabel: str, title: str, path: Path) -> Path:
    """The common frame of the results plots (error on y), saved and closed."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MNIST error % (hardware-exact)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # an empty curve set has no legend
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return Path(path)
