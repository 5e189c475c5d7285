"""Pruning with retraining: mask support columns, then let the network adapt to the mask.

:func:`sbnn.studies.prune.prune` only re-fits thresholds after masking, so every masked
column's contribution is simply lost. Here the float network is fine-tuned for a few epochs
with the mask fixed (support planes of the kept columns, batch norms and output scale/bias;
the base plane B0 stays frozen, as in case (i) stage 2), then folded to the hardware-exact
integer model and measured on the validation split. Columns are masked in the order of
:func:`sbnn.studies.prune.score_columns` (ranked on calibration images of the validation
split), and the count is found by bisection, as in ``prune``. Fine-tuning trains on the
fitting split ("fit") and reports its epochs on the validation split ("val"); the test set
is never read here.

Because fine-tuning is more training, the unpruned network is fine-tuned the same way as a
control, and the limit is ``min(unpruned, fine-tuned unpruned) + tolerance``: pruning may
not look free just because the extra epochs helped.

Every trial is checkpointed in ``work_dir`` (one file per masked-column count), so an
interrupted pass resumes where it stopped.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from sbnn.fileio import atomic_file
from sbnn.golden.fold import fold_model
from sbnn.golden.model import SupportedBNN
from sbnn.golden.qmodel import QuantizedModel

from .prune import Column, PruneResult, hw_error, largest_within, score_columns
from .recipe import FinetuneSettings
from .train import _run_stage

# FinetuneSettings lives in the torch-free studies/recipe.py; re-exported here.
__all__ = ["FinetuneSettings", "masked_finetune", "prune_finetune", "save_float_twin"]


#: The fine-tuning a pruning uses when none is given.
DEFAULT_FINETUNE = FinetuneSettings()


def masked_finetune(net: SupportedBNN, columns: list[Column],
                    fit: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                    settings: FinetuneSettings, ckpt: Path, log=print) -> SupportedBNN:
    """A copy of ``net`` with ``columns`` masked, fine-tuned (base plane frozen) for
    ``settings.epochs`` epochs on ``fit`` (images, labels), each epoch's error logged on
    ``val``; ``ckpt`` makes it resumable."""
    tuned = copy.deepcopy(net)
    with torch.no_grad():
        for layer, j, k in columns:
            tuned.linears[layer].mask[j, k - 1] = 0.0
    for lin in tuned.linears:
        lin.support_drop = 0.0  # the mask is now fixed: no more random column dropout
        lin.base.requires_grad_(False)
    params = [p for p in tuned.parameters() if p.requires_grad]
    torch.set_num_threads(settings.recipe.threads)
    _run_stage(f"fine-tune ({len(columns)} masked)", tuned, params, settings.epochs, None,
               fit, val, settings.recipe, ckpt, log)
    return tuned.eval()


def prune_finetune(net: SupportedBNN, model: QuantizedModel, calib: np.ndarray,
                   fit: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                   work_dir: str | Path, tolerance_pp: float = 0.05,
                   settings: FinetuneSettings = DEFAULT_FINETUNE,
                   log=print) -> tuple[PruneResult, float, SupportedBNN | None]:
    """Mask as many support columns as possible, each trial fine-tuned on ``fit``, with
    hardware-exact validation error (on ``val``) <= min(unpruned, fine-tuned unpruned) +
    ``tolerance_pp``; ``calib`` (validation pixels) ranks the columns.

    ``net`` is the trained float network and ``model`` its folded QuantizedModel. Returns
    the result, the fine-tuned control's error, and the result's fine-tuned float network
    (None when no trial passed and the result is ``model`` itself)."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    total = sum(m.size for m in model.support_mask)
    base_err = hw_error(model, *val)
    order = [c for _, c in score_columns(model, calib)]
    cache: dict[int, tuple[float, QuantizedModel, SupportedBNN]] = {}
    trials: list[dict] = [{"pruned": 0, "error_pct": base_err, "finetuned": False}]

    def trial(n: int) -> float:
        if n not in cache:
            tuned = masked_finetune(net, order[:n], fit, val, settings,
                                    work / f"masked_{n}.pt", log)
            folded = fold_model(tuned)
            cache[n] = (hw_error(folded, *val), folded, tuned)
            trials.append({"pruned": n, "error_pct": cache[n][0], "finetuned": True})
            log(f"  mask {n} columns ({100 * n / max(1, total):.1f} %), fine-tuned: "
                f"{cache[n][0]:.2f} % hw-exact validation error")
        return cache[n][0]

    control = trial(0)
    limit = min(base_err, control) + tolerance_pp + 1e-9
    log(f"unpruned: {base_err:.2f} %, fine-tuned unpruned (control): {control:.2f} %; "
        f"limit {limit:.2f} %, {len(order)} of {total} support columns enabled")
    step = max(1, int(len(order) * settings.resolution_pct / 100))
    lo = largest_within(trial, len(order), limit, step)
    if lo == 0 and control > limit:  # nothing passed: the answer is the unpruned model
        err, best, tuned = base_err, model, None
    else:
        err, best, tuned = cache[lo]
    result = PruneResult(best, base_err, err, lo, total,
                         sorted(trials, key=lambda t: (t["pruned"], t["finetuned"])))
    return result, control, tuned


def save_float_twin(net: SupportedBNN, model_path: str | Path) -> Path:
    """Save ``net``'s state dict where ``sbnn eval`` looks for a model's float twin:
    ``<stem>_float.pt`` beside ``model_path`` (atomically); returns that path."""
    path = Path(model_path)
    twin = path.with_name(path.stem + "_float.pt")
    with atomic_file(twin) as tmp:
        torch.save(net.state_dict(), tmp)
    return twin
