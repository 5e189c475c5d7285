"""Float PyTorch model of the supported BNN, for training (the spec's equations, directly).

y_j = sum_i x_i B0[j,i] + sum_k a_k M[j,k] sum_i x_i S_k[j,i], with B0 and S_k the signs of
latent weights (straight-through estimator), a_k = plane_gains[k] / plane_gains[0] and M the
support-column mask. Hidden layers: batch norm, then sign. Output: s * y + b with a positive
scalar s and per-class bias b (argmax-equivalent to y + b / s, which the hardware computes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sbnn.config import PIXEL_BITS, SbnnConfig

__all__ = ["SignSTE", "binarize", "SupportedLinear", "SupportedBNN", "pixels_to_codes"]


class SignSTE(torch.autograd.Function):
    """sign(x) with sign(0) = +1; gradient passed where |x| <= 1 (BinaryNet's estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def binarize(x: torch.Tensor) -> torch.Tensor:
    return SignSTE.apply(x)


def pixels_to_codes(pixels: torch.Tensor, cfg: SbnnConfig) -> torch.Tensor:
    """First-layer row codes, exactly as the hardware forms them: pixel >> (8 - dac_bits)."""
    return (pixels.to(torch.int64) >> (PIXEL_BITS - cfg.dac_bits)).to(torch.float32)


class SupportedLinear(nn.Module):
    """A binary base plane plus K binary support planes with fixed scales and a column mask."""

    def __init__(self, n: int, m: int, scales: list[float]):
        super().__init__()
        bound = 0.05  # small latent weights: signs can still flip early in training
        self.base = nn.Parameter(torch.empty(m, n).uniform_(-bound, bound))
        self.supports = nn.Parameter(torch.empty(len(scales), m, n).uniform_(-bound, bound))
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32))
        self.register_buffer("mask", torch.ones(m, len(scales)))

    @property
    def num_supports(self) -> int:
        return self.supports.shape[0]

    def effective_weight(self, budget: int | None = None) -> torch.Tensor:
        """B0 + sum_{k <= budget} a_k M_k S_k: one matmul instead of K+1."""
        w = binarize(self.base)
        k_max = self.num_supports if budget is None else budget
        for k in range(k_max):
            w = w + self.scales[k] * self.mask[:, k:k + 1] * binarize(self.supports[k])
        return w

    def forward(self, x: torch.Tensor, budget: int | None = None) -> torch.Tensor:
        return x @ self.effective_weight(budget).t()

    @torch.no_grad()
    def clip_latent(self) -> None:
        self.base.clamp_(-1, 1)
        self.supports.clamp_(-1, 1)


class SupportedBNN(nn.Module):
    """The whole binarized MLP for one config."""

    def __init__(self, cfg: SbnnConfig):
        super().__init__()
        self.cfg = cfg
        g0 = cfg.plane_gains[0]
        scales = [g / g0 for g in cfg.plane_gains[1:]]
        self.linears = nn.ModuleList(
            SupportedLinear(cfg.layers[i], cfg.layers[i + 1], scales)
            for i in range(cfg.num_layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(cfg.layers[i + 1])
                                   for i in range(cfg.num_layers - 1))
        self.log_out_scale = nn.Parameter(torch.tensor(-0.5 * math.log(cfg.layers[-2])))
        self.out_bias = nn.Parameter(torch.zeros(cfg.num_classes))

    def forward(self, codes: torch.Tensor, budget: int | None = None) -> torch.Tensor:
        """Logits from first-layer row codes (see :func:`pixels_to_codes`)."""
        h = codes
        for lin, norm in zip(self.linears[:-1], self.norms):
            h = binarize(norm(lin(h, budget)))
        y = self.linears[-1](h, budget)
        return y * self.log_out_scale.exp() + self.out_bias

    def clip_latent(self) -> None:
        for lin in self.linears:
            lin.clip_latent()

    def base_parameters(self) -> list[nn.Parameter]:
        return [lin.base for lin in self.linears]

    def support_parameters(self) -> list[nn.Parameter]:
        return [lin.supports for lin in self.linears]
