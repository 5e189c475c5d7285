"""Float PyTorch model of the supported BNN, for training (the spec's equations, directly).

y_j = sum_i x_i B0[j,i] + sum_k a_k M[j,k] sum_i x_i S_k[j,i], with B0 and S_k the signs of
latent weights (straight-through estimator), a_k = plane_gains[k] / plane_gains[0] and M the
support-column mask. Hidden layers: batch norm, then sign. Output: s * y + b with a positive
scalar s and per-class bias b (argmax-equivalent to y + b / s, which the hardware computes).

Anytime inference: budget p (planes 0..p, one hardware pass) has its own batch norms and its
own output scale and bias (:class:`BudgetNorms`, the switchable batch norm of slimmable
networks, Yu et al. 2019); the planes are shared. Folding gives one threshold per neuron and
pass. Because the hardware compares every pass in one direction per neuron (planes negated
where gamma < 0), a neuron's batch-norm scales keep one sign across budgets:
:meth:`SupportedBNN.align_norm_signs` projects them onto budget 0's after every step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from sbnn.config import PIXEL_BITS, SbnnConfig

__all__ = ["SignSTE", "binarize", "adc_floor_loss", "support_scales", "SupportedLinear",
           "BudgetNorms", "SupportedBNN", "pixels_to_codes"]


#: The float32 just above 1: ``hardtanh_backward`` passes the gradient where
#: ``-bound < x < bound``, i.e. exactly where ``|x| <= 1`` for float32 ``x``.
_STE_BOUND = 1.0000001192092896


class SignSTE(torch.autograd.Function):
    """sign(x) with sign(0) = +1; gradient passed where |x| <= 1 (BinaryNet's estimator).

    Written for speed (it runs on every weight plane and hidden activation of every step):
    ``torch.sign`` is a single vectorised pass where ``torch.where(x >= 0, 1, -1)`` takes
    about 25x longer on the CPU; an exact zero (sign 0) is rare, and only then is the slow
    form taken. The backward is one fused ``hardtanh_backward`` pass instead of abs,
    compare, cast and multiply. Both give the same values as the plain forms."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        s = torch.sign(x)
        if x.is_cuda or not bool(s.all()):  # a zero (or -0.0) is +1; on CUDA, no sync
            s = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
        return s

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return torch.ops.aten.hardtanh_backward(grad, x, -_STE_BOUND, _STE_BOUND)


def binarize(x: torch.Tensor) -> torch.Tensor:
    return SignSTE.apply(x)


def adc_floor_loss(gain: int, step: int) -> float:
    """Expected loss, in ADC codes, of one conversion's floor: ``floor(gain * S / step)``
    of an integer sum ``S`` loses ``(step - gcd(gain, step)) / (2 * step)`` on average."""
    return (step - math.gcd(gain, step)) / (2 * step)


def pixels_to_codes(pixels: torch.Tensor, cfg: SbnnConfig) -> torch.Tensor:
    """First-layer row codes, exactly as the hardware forms them: pixel >> (8 - dac_bits)."""
    return (pixels.to(torch.int64) >> (PIXEL_BITS - cfg.dac_bits)).to(torch.float32)


def support_scales(cfg: SbnnConfig) -> list[float]:
    """The support planes' scales a_k = gain_k / gain_0 of a design (fixed by the array)."""
    g0 = cfg.plane_gains[0]
    return [g / g0 for g in cfg.plane_gains[1:]]


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

    def signs(self, planes: int | None = None) -> list[torch.Tensor]:
        """[sign B0, sign S_1, ..., sign S_planes] (None: all K): the binarized planes
        before their scales and masks, which every budget of one step can share."""
        k_max = self.num_supports if planes is None else planes
        return [binarize(self.base)] + [binarize(self.supports[k]) for k in range(k_max)]

    def plane_weights(self, budget: int | None = None,
                      signs: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """[B0, a_1 M_1 S_1, ...] up to ``budget`` support planes (each one ADC conversion),
        from ``signs`` (:meth:`signs`, at least ``budget`` + 1 of them) or binarized now."""
        k_max = self.num_supports if budget is None else budget
        mask = self.column_mask() if k_max else self.mask
        signs = self.signs(k_max) if signs is None else signs
        return [signs[0]] + [self.scales[k] * mask[:, k:k + 1] * signs[k + 1]
                             for k in range(k_max)]

    def effective_weight(self, budget: int | None = None,
                         signs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """B0 + sum_{k <= budget} a_k M_k S_k: one matmul instead of K+1 (every plane entry
        is a small multiple of a power of two, so the sum is exact in any order)."""
        planes = self.plane_weights(budget, signs)
        weight = planes[0]
        for plane in planes[1:]:
            weight = weight + plane
        return weight

    def forward(self, x: torch.Tensor, budget: int | None = None,
                signs: list[torch.Tensor] | None = None) -> torch.Tensor:
        return x @ self.effective_weight(budget, signs).t()

    @torch.no_grad()
    def clip_latent(self) -> None:
        self.base.clamp_(-1, 1)
        self.supports.clamp_(-1, 1)


class BudgetNorms(nn.Module):
    """What one latency budget owns: a batch norm per hidden layer and the output affine."""

    def __init__(self, cfg: SbnnConfig):
        super().__init__()
        #: norms[l]: batch norm of hidden layer l at this budget
        self.norms = nn.ModuleList(nn.BatchNorm1d(cfg.layers[i + 1])
                                   for i in range(cfg.num_layers - 1))
        #: log of the positive output scale s
        self.log_out_scale = nn.Parameter(torch.tensor(-0.5 * math.log(cfg.layers[-2])))
        #: per-class output bias b
        self.out_bias = nn.Parameter(torch.zeros(cfg.num_classes))


class SupportedBNN(nn.Module):
    """The whole binarized MLP for one config: shared planes, per-budget norms."""

    def __init__(self, cfg: SbnnConfig):
        super().__init__()
        self.cfg = cfg
        scales = support_scales(cfg)
        self.linears = nn.ModuleList(
            SupportedLinear(cfg.layers[i], cfg.layers[i + 1], scales)
            for i in range(cfg.num_layers))
        #: budgets[p]: the batch norms and output affine of budget p (planes 0..p)
        self.budgets = nn.ModuleList(BudgetNorms(cfg) for _ in range(cfg.num_supports + 1))
        self.register_load_state_dict_pre_hook(_upgrade_shared_norms)

    #: Model the first layer's per-tile ADC saturation in training (see _adc_layer).
    adc_aware: bool = False
    #: Model every layer's ADC conversion in training: floor and clipping (_adc_layer).
    adc_quantize: bool = False
    #: First-layer row codes of calibration images, or None: folding chooses the ADC steps
    #: on them (golden/fold.py fold_model) instead of taking the config's.
    calibration_codes: torch.Tensor | None = None

    def _adc_layer(self, layer: int, x: torch.Tensor, budget: int | None,
                   floor: bool = True,
                   signs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Layer ``layer`` as the macro and the accumulator compute it: every (row block,
        plane) product-sum clipped to the ADC range separately, then accumulated.

        ``floor``: each sum is also floored to the ADC step (straight-through gradient),
        plus the floor's mean loss that folding adds back (:func:`adc_floor_loss`), so that
        the batch norms see what the folded thresholds compare (``adc_quantize``: few ADC
        bits round a sum away; a network trained through it learns thresholds that
        tolerate that). Without it, the clipping alone (``adc_aware``, the first layer:
        pixel codes reach 15, so a 64-row block can exceed the ADC's range; hidden layers'
        +-1 inputs cannot, in practice), the floor left to fold.py's mean correction."""
        cfg, lin = self.cfg, self.linears[layer]
        a, n, nb = cfg.active_rows, cfg.layers[layer], cfg.row_blocks(layer)
        xb = nn.functional.pad(x, (0, nb * a - n)).view(len(x), nb, a).transpose(0, 1)
        step, g0 = cfg.adc_steps[layer], cfg.plane_gains[0]
        y = 0
        for k, w in enumerate(lin.plane_weights(budget, signs)):
            wk = nn.functional.pad(w, (0, nb * a - n)).view(len(w), nb, a).permute(1, 2, 0)
            # plane k's column sum is gain_k * x.S_k; w already carries a_k = gain_k / g0
            s = torch.bmm(xb, wk) * (g0 / step)  # (nb, B, m) in ADC codes
            if floor:
                s = s + (torch.floor(s) - s).detach()
            y = y + s.clamp(cfg.adc_min, cfg.adc_max).sum(0)
            if floor:
                # a masked (or dropped) support column has an all-zero weight row: no
                # conversion, no floor loss
                kept = (w != 0).any(1).to(y.dtype) if k else 1.0
                y = y + adc_floor_loss(cfg.plane_gains[k], step) * nb * kept
        return y * (step / g0)

    def forward(self, codes: torch.Tensor, budget: int | None = None,
                signs: list[list[torch.Tensor]] | None = None) -> torch.Tensor:
        """Logits at ``budget`` (None: every plane, K) from first-layer row codes (see
        :func:`pixels_to_codes`), with that budget's norms and output affine; ``signs``:
        each layer's binarized planes (:meth:`SupportedLinear.signs`), else binarized now."""
        budget = self.cfg.num_supports if budget is None else budget
        own = self.budgets[budget]
        signs = signs or [None] * self.cfg.num_layers
        h = codes
        for i, (lin, norm) in enumerate(zip(self.linears[:-1], own.norms)):
            if self.adc_quantize:
                y = self._adc_layer(i, h, budget, signs=signs[i])
            elif i == 0 and self.adc_aware:
                y = self._adc_layer(0, h, budget, floor=False, signs=signs[0])
            else:
                y = lin(h, budget, signs[i])
            h = binarize(norm(y))
        last = self.cfg.num_layers - 1
        y = self._adc_layer(last, h, budget, signs=signs[last]) if self.adc_quantize \
            else self.linears[-1](h, budget, signs[last])
        return y * own.log_out_scale.exp() + own.out_bias

    def forward_budgets(self, codes: torch.Tensor,
                        budgets: Sequence[int]) -> list[torch.Tensor]:
        """Logits at each of ``budgets``, as ``[self(codes, b) for b in budgets]`` (the same
        values, support-column dropout drawn in the same order) with every plane binarized
        once for all of them: a step's loss over budgets then binarizes, and passes the
        straight-through gradient back through, each plane once instead of once a budget."""
        planes = max(budgets)
        signs = [lin.signs(planes) for lin in self.linears]
        return [self(codes, b, signs) for b in budgets]

    def clip_latent(self) -> None:
        for lin in self.linears:
            lin.clip_latent()

    @torch.no_grad()
    def align_norm_signs(self) -> None:
        """Set to 0 every batch-norm scale of budgets 1..K whose sign differs from budget
        0's scale of the same neuron (0 there counts as positive), so that folding finds one
        comparison direction per neuron. A zeroed scale is a constant neuron at that budget
        and can grow back with the right sign."""
        for layer in range(self.cfg.num_layers - 1):
            positive = self.budgets[0].norms[layer].weight >= 0
            for own in self.budgets[1:]:
                weight = own.norms[layer].weight
                weight.masked_fill_((weight >= 0) != positive, 0.0)

    def constrain(self) -> None:
        """The projections after every optimizer step: latent weights clipped to [-1, 1]
        and batch-norm signs aligned across budgets."""
        self.clip_latent()
        self.align_norm_signs()

    @torch.no_grad()
    def copy_budget(self, source: int, targets: range) -> None:
        """Give every budget in ``targets`` the norms (parameters and running statistics)
        and output affine of budget ``source``: case (i) stage 2 starts from stage 1's."""
        state = self.budgets[source].state_dict()
        for p in targets:
            self.budgets[p].load_state_dict(state)

    def base_parameters(self) -> list[nn.Parameter]:
        return [lin.base for lin in self.linears]

    def support_parameters(self) -> list[nn.Parameter]:
        return [lin.supports for lin in self.linears]

    def budget_parameters(self, budgets: range) -> list[nn.Parameter]:
        """Norm scales/biases and output scale/bias of the given budgets."""
        return [p for b in budgets for p in self.budgets[b].parameters()]


def _upgrade_shared_norms(module: SupportedBNN, state: dict, prefix: str, *args) -> None:
    """State dicts saved before per-budget norms (``norms.{l}.*``, ``log_out_scale``,
    ``out_bias``: one set shared by every budget) load as that set at every budget."""
    old = [k for k in state if k.startswith(prefix + "norms.")
           or k in (prefix + "log_out_scale", prefix + "out_bias")]
    for key in old:
        value = state.pop(key)
        for budget in range(len(module.budgets)):
            state[f"{prefix}budgets.{budget}.{key[len(prefix):]}"] = value
