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
        #: Support-column dropout rate in training: each (neuron, plane) column is switched
        #: off for a whole minibatch with this probability, so that the network learns to
        #: work without any one support column (what pruning and the runtime mask rely on).
        self.support_drop = 0.0

    @property
    def num_supports(self) -> int:
        return self.supports.shape[0]

    def column_mask(self) -> torch.Tensor:
        """(m, K) mask in effect: the deployed mask, times a dropout draw in training.

        No 1/(1-p) rescaling: a dropped column is exactly a pruned (masked) column in
        hardware, so the network must learn to be right without it, not on average."""
        if self.training and self.support_drop > 0 and self.num_supports:
            keep = (torch.rand_like(self.mask) >= self.support_drop).to(self.mask.dtype)
            return self.mask * keep
        return self.mask

    def plane_weights(self, budget: int | None = None) -> list[torch.Tensor]:
        """[B0, a_1 M_1 S_1, ...] up to ``budget`` support planes (each one ADC conversion)."""
        k_max = self.num_supports if budget is None else budget
        mask = self.column_mask() if k_max else self.mask
        return [binarize(self.base)] + [
            self.scales[k] * mask[:, k:k + 1] * binarize(self.supports[k])
            for k in range(k_max)]

    def effective_weight(self, budget: int | None = None) -> torch.Tensor:
        """B0 + sum_{k <= budget} a_k M_k S_k: one matmul instead of K+1."""
        return torch.stack(self.plane_weights(budget)).sum(0)

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

    #: Model the first layer's per-tile ADC saturation in training (see _first_layer_adc).
    adc_aware: bool = False

    def _first_layer_adc(self, codes: torch.Tensor, budget: int | None) -> torch.Tensor:
        """First layer as the macro computes it: every (row block, plane) product-sum is
        clipped to the ADC range separately, then accumulated. Pixel codes reach 15, so a
        64-row block can exceed the ADC's range; hidden layers (+-1 inputs) cannot, in
        practice. The floor of the ADC is left out on purpose: fold.py corrects its mean."""
        cfg, lin = self.cfg, self.linears[0]
        a, n, nb = cfg.active_rows, cfg.layers[0], cfg.row_blocks(0)
        x = nn.functional.pad(codes, (0, nb * a - n)).view(len(codes), nb, a).transpose(0, 1)
        step, g0 = cfg.adc_steps[0], cfg.plane_gains[0]
        y = 0
        for w in lin.plane_weights(budget):
            wk = nn.functional.pad(w, (0, nb * a - n)).view(len(w), nb, a).permute(1, 2, 0)
            # plane k's column sum is gain_k * x.S_k; w already carries a_k = gain_k / g0
            s = torch.bmm(x, wk) * (g0 / step)  # (nb, B, m) in ADC codes
            y = y + s.clamp(cfg.adc_min, cfg.adc_max).sum(0)
        return y * (step / g0)

    def forward(self, codes: torch.Tensor, budget: int | None = None) -> torch.Tensor:
        """Logits from first-layer row codes (see :func:`pixels_to_codes`)."""
        h = codes
        for i, (lin, norm) in enumerate(zip(self.linears[:-1], self.norms)):
            y = self._first_layer_adc(h, budget) if i == 0 and self.adc_aware else lin(h, budget)
            h = binarize(norm(y))
        y = self.linears[-1](h, budget)
        return y * self.log_out_scale.exp() + self.out_bias

    def clip_latent(self) -> None:
        for lin in self.linears:
            lin.clip_latent()

    def base_parameters(self) -> list[nn.Parameter]:
        return [lin.base for lin in self.linears]

    def support_parameters(self) -> list[nn.Parameter]:
        return [lin.supports for lin in self.linears]
