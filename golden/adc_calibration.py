"""ADC steps chosen from data, and the share of conversions a step clips.

The macro converts each (row block, plane) column sum ``s = gain_k * x . S_k`` to the code
``clamp(floor(s / step))``; the controller accumulates ``step``-weighted codes. A step too
small clips large sums; one too large rounds small sums away. The derived default of the
config (a quarter of the first layer's full scale, half a hidden layer's) ignores the data
and clips designs with few ADC bits or many active rows badly.

:func:`choose_adc_steps` picks, per weight layer, the power-of-two step that minimizes the
mean squared error of every neuron's pass-K pre-activation (the sum over row blocks and
planes, with the floor's mean corrected as golden/fold.py corrects it) on calibration
images, each layer fed by the layers before it; :func:`calibrate_adc_steps` then moves each
layer's step (within a factor 4) to where the folded model disagrees least with the float
model's answers at every budget. :func:`clip_fractions` measures, for a
folded model, the share of conversions at the ADC's limits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sbnn.config import SbnnConfig

__all__ = ["MAX_STEP", "choose_adc_steps", "layer_step", "least_error_steps",
           "calibrate_adc_steps",
           "clip_fractions", "clipping_warnings", "CLIP_WARNING_SHARE"]

#: The largest step a config accepts (sbnn/config.py).
MAX_STEP = 1 << 16
#: A given step that clips more than this share of a layer's conversions draws a warning.
CLIP_WARNING_SHARE = 0.5


def _column_sums(cfg: SbnnConfig, layer: int, x: np.ndarray, planes: np.ndarray,
                 mask: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(gain, (B, m) column sums, (m,) enabled) of every (row block, plane) conversion."""
    xf = x.astype(np.float64)
    out = []
    for rb in range(cfg.row_blocks(layer)):
        rows = cfg.tiling.input_rows(layer, rb)
        for k, gain in enumerate(cfg.plane_gains):
            w = planes[k][:, rows].astype(np.float64)
            s = np.rint(xf[:, rows] @ w.T) * gain
            enabled = np.ones(len(w), dtype=bool) if k == 0 else mask[:, k - 1]
            out.append((gain, s, enabled))
    return out


def _step_error(cfg: SbnnConfig, sums: list[tuple[int, np.ndarray, np.ndarray]],
                step: int) -> float:
    """Mean squared error (in sum units) of the accumulated pre-activation at ``step``."""
    total = 0.0
    for gain, s, enabled in sums:
        q = np.clip(np.floor(s / step), cfg.adc_min, cfg.adc_max)
        bias = (step - math.gcd(gain, step)) / 2  # the mean floor loss fold.py adds back
        total = total + (q * step + bias - s) * enabled
    return float(np.mean(np.square(total)))


def layer_step(cfg: SbnnConfig, sums: list[tuple[int, np.ndarray, np.ndarray]]) -> int:
    """The power-of-two step of least error for one layer's conversions (ties: the
    larger, which clips less)."""
    top = max((float(np.abs(s).max()) for _, s, _ in sums), default=1.0)
    # No step beyond the one that makes every sum fit: larger ones only round more.
    last = min(MAX_STEP, 1 << max(0, math.ceil(math.log2(max(1.0, top) / cfg.adc_max))))
    steps = [1 << e for e in range(last.bit_length())]
    errors = [_step_error(cfg, sums, step) for step in steps]
    best = min(errors)
    return max(s for s, e in zip(steps, errors) if e <= best * (1 + 1e-12))


def choose_adc_steps(cfg: SbnnConfig, codes: np.ndarray, planes: Sequence[np.ndarray],
                     masks: Sequence[np.ndarray], activations) -> tuple[int, ...]:
    """One step per weight layer: ``codes`` (B, n0) first-layer row codes, ``planes[l]``
    (K+1, m, n) +-1, ``masks[l]`` (m, K), and ``activations(layer, pre)`` -> the (B, m) +-1
    inputs of the next layer from the float (B, m) pre-activation of ``layer``."""
    steps = []
    x = codes
    for layer in range(cfg.num_layers):
        sums = _column_sums(cfg, layer, x, planes[layer], masks[layer])
        steps.append(layer_step(cfg, sums))
        if layer + 1 < cfg.num_layers:
            pre = sum(s * enabled for _, s, enabled in sums) / cfg.plane_gains[0]
            x = activations(layer, pre)
    return tuple(steps)


