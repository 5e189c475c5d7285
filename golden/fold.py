"""Fold a trained float model into the integer :class:`QuantizedModel` the hardware runs.

Batch norm and bias become integer thresholds in ADC-code units, one per neuron and pass
(pass p evaluates planes 0..p and uses budget p's norms and output affine):

* the hardware's column sum of plane k is ``gain[k] * sum x w`` and a_k = gain[k] / gain[0],
  so a neuron's accumulated codes approximate ``y_float * gain[0] / step``;
* the ADC rounds down, which lowers each conversion by (step - gcd(gain, step)) / (2 step)
  on average; pass p's threshold is lowered by the expected loss of the conversions that
  pass has accumulated (planes 0..p, enabled columns only);
* sign(gamma (y - mu) / sigma + beta) = +1  <=>  y >= mu - beta sigma / gamma  for gamma > 0;
  for gamma < 0 the neuron's planes are negated so that the comparison stays ">=". Planes
  are shared by every pass, so a neuron's gammas must not differ in sign across budgets
  (training keeps them aligned: SupportedBNN.align_norm_signs); a zero gamma is a constant
  neuron, which either direction computes.
"""

from __future__ import annotations

import numpy as np
import torch

from sbnn.config import SbnnConfig

from .model import SupportedBNN, adc_floor_loss
from .qmodel import QuantizedModel

__all__ = ["FoldError", "floor_loss_by_pass", "fold_arrays", "fold_model"]


class FoldError(ValueError):
    """The float model cannot be folded (batch-norm scales of one neuron differ in sign
    across budgets)."""


def floor_loss_by_pass(cfg: SbnnConfig, layer: int, mask: np.ndarray) -> np.ndarray:
    """(K+1, m) expected ADC rounding loss, in codes, of each neuron's conversions
    accumulated by pass p (planes 0..p, masked support columns skipped)."""
    step = cfg.adc_steps[layer]
    per_plane = np.empty((cfg.planes, mask.shape[0]))
    for k, gain in enumerate(cfg.plane_gains):
        kept = np.ones(mask.shape[0]) if k == 0 else mask[:, k - 1].astype(float)
        per_plane[k] = adc_floor_loss(gain, step) * kept
    return np.cumsum(per_plane, axis=0) * cfg.row_blocks(layer)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _directions(gamma: np.ndarray, layer: int) -> np.ndarray:
    """(m,) +1 or -1: the comparison direction of every neuron across budgets."""
    mixed = (gamma > 0).any(0) & (gamma < 0).any(0)
    if mixed.any():
        j = int(np.flatnonzero(mixed)[0])
        raise FoldError(
            f"layer {layer}, neuron {j}: batch-norm scales differ in sign across budgets "
            f"({', '.join(f'{g:.3g}' for g in gamma[:, j])} for budgets 0..); the hardware "
            f"compares each neuron in one direction in every pass (train with "
            f"SupportedBNN.align_norm_signs after each step)")
    return np.where((gamma < 0).any(0), -1, 1)


def _hidden_thresholds(model: SupportedBNN, layer: int, scale: float, loss: np.ndarray,
                       lim: int) -> tuple[np.ndarray, np.ndarray]:
    """(K+1, m) thresholds and (m,) directions of a hidden layer from every budget's norm."""
    norms = [own.norms[layer] for own in model.budgets]
    gamma = np.stack([_numpy(bn.weight) for bn in norms])
    beta = np.stack([_numpy(bn.bias) for bn in norms])
    mu = np.stack([_numpy(bn.running_mean) for bn in norms])
    sigma = np.sqrt(np.stack([_numpy(bn.running_var) + bn.eps for bn in norms]))
    direction = _directions(gamma, layer)
    safe = np.where(gamma == 0, 1.0, gamma)
    t = direction * (mu - beta * sigma / safe)
    theta = np.ceil(t * scale - loss)
    # gamma = 0: the neuron is sign(beta) whatever it sums: always (or never) fire
    constant = np.where(beta >= 0, -lim, lim)
    return np.where(gamma == 0, constant, theta), direction


def _output_thresholds(model: SupportedBNN, scale: float, loss: np.ndarray) -> np.ndarray:
    """(K+1, classes) thresholds of the output layer from every budget's scale and bias."""
    s = np.array([float(own.log_out_scale.detach().exp()) for own in model.budgets])
    b = np.stack([_numpy(own.out_bias) for own in model.budgets])
    return np.rint(-(b / s[:, None]) * scale - loss)


@torch.no_grad()
def fold_arrays(model: SupportedBNN) -> tuple[tuple[np.ndarray, ...], ...]:
    """(planes, thresholds, masks) per weight layer: int8 (K+1, m, n) planes (negated where
    a neuron's gammas are negative), int64 (K+1, m) thresholds (row p: pass p), bool (m, K)
    masks. Raises :class:`FoldError` if a neuron's gammas differ in sign across budgets."""
    cfg = model.cfg
    # Thresholds within the accumulator's range (SbnnConfig.threshold_reach): beyond it
    # every reachable sum is on one side anyway, and acc - theta then fits threshold_bits.
    lim = cfg.threshold_reach
    planes, thresholds, masks = [], [], []
    for layer, lin in enumerate(model.linears):
        w = torch.cat([lin.base[None], lin.supports]).cpu().numpy()
        p = np.where(w >= 0, 1, -1).astype(np.int8)
        mask = lin.mask.cpu().numpy() > 0.5
        scale = cfg.plane_gains[0] / cfg.adc_steps[layer]
        loss = floor_loss_by_pass(cfg, layer, mask)
        if layer < cfg.num_layers - 1:
            theta, direction = _hidden_thresholds(model, layer, scale, loss, lim)
            p = p * direction[None, :, None].astype(np.int8)
        else:
            theta = _output_thresholds(model, scale, loss)
        thresholds.append(np.clip(theta, -lim, lim).astype(np.int64))
        planes.append(p)
        masks.append(mask)
    return tuple(planes), tuple(thresholds), tuple(masks)


def fold_model(model: SupportedBNN, refine_steps: bool = True) -> QuantizedModel:
    """Integer planes, per-pass thresholds and masks of a trained :class:`SupportedBNN`.

    A model carrying ``calibration_codes`` (first-layer row codes of calibration images:
    training sets them when the config leaves ``adc_steps`` out) is folded with ADC steps
    chosen on them (golden/adc_calibration.py; ``refine_steps=False``: the least-error
    steps only, without the agreement search); its config is left as it is."""
    codes = getattr(model, "calibration_codes", None)
    if codes is None:
        return QuantizedModel(model.cfg, *fold_arrays(model))
    from .adc_calibration import calibrate_adc_steps, least_error_steps

    cfg = model.cfg
    choose = calibrate_adc_steps if refine_steps else least_error_steps
    try:
        model.cfg = cfg.replace(adc_steps=choose(model, codes))
        return QuantizedModel(model.cfg, *fold_arrays(model))
    finally:
        model.cfg = cfg
