"""Learned pruning of support columns under an accuracy constraint, in the hardware-exact path.

A support column (layer l, neuron j, plane k) is one SRAM column and one ADC conversion per
evaluation; masking it saves both. Pruning here:

1. scores every enabled column on calibration images of the validation split (never the
   test set): the fraction of images on which removing that column alone changes the
   neuron's output (hidden layers:
   its sign after re-fitting the neuron's threshold, see below; output layer: the class),
   computed with the integer ADC codes of the hardware path;
2. masks columns in that order, least useful first, and re-fits the threshold of every
   neuron that lost a column so that its +-1 output agrees best with the unpruned network on
   the calibration images (a support plane that mostly repeats B0 only rescales the neuron, and
   a rescale is a threshold change); output neurons get their mean removed contribution
   added back instead;
3. finds by bisection the largest number of masked columns whose hardware-exact error on
   the validation split stays within ``tolerance_pp`` of the unpruned model's.

Nothing here reads the test set: ``sbnn prune`` loads the validation split only (the
pruned model's test error is measured by the final evaluation, ``sbnn eval``).

The result is a :class:`QuantizedModel` with the new mask and thresholds: the hardware image
(gen/image.py) takes both from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from sbnn.golden.hwpath import input_codes, run_hw
from sbnn.golden.qmodel import QuantizedModel

__all__ = ["plane_codes", "refit_thresholds", "score_columns", "apply_pruning",
           "largest_within", "PruneResult", "prune", "predict", "hw_error", "random_columns"]

Column = tuple[int, int, int]  # (layer, neuron, support plane k in 1..K)


def plane_codes(model: QuantizedModel, layer: int, x: np.ndarray) -> np.ndarray:
    """(K+1, B, m) ADC code sums per plane over row blocks, unmasked: the hardware's
    per-plane contribution to each accumulator (same arithmetic as hwpath.run_hw)."""
    cfg = model.config
    a, n = cfg.active_rows, cfg.layers[layer]
    shift = cfg.adc_steps[layer].bit_length() - 1
    # torch float64 matmul: exact for these integer sums (far below 2**53), and it obeys
    # torch.set_num_threads, which numpy's OpenBLAS does not (it thrashes on a busy machine).
    xf = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    out = np.zeros((cfg.planes, len(x), cfg.layers[layer + 1]), dtype=np.int64)
    for k in range(cfg.planes):
        for rb in range(cfg.row_blocks(layer)):
            rows = slice(rb * a, min(n, (rb + 1) * a))
            w = torch.from_numpy(model.planes[layer][k][:, rows].astype(np.float64))
            s = torch.round(xf[:, rows] @ w.T).numpy().astype(np.int64) * cfg.plane_gains[k]
            out[k] += np.clip(s >> shift, cfg.adc_min, cfg.adc_max)
    return out


def _acc(codes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Accumulators (B, m) from per-plane codes and an (m, K) support mask."""
    return codes[0] + np.einsum("kbm,mk->bm", codes[1:], mask.astype(np.int64))


