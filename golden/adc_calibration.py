"""ADC steps chosen from data, and the share of conversions a step clips.

The macro converts each (row block, plane) column sum ``s = gain_k * x . S_k`` to the code
``clamp(floor(s / step))``; the controller accumulates ``step``-weighted codes. A step too
small clips large sums; one too large rounds small sums away. The derived default of the
config (a quarter of the first layer's full scale, half a hidden layer's) ignores the data
and clips designs with few ADC bits or many active rows badly.

:func:`choose_adc_steps` picks, per weight layer, the power-of-two step that minimizes the
mean squared error of every neuron's pass-K pre-activation (the sum over row blocks and
planes, with the floor's mean corrected as golden/fold.py corrects it) on calibration
images, each layer fed by the layers before it. :func:`clip_fractions` measures, for a
folded model, the share of conversions at the ADC's limits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sbnn.config import SbnnConfig

__all__ = ["MAX_STEP", "choose_adc_steps", "layer_step", "calibrate_adc_steps",
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


def calibrate_adc_steps(model, codes) -> tuple[int, ...]:
    """The steps of a trained :class:`~sbnn.golden.model.SupportedBNN` on first-layer
    ``codes`` (torch (B, n0)), every plane and budget K's batch norms feeding each layer."""
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
