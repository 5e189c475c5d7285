"""Training: case (i) — a plain BNN first, then support planes learned on its frozen base.

Published BinaryNet MLP practice: sign + straight-through estimator, latent weights clipped
to [-1, 1], batch norm (folded to thresholds at export), Adam with an exponentially decaying
learning rate. Every epoch is checkpointed; rerunning the same command resumes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sbnn.config import SbnnConfig

from .fold import fold_model
from .hwpath import run_hw
from .model import SupportedBNN, pixels_to_codes
from .qmodel import QuantizedModel

__all__ = ["TrainSettings", "train_case_i", "evaluate_float", "evaluate_hw"]


@dataclass(frozen=True)
class TrainSettings:
    base_epochs: int = 20
    support_epochs: int = 10
    batch_size: int = 100
    lr: float = 3e-3
    lr_final: float = 3e-4
    seed: int = 0
    threads: int = 2


def _progress(prefix: str, done: int, total: int) -> None:
    stream = sys.stderr  # looked up per call: the stream may be replaced (pytest, redirects)
    if not stream.isatty():
        return
    width = 30
    fill = width * done // max(1, total)
    stream.write(f"\r{prefix} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}")
    if done == total:
        stream.write("\r" + " " * (len(prefix) + width + 20) + "\r")
    stream.flush()


@torch.no_grad()
def evaluate_float(model: SupportedBNN, pixels: np.ndarray, labels: np.ndarray,
                   budget: int | None = None) -> float:
    """Test error (%) of the float model."""
    model.eval()
    codes = pixels_to_codes(torch.from_numpy(pixels.reshape(len(pixels), -1)), model.cfg)
    pred = model(codes, budget).argmax(1).numpy()
    return float((pred != labels).mean() * 100)


def evaluate_hw(qmodel: QuantizedModel, pixels: np.ndarray, labels: np.ndarray,
                budget: int | None = None) -> float:
    """Test error (%) of the hardware-exact integer path."""
    pred = run_hw(qmodel, pixels.reshape(len(pixels), -1), budget).classes
    return float((pred != labels).mean() * 100)


def _run_stage(name: str, model: SupportedBNN, params: list[nn.Parameter], epochs: int,
               budget: int | None, train: tuple[np.ndarray, np.ndarray],
               test: tuple[np.ndarray, np.ndarray], settings: TrainSettings, ckpt: Path,
               log) -> None:
    opt = torch.optim.Adam(params, lr=settings.lr)
    gamma = (settings.lr_final / settings.lr) ** (1 / max(1, epochs - 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start = state["epoch"]
        log(f"{name}: resumed from {ckpt} after epoch {start}")
    x_all = pixels_to_codes(torch.from_numpy(train[0].reshape(len(train[0]), -1).copy()), model.cfg)
    y_all = torch.from_numpy(train[1].astype(np.int64))
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(start, epochs):
        model.train()
        gen = torch.Generator().manual_seed(settings.seed * 1000 + epoch)
        order = torch.randperm(len(x_all), generator=gen)
        steps = len(order) // settings.batch_size
        total_loss, t0 = 0.0, time.time()
        for step in range(steps):
            idx = order[step * settings.batch_size:(step + 1) * settings.batch_size]
            loss = loss_fn(model(x_all[idx], budget), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.clip_latent()
            total_loss += loss.item()
            if step % 20 == 0 or step == steps - 1:
                _progress(f"{name} epoch {epoch + 1}/{epochs}", step + 1, steps)
        sched.step()
        err = evaluate_float(model, *test, budget=budget)
        log(f"{name} epoch {epoch + 1}/{epochs}: loss {total_loss / steps:.4f}, "
            f"float test error {err:.2f} %, {time.time() - t0:.1f} s")
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "epoch": epoch + 1}, tmp)
        tmp.replace(ckpt)


def train_case_i(cfg: SbnnConfig, train: tuple[np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray], out_dir: str | Path,
                 settings: TrainSettings = TrainSettings(), log=print) -> dict:
    """Stage 1: plain BNN (supports off). Stage 2: supports, norms and output scale on the
    frozen base. Writes ``baseline.npz`` and ``model.npz`` (QuantizedModel) and
    ``train_summary.json`` to ``out_dir``; returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    cfg.write_snapshot(out / "config.json")
    model = SupportedBNN(cfg)
    t0 = time.time()

    stage1 = [p for n, p in model.named_parameters() if not n.endswith("supports")]
    _run_stage("base", model, stage1, settings.base_epochs, 0, train, test, settings,
               out / "ckpt_base.pt", log)
    base_float_error = evaluate_float(model, *test, budget=0)
    folded = fold_model(model)
    baseline = folded.with_mask(tuple(np.zeros_like(m) for m in folded.support_mask))
    baseline.save(out / "baseline.npz")

    if cfg.num_supports:
        # Start every support plane at the base plane's signs with small latent magnitude:
        # the network computes the same function, and supports are free to flip early.
        if not (out / "ckpt_supports.pt").exists():
            with torch.no_grad():
                for lin in model.linears:
                    lin.supports.copy_(lin.base.detach()[None].expand_as(lin.supports) * 0.1)
        for p in model.base_parameters():
            p.requires_grad_(False)
        stage2 = [p for p in model.parameters() if p.requires_grad]
        _run_stage("supports", model, stage2, settings.support_epochs, None, train, test,
                   settings, out / "ckpt_supports.pt", log)
    qmodel = fold_model(model)
    qmodel.save(out / "model.npz")
    minutes = (time.time() - t0) / 60

    summary = {
        "settings": asdict(settings),
        "train_minutes": round(minutes, 2),
        "baseline_float_error_pct": base_float_error,
        "baseline_hw_error_pct": evaluate_hw(baseline, *test, budget=0),
        "float_error_pct": evaluate_float(model, *test),
        "hw_error_pct": evaluate_hw(qmodel, *test),
        "hw_error_pct_by_budget": [evaluate_hw(qmodel, *test, budget=b)
                                   for b in range(cfg.num_supports + 1)],
        "test_images": int(len(test[1])),
    }
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