def refit_thresholds(acc: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per neuron, the integer threshold theta maximizing agreement of (acc >= theta) with
    the boolean ``target`` (both (B, m)); ties go to the middle of the best gap."""
    n, m = acc.shape
    order = np.argsort(acc, axis=0, kind="stable")
    a = np.take_along_axis(acc, order, axis=0)
    t = np.take_along_axis(target, order, axis=0).astype(np.int64)
    zero = np.zeros((1, m), dtype=np.int64)
    pos_before = np.concatenate([zero, np.cumsum(t, axis=0)])  # (n+1, m)
    neg_before = np.arange(n + 1)[:, None] - pos_before
    # candidate i: theta in (a[i-1], a[i]]; everything from i on fires
    agree = neg_before + (pos_before[-1] - pos_before)
    valid = np.ones((n + 1, m), dtype=bool)
    valid[1:n] = a[1:] > a[:-1]  # i inside a run of equal values cannot split it
    agree = np.where(valid, agree, -1)
    best = agree.argmax(axis=0)
    cols = np.arange(m)
    hi = np.where(best < n, a[np.minimum(best, n - 1), cols], a[-1] + 2)
    lo = np.where(best > 0, a[np.maximum(best - 1, 0), cols], a[0] - 2)
    return lo + (hi - lo + 1) // 2  # integer in (lo, hi]


def _forward(model: QuantizedModel, pixels: np.ndarray) -> list[np.ndarray]:
    """Per layer, its (B, n) inputs when the model runs every plane (budget K)."""
    x = input_codes(model.config, pixels)
    xs = [x]
    for layer in range(model.config.num_layers - 1):
        acc = _acc(plane_codes(model, layer, x), model.support_mask[layer])
        x = np.where(acc >= model.thresholds[layer][-1], 1, -1)  # pass K's thresholds
        xs.append(x)
    return xs


def score_columns(model: QuantizedModel, pixels: np.ndarray) -> list[tuple[float, Column]]:
    """Every enabled support column with the fraction of ``pixels`` images whose output
    it alone changes when masked (threshold re-fitted), least useful first."""
    cfg = model.config
    xs = _forward(model, pixels)
    scored: list[tuple[float, Column]] = []
    for layer in range(cfg.num_layers):
        codes = plane_codes(model, layer, xs[layer])
        mask = model.support_mask[layer]
        acc = _acc(codes, mask)
        theta = model.thresholds[layer][-1]
        last = layer == cfg.num_layers - 1
        if last:
            cls = np.argmax(acc - theta, axis=1)
        else:
            fire = acc >= theta
        for k in range(1, cfg.planes):
            on = mask[:, k - 1]
            without = acc - codes[k] * on  # only enabled columns are candidates
            if last:
                for j in np.flatnonzero(on):
                    logits = acc - theta
                    logits[:, j] = without[:, j] - (theta[j] - int(np.rint(codes[k][:, j].mean())))
                    changed = float((np.argmax(logits, axis=1) != cls).mean())
                    # Output columns go last: a class flip rate is not comparable with a
                    # hidden sign-flip rate, and there are only K * classes of them.
                    scored.append((1.0 + changed, (layer, int(j), k)))
            else:
                new_theta = refit_thresholds(without, fire)
                changed = ((without >= new_theta) != fire).mean(axis=0)
                scored += [(float(changed[j]), (layer, int(j), k)) for j in np.flatnonzero(on)]
    scored.sort(key=lambda s: (s[0], s[1]))
    return scored


def apply_pruning(model: QuantizedModel, columns: list[Column], pixels: np.ndarray,
                  refit: bool = True) -> QuantizedModel:
    """Mask ``columns`` and (``refit``) re-fit the thresholds of the neurons that lost one,
    layer by layer on ``pixels`` (calibration images), against the unpruned network's outputs.
    The fit is made at the full budget (pass K) and written to every pass's row."""
    cfg = model.config
    masks = [m.copy() for m in model.support_mask]
    for layer, j, k in columns:
        masks[layer][j, k - 1] = False
    thresholds = [t.copy() for t in model.thresholds]
    if refit and columns:
        lim = 1 << (cfg.threshold_bits - 1)
        ref = _forward(model, pixels)  # targets: the unpruned network's activations
        x = ref[0]
        for layer in range(cfg.num_layers):
            codes = plane_codes(model, layer, x)
            lost = (masks[layer] != model.support_mask[layer]).any(axis=1)
            acc = _acc(codes, masks[layer])
            if layer < cfg.num_layers - 1:
                target = _acc(codes if layer == 0 else plane_codes(model, layer, ref[layer]),
                              model.support_mask[layer]) >= model.thresholds[layer][-1]
                if lost.any():
                    new = refit_thresholds(acc[:, lost], target[:, lost])
                    thresholds[layer][:, lost] = np.clip(new, -lim, lim - 1)
                x = np.where(acc >= thresholds[layer][-1], 1, -1)
            elif lost.any():
                removed = (codes[1:] * (model.support_mask[layer] & ~masks[layer]).T[:, None, :]
                           ).sum(0)
                shift = np.rint(removed.mean(axis=0)).astype(np.int64)
                thresholds[layer][:, lost] = np.clip(thresholds[layer][:, lost] - shift[lost],
                                                     -lim, lim - 1)
    return QuantizedModel(cfg, model.planes, tuple(thresholds), tuple(masks))


def predict(model: QuantizedModel, pixels: np.ndarray) -> np.ndarray:
    """Classes with every plane evaluated (budget K), hardware-exact: the same numbers as
    ``run_hw(model, pixels).classes`` (tested), without run_hw's earlier passes."""
    xs = _forward(model, pixels)
    last = model.config.num_layers - 1
    acc = _acc(plane_codes(model, last, xs[last]), model.support_mask[last])
    return np.argmax(acc - model.thresholds[last][-1], axis=1)


def hw_error(model: QuantizedModel, pixels: np.ndarray, labels: np.ndarray,
             budget: int | None = None, chunk: int = 2000) -> float:
    """Hardware-exact error (%) at ``budget`` (default: every plane), in chunks (memory)."""
    flat = pixels.reshape(len(pixels), -1)
    if budget is None or budget == model.config.num_supports:
        pred = np.concatenate([predict(model, flat[i:i + chunk])
                               for i in range(0, len(flat), chunk)])
    else:
        pred = np.concatenate([run_hw(model, flat[i:i + chunk], budget).classes
                               for i in range(0, len(flat), chunk)])
    return float((pred != labels).mean() * 100)


def largest_within(trial: Callable[[int], float], count: int, limit: float,
                   step: int) -> int:
    """The largest n in 0..count with ``trial(n) <= limit``, by bisection down to a bracket
    of ``step`` columns (assuming the error grows with n); n = 0 is taken as passing."""
    lo, hi = 0, count  # lo: known to meet the limit
    if trial(hi) <= limit:
        return hi
    while hi - lo > step:
        mid = (lo + hi) // 2
        if trial(mid) <= limit:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class PruneResult:
    """A pruning pass: the pruned model and the errors on the split the limit was on
    (the validation split in ``sbnn prune``)."""

    model: QuantizedModel
    base_error_pct: float  # the unpruned model's hardware-exact error
    error_pct: float  # the pruned model's
    pruned: int  # columns masked by this pass
    total: int  # support columns of the design
    trials: list[dict] = field(default_factory=list)  # every (pruned, error) evaluated

    @property
    def pruned_pct(self) -> float:
        """Share of all support columns that are masked in the result (incl. earlier ones)."""
        return 100.0 * (1 - self.model.support_columns_kept)


def prune(model: QuantizedModel, calib: np.ndarray, val: tuple[np.ndarray, np.ndarray],
          tolerance_pp: float = 0.05, refit: bool = True, log=print) -> PruneResult:
    """Mask as many support columns as possible with validation error <= unpruned +
    ``tolerance_pp``; ``calib`` (pixels, validation images) ranks the columns and re-fits
    the thresholds, ``val`` (pixels, labels) is the validation split the limit is on."""
    total = sum(m.size for m in model.support_mask)
    base_err = hw_error(model, *val)
    order = [c for _, c in score_columns(model, calib)]
    trials = [{"pruned": 0, "error_pct": base_err}]
    log(f"unpruned: {base_err:.2f} % hw-exact validation error, {len(order)} of {total} support "
        f"columns enabled; limit {base_err + tolerance_pp:.2f} %")
    limit = base_err + tolerance_pp + 1e-9
    cache: dict[int, tuple[float, QuantizedModel]] = {0: (base_err, model)}

    def trial(n: int) -> float:
        if n not in cache:
            cand = apply_pruning(model, order[:n], calib, refit)
            cache[n] = (hw_error(cand, *val), cand)
            trials.append({"pruned": n, "error_pct": cache[n][0]})
            log(f"  mask {n} columns ({100 * n / max(1, total):.1f} %): "
                f"{cache[n][0]:.2f} % validation error")
        return cache[n][0]

    # 0.5 % resolution keeps it to ~8 evaluations
    lo = largest_within(trial, len(order), limit, max(1, len(order) // 200))
    err, best = cache[lo]
    return PruneResult(best, base_err, err, lo, total, sorted(trials, key=lambda t: t["pruned"]))


def random_columns(model: QuantizedModel, n: int, rng: np.random.Generator) -> list[Column]:
    """``n`` enabled support columns drawn at random (the accuracy-vs-dropout baseline)."""
    cols = [(layer, int(j), k + 1) for layer, m in enumerate(model.support_mask)
            for j, k in zip(*np.nonzero(m))]
    pick = rng.choice(len(cols), size=min(n, len(cols)), replace=False)
    return [cols[i] for i in pick]

