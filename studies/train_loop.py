"""One training stage: epochs of minibatch Adam on the fitting split, each epoch validated
per budget (float every epoch, hardware-exact every ``hw_val_every`` epochs and at the last)
and checkpointed, the kept epoch chosen on validation only
(:class:`~sbnn.studies.recipe.CheckpointRule`).

The loss of a stage is ``sum_p w_p CE(model(x, p), y)`` over the budgets it trains; each
budget's forward pass runs its own batch norms, so their statistics are per budget (the
switchable batch norm of slimmable networks). After every step the model's projections run
(latent weights clipped, batch-norm signs aligned across budgets).

A stage's checkpoint holds the last epoch's model, optimizer and schedule (rerunning
resumes there), the per-epoch validation record and the kept epoch's model, which the model
holds when the stage returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sbnn import progress
from sbnn.golden.fold import fold_model
from sbnn.golden.hwpath import run_hw
from sbnn.golden.model import SupportedBNN, pixels_to_codes
from sbnn.golden.qmodel import QuantizedModel
from sbnn.machine import cpu_name

from .recipe import CheckpointRule, TrainSettings

__all__ = ["Stage", "resolve_device", "device_name", "machine_record", "evaluate_float",
           "evaluate_hw", "hw_errors_by_budget", "validate", "run_stage", "cpu_state"]

Split = tuple[np.ndarray, np.ndarray]
Log = Callable[[str], Any]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else the CPU), ``cpu`` or ``cuda``; ValueError if CUDA is
    asked for and torch sees none."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("cuda was asked for but torch sees no CUDA device; use cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """What a summary records of the device: ``cpu`` or ``cuda (<GPU name>)``."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return "cpu"


def machine_record() -> dict:
    """What a summary records of the machine a run trained on: the CPU model, its core
    count, the torch build and the load average at the end (other work on the machine
    stretches ``train_minutes``; runs on different CPUs or torch builds need not agree bit
    for bit)."""
    import os

    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "load_avg_1_5_15_min_at_end": load}


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as CPU copies (loadable on a machine without CUDA)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def evaluate_float(model: SupportedBNN, pixels: np.ndarray, labels: np.ndarray,
                   budget: int | None = None) -> float:
    """Error (%) of the float model at ``budget`` (None: K), on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    codes = pixels_to_codes(torch.from_numpy(pixels.reshape(len(pixels), -1)), model.cfg)
    pred = torch.cat([model(c.to(device), budget).argmax(1).cpu()
                      for c in codes.split(2000)]).numpy()
    return float((pred != labels).mean() * 100)


def hw_errors_by_budget(qmodel: QuantizedModel, pixels: np.ndarray, labels: np.ndarray,
                        budgets: Sequence[int]) -> list[float]:
    """Error (%) of the hardware-exact integer path at each of ``budgets``, from one run to
    the largest (it holds every pass's logits; a budget whose pass is empty, in a
    single-layer network, answers with the last pass before it)."""
    flat = pixels.reshape(len(pixels), -1)
    wrong = dict.fromkeys(budgets, 0)
    for i in range(0, len(flat), 2000):
        res = run_hw(qmodel, flat[i:i + 2000], max(budgets))
        for b in budgets:
            last = max(p for p in res.pass_logits if p <= b)
            wrong[b] += int((res.pass_logits[last].argmax(1) != labels[i:i + 2000]).sum())
    return [100 * wrong[b] / len(labels) for b in budgets]


def evaluate_hw(qmodel: QuantizedModel, pixels: np.ndarray, labels: np.ndarray,
                budget: int | None = None) -> float:
    """Error (%) of the hardware-exact integer path at ``budget`` (None: K)."""
    budget = qmodel.config.num_supports if budget is None else budget
    return hw_errors_by_budget(qmodel, pixels, labels, [budget])[0]


def validate(model: SupportedBNN, val: Split, budgets: Sequence[int],
             hardware: bool = True, folded: QuantizedModel | None = None) -> dict[str, Any]:
    """Float and (if ``hardware``, else None) hardware-exact validation error (%) at each
    of ``budgets``; the hardware-exact one of ``folded`` (default: ``model`` folded now,
    with the least-error ADC steps where it calibrates them: the refinement that the saved
    model gets is left to the end of training, it costs a few hardware-exact runs)."""
    if hardware and folded is None:
        folded = fold_model(model, refine_steps=False)
    return {"budgets": list(budgets),
            "float_val_error_pct": [evaluate_float(model, *val, budget=b) for b in budgets],
            "hw_val_error_pct": hw_errors_by_budget(folded, *val, budgets)
            if hardware else None}


@dataclass(frozen=True)
class Stage:
    """One stage of a training run."""

    #: name in logs and in the summary ("base", "supports", "joint", ...)
    name: str
    #: the parameters the stage's optimizer updates
    params: list[nn.Parameter]
    epochs: int
    #: the budgets whose cross-entropies the loss sums (and validation selects on)
    budgets: tuple[int, ...]
    #: their loss weights, summing to 1
    weights: tuple[float, ...]
    #: initial learning rate (decays exponentially to the recipe's lr_final)
    lr: float
    #: checkpoint file (resumable)
    checkpoint: Path


def _epoch_data(model: SupportedBNN, fit: Split, settings: TrainSettings, epoch: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This epoch's (augmented) codes, labels and minibatch order. Per-epoch seeds: a
    resumed run draws the same order, shifts and support dropout as an unbroken one."""
    gen = torch.Generator().manual_seed(settings.seed * 1000 + epoch)
    torch.manual_seed(settings.seed * 1000 + epoch + 500)  # support-dropout draws
    rng = np.random.default_rng(settings.seed * 1000 + epoch)
    images = fit[0].reshape(len(fit[0]), 28, 28) if settings.shift or settings.distorts \
        else fit[0]
    x_np = settings.augment(images, rng, device).reshape(len(images), -1)
    codes = pixels_to_codes(torch.from_numpy(np.ascontiguousarray(x_np)), model.cfg)
    labels = torch.from_numpy(fit[1].astype(np.int64))
    return codes.to(device), labels.to(device), torch.randperm(len(codes), generator=gen)


