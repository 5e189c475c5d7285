"""Fold a trained float model into the integer :class:`QuantizedModel` the hardware runs.

Batch norm and bias become one integer threshold per neuron, in ADC-code units:

* the hardware's column sum of plane k is ``gain[k] * sum x w`` and a_k = gain[k] / gain[0],
  so a neuron's accumulated codes approximate ``y_float * gain[0] / step``;
* the ADC rounds down, which lowers each conversion by (step - gcd(gain, step)) / (2 step)
  on average; the threshold is lowered by the same expected amount;
* sign(gamma (y - mu) / sigma + beta) = +1  <=>  y >= mu - beta sigma / gamma  for gamma > 0;
  for gamma < 0 the neuron's planes are negated so that the comparison stays ">=".
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .model import SupportedBNN
from .qmodel import QuantizedModel

__all__ = ["fold_model"]


def _floor_bias(cfg, layer: int, mask: np.ndarray) -> np.ndarray:
    """Expected total ADC rounding loss per neuron, in codes."""
    step = cfg.adc_steps[layer]
    loss = np.zeros(mask.shape[0])
    for k, gain in enumerate(cfg.plane_gains):
        per = (step - math.gcd(gain, step)) / (2 * step)
        kept = np.ones(mask.shape[0]) if k == 0 else mask[:, k - 1].astype(float)
        loss += per * kept
    return loss * cfg.row_blocks(layer)


@torch.no_grad()
def fold_model(model: SupportedBNN) -> QuantizedModel:
    """Integer planes, thresholds and masks of a trained :class:`SupportedBNN`."""
    cfg = model.cfg
    lim = 1 << (cfg.threshold_bits - 1)
    g0 = cfg.plane_gains[0]
    planes, thresholds, masks = [], [], []
    for layer, lin in enumerate(model.linears):
        w = torch.cat([lin.base[None], lin.supports]).cpu().numpy()
        p = np.where(w >= 0, 1, -1).astype(np.int8)
        mask = lin.mask.cpu().numpy() > 0.5
        scale = g0 / cfg.adc_steps[layer]
        bias = _floor_bias(cfg, layer, mask)
        if layer < cfg.num_layers - 1:
            bn = model.norms[layer]
            gamma = bn.weight.cpu().double().numpy()
            beta = bn.bias.cpu().double().numpy()
            mu = bn.running_mean.cpu().double().numpy()
            sigma = np.sqrt(bn.running_var.cpu().double().numpy() + bn.eps)
            theta = np.empty(len(gamma), dtype=np.int64)
            for j in range(len(gamma)):
                if gamma[j] == 0:
                    theta[j] = -lim if beta[j] >= 0 else lim - 1
                    continue
                t = mu[j] - beta[j] * sigma[j] / gamma[j]
                if gamma[j] < 0:
                    p[:, j, :] = -p[:, j, :]
                    t = -t
                theta[j] = math.ceil(t * scale - bias[j])
        else:
            s = float(model.log_out_scale.exp())
            b = model.out_bias.cpu().double().numpy()
            theta = np.rint(-(b / s) * scale - bias).astype(np.int64)
        thresholds.append(np.clip(theta, -lim, lim - 1))
        planes.append(p)
        masks.append(mask)
    return QuantizedModel(cfg, tuple(planes), tuple(thresholds), tuple(masks))