def least_error_steps(model, codes) -> tuple[int, ...]:
    """Least-error steps of a trained float model on first-layer ``codes`` (torch), every
    plane and budget K's batch norms feeding each layer."""
    import torch

    cfg = model.cfg
    planes = [np.where(torch.cat([lin.base[None], lin.supports]).detach().cpu().numpy() >= 0,
                       1, -1).astype(np.int8) for lin in model.linears]
    masks = [lin.mask.detach().cpu().numpy() > 0.5 for lin in model.linears]
    norms = model.budgets[cfg.num_supports].norms

    def activations(layer: int, pre: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            norm = norms[layer]
            was = norm.training
            norm.eval()
            y = norm(torch.as_tensor(pre, dtype=torch.float32,
                                     device=norm.running_mean.device))
            norm.train(was)
        return np.where(y.cpu().numpy() >= 0, 1, -1)

    return choose_adc_steps(cfg, codes.detach().cpu().numpy(), planes, masks, activations)


def _disagreement(model, steps: tuple[int, ...], pixels: np.ndarray,
                  float_classes: list[np.ndarray]) -> int:
    """Images x budgets where the model folded with ``steps`` answers otherwise than the
    float model."""
    from .fold import fold_arrays
    from .hwpath import run_hw
    from .qmodel import QuantizedModel

    cfg = model.cfg
    try:
        model.cfg = cfg.replace(adc_steps=steps)
        folded = QuantizedModel(model.cfg, *fold_arrays(model))
    finally:
        model.cfg = cfg
    return sum(int((run_hw(folded, pixels, b).classes != want).sum())
               for b, want in enumerate(float_classes))


def calibrate_adc_steps(model, codes) -> tuple[int, ...]:
    """The steps of a trained :class:`~sbnn.golden.model.SupportedBNN` on first-layer
    ``codes`` (torch (B, n0)): the least-error steps (:func:`choose_adc_steps`), then, layer
    by layer, the step within a factor 4 of it whose folded model disagrees least with the
    float model's answers at every budget (ties keep the least-error step). The error of the
    pre-activation is what rounding and clipping do; the answers are what matters: with few
    ADC bits or K = 2 the two part."""
    import torch

    cfg = model.cfg
    steps = list(least_error_steps(model, codes))
    was = model.training
    model.eval()
    on_device = codes.to(next(model.parameters()).device)  # a model trained on CUDA
    with torch.no_grad():
        float_classes = [model(on_device, b).argmax(1).cpu().numpy()
                         for b in range(cfg.num_supports + 1)]
    model.train(was)
    # pixels whose row codes are ``codes`` (pixel >> (8 - dac_bits) gives them back)
    pixels = (codes.detach().cpu().numpy().astype(np.int64)
              << (8 - cfg.dac_bits)).astype(np.uint8)
    for layer in range(cfg.num_layers):
        best, best_bad = steps[layer], None
        for factor in (1, 2, 4, 0.5, 0.25):  # the least-error step first: it wins ties
            cand = int(steps[layer] * factor)
            if not 1 <= cand <= MAX_STEP:
                continue
            trial = tuple(steps[:layer] + [cand] + steps[layer + 1:])
            bad = _disagreement(model, trial, pixels, float_classes)
            if best_bad is None or bad < best_bad:
                best, best_bad = cand, bad
        steps[layer] = best
    return tuple(steps)


def clip_fractions(qmodel, pixels: np.ndarray) -> list[float]:
    """Per weight layer, the share of a folded model's enabled conversions (every plane,
    budget K) whose code sits at the ADC's minimum or maximum."""
    from .hwpath import run_hw

    cfg = qmodel.config
    res = run_hw(qmodel, pixels, keep_adc=True)
    k = cfg.num_supports
    clipped = [0] * cfg.num_layers
    total = [0] * cfg.num_layers
    for (p, layer, _rb, plane), q in res.adc.items():
        if p != k:
            continue
        enabled = np.ones(q.shape[1], dtype=bool) if plane == 0 else \
            qmodel.support_mask[layer][:, plane - 1]
        at_limit = (q == cfg.adc_min) | (q == cfg.adc_max)
        clipped[layer] += int((at_limit & enabled).sum())
        total[layer] += int(enabled.sum()) * len(q)
    return [c / t if t else 0.0 for c, t in zip(clipped, total)]


def clipping_warnings(qmodel, pixels: np.ndarray, what: str) -> list[str]:
    """One line per layer whose step clips more than :data:`CLIP_WARNING_SHARE` of its
    conversions on ``pixels`` (``what`` names them)."""
    cfg = qmodel.config
    return [f"adc_steps[{layer}] = {cfg.adc_steps[layer]} clips {100 * share:.0f} % of layer "
            f"{layer}'s conversions on {what}: leave adc_steps out of the config to "
            f"calibrate them from data, or raise it"
            for layer, share in enumerate(clip_fractions(qmodel, pixels))
            if share > CLIP_WARNING_SHARE]