def _train_epoch(model: SupportedBNN, stage: Stage, opt: torch.optim.Optimizer,
                 data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                 batch_size: int, title: str) -> tuple[float, float]:
    """One pass over the data; returns the mean loss and the training accuracy (%) of the
    stage's largest budget."""
    codes, labels, order = data
    loss_fn = nn.CrossEntropyLoss()
    steps = len(order) // batch_size
    total_loss, correct = 0.0, 0
    pbar = progress.bar(steps, title, "batch")
    for step in range(steps):
        idx = order[step * batch_size:(step + 1) * batch_size].to(codes.device)
        x, y = codes[idx], labels[idx]
        loss = 0
        for out, weight in zip(model.forward_budgets(x, stage.budgets), stage.weights):
            loss = loss + weight * loss_fn(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.constrain()
        total_loss += loss.item()
        correct += int((out.argmax(1) == y).sum())
        pbar.update(1)
        if step % 20 == 0 or step == steps - 1:
            seen = (step + 1) * batch_size
            pbar.set_postfix_str(f"loss {total_loss / (step + 1):.4f}, "
                                 f"train acc {100 * correct / seen:.2f} %", refresh=False)
    pbar.close()
    return total_loss / max(1, steps), 100 * correct / max(1, steps * batch_size)


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def run_stage(model: SupportedBNN, stage: Stage, fit: Split, val: Split,
              settings: TrainSettings, log: Log = print,
              device: torch.device | None = None) -> dict[str, Any]:
    """Train ``stage`` (resuming from its checkpoint), validate every epoch, leave the kept
    epoch's model in ``model``. Returns ``{"stage", "kept_epoch", "epochs"}``, ``epochs``
    holding each epoch's loss, learning rate and validation errors."""
    device = device or torch.device("cpu")
    # foreach: the multi-tensor Adam (what CUDA picks by default) on the CPU too; its
    # updates equal the per-tensor loop's bit for bit, in less time
    opt = torch.optim.Adam(stage.params, lr=stage.lr, foreach=True)
    decay = (settings.lr_final / stage.lr) ** (1 / max(1, stage.epochs - 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, decay)
    state: dict[str, Any] = {"epoch": 0, "history": [], "kept": None}
    if stage.checkpoint.exists():
        state = torch.load(stage.checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        log(f"{stage.name}: resumed from {stage.checkpoint} after epoch {state['epoch']}")
    for epoch in range(state["epoch"], stage.epochs):
        t0 = time.time()
        model.train()
        data = _epoch_data(model, fit, settings, epoch, device)
        loss, acc = _train_epoch(model, stage, opt, data, settings.batch_size,
                                 f"{stage.name} epoch {epoch + 1}/{stage.epochs}")
        sched.step()
        every = settings.hw_val_every
        hardware = epoch + 1 == stage.epochs or (every > 0 and (epoch + 1) % every == 0)
        record = {"epoch": epoch + 1, "loss": loss, "train_acc_pct": acc,
                  "lr": sched.get_last_lr()[0],
                  **validate(model, val, stage.budgets, hardware)}
        state["history"].append(record)
        score = float(np.mean(record["float_val_error_pct"]))
        kept = state["kept"]
        if (settings.keep_checkpoint == CheckpointRule.last or kept is None
                or score <= kept["score"]):
            state["kept"] = {"epoch": epoch + 1, "score": score, "model": cpu_state(model)}
        state.update(model=model.state_dict(), opt=opt.state_dict(),
                     sched=sched.state_dict(), epoch=epoch + 1)
        _save(stage.checkpoint, state)
        log(f"{stage.name} epoch {epoch + 1}/{stage.epochs}: loss {loss:.4f}, train acc "
            f"{acc:.2f} %, val error float {_pcts(record['float_val_error_pct'])}, hw-exact "
            f"{_pcts(record['hw_val_error_pct'])} (budgets {list(stage.budgets)}), lr "
            f"{record['lr']:.2e}, {time.time() - t0:.1f} s")
    if state["kept"] is not None:
        model.load_state_dict(state["kept"]["model"])
    return {"stage": stage.name, "budgets": list(stage.budgets),
            "kept_epoch": state["kept"]["epoch"] if state["kept"] else None,
            "epochs": state["history"]}


def _pcts(values: list[float] | None) -> str:
    return "not run" if values is None else "/".join(f"{v:.2f}" for v in values) + " %"
