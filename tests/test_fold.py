"""Folding batch norm and output bias into per-pass integer thresholds: float and integer
agree at every budget."""

import numpy as np
import pytest
import torch

from sbnn.config import SbnnConfig
from sbnn.golden.fold import FoldError, fold_arrays, fold_model
from sbnn.golden.hwpath import run_hw
from sbnn.golden.model import SupportedBNN, pixels_to_codes

# Step 1 and wide ADCs: no quantization, so the integer path must equal the float model.
EXACT = SbnnConfig(layers=(30, 16, 12, 5), num_supports=2, active_rows=8, macro_cols=12,
                   macro_rows=1024, adc_bits=14, adc_steps=(1, 1, 1), gain_bits=3)


def _randomized(cfg: SbnnConfig, seed: int) -> tuple[SupportedBNN, np.ndarray]:
    """A random network whose budgets have their own norms and output affine; every
    neuron's gammas share one random sign (some budget-1.. gammas are 0: constant
    neurons). Output biases are c_p * s_p / g0 with integer c_p, returned (K+1, classes)."""
    torch.manual_seed(seed)
    model = SupportedBNN(cfg)
    g0 = cfg.plane_gains[0]
    offsets = torch.randint(-20, 21, (cfg.planes, cfg.num_classes)).double()
    with torch.no_grad():
        for lin in model.linears:
            lin.base.uniform_(-1, 1)
            lin.supports.uniform_(-1, 1)
            lin.mask.copy_((torch.rand_like(lin.mask) < 0.6).float())
        signs = [torch.where(torch.rand(m) < 0.5, -1.0, 1.0) for m in cfg.layers[1:-1]]
        for p, own in enumerate(model.budgets):
            for bn, sign in zip(own.norms, signs):
                weight = sign * (torch.rand_like(bn.weight) + 0.1)
                if p:
                    weight[torch.rand_like(weight) < 0.15] = 0.0
                bn.weight.copy_(weight)
                bn.bias.copy_(torch.randn_like(bn.bias))
                bn.running_mean.copy_(torch.randn_like(bn.running_mean) * 5)
                bn.running_var.copy_(torch.rand_like(bn.running_var) * 20 + 1)
            own.log_out_scale.fill_(float(torch.randn(())) * 0.5)
            own.out_bias.copy_(offsets[p] * own.log_out_scale.exp().double() / g0)
    return model.eval(), offsets.numpy()


def _integer_logits(cfg: SbnnConfig, arrays, pixels: np.ndarray, budget: int) -> np.ndarray:
    """The spec's integer network at ``budget`` for a step-1, never-saturating ADC (where
    floor and clamp are the identity): acc = sum_{k <= budget} g_k M_k (x . P_k), hidden
    +1 iff acc >= theta[budget], logits acc - theta[budget]."""
    planes, thresholds, masks = arrays
    x = (pixels.astype(np.int64) >> (8 - cfg.dac_bits))
    for layer in range(cfg.num_layers):
        acc = 0
        for k in range(budget + 1):
            part = cfg.plane_gains[k] * (x @ planes[layer][k].astype(np.int64).T)
            acc = acc + (part if k == 0 else part * masks[layer][:, k - 1])
        v = acc - thresholds[layer][budget]
        x = np.where(v >= 0, 1, -1)
    return v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fold_is_exact_without_adc_quantization_at_every_budget(seed):
    model, offsets = _randomized(EXACT, seed)
    arrays = fold_arrays(model)
    assert all(t.shape == (EXACT.planes, m) and t.dtype == np.int64
               for t, m in zip(arrays[1], EXACT.layers[1:]))
    assert any((own.norms[0].weight < 0).any() for own in model.budgets)  # flips exercised
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (300, EXACT.layers[0]), dtype=np.uint8)
    g0 = EXACT.plane_gains[0]
    codes = pixels_to_codes(torch.from_numpy(pixels), EXACT)
    for budget in range(EXACT.planes):
        own = model.budgets[budget]
        with torch.no_grad():
            out = model(codes, budget).double()
            y = ((out - own.out_bias.double()) / own.log_out_scale.exp().double()).numpy()
        logits = _integer_logits(EXACT, arrays, pixels, budget)
        # theta_out = -c_p exactly: integer logits are g0 * y_float + c_p
        np.testing.assert_allclose(logits, g0 * y + offsets[budget], atol=1e-3)


def test_folded_model_on_the_hardware_path_at_every_budget():
    model, offsets = _randomized(EXACT, 7)
    q = fold_model(model)
    pixels = np.random.default_rng(7).integers(0, 256, (200, EXACT.layers[0]), dtype=np.uint8)
    codes = pixels_to_codes(torch.from_numpy(pixels), EXACT)
    result = run_hw(q, pixels)  # one run to the full budget holds every pass's logits
    for budget in range(EXACT.planes):
        own = model.budgets[budget]
        with torch.no_grad():
            y = ((model(codes, budget).double() - own.out_bias.double())
                 / own.log_out_scale.exp().double()).numpy()
        np.testing.assert_allclose(result.pass_logits[budget],
                                   EXACT.plane_gains[0] * y + offsets[budget], atol=1e-3)
        np.testing.assert_array_equal(run_hw(q, pixels, budget).logits,
                                      result.pass_logits[budget])


def test_budgets_differ_and_each_row_comes_from_its_own_budget():
    model, _ = _randomized(EXACT, 4)
    before = fold_arrays(model)[1]
    assert all((t[0] != t[1]).any() and (t[1] != t[2]).any() for t in before)
    with torch.no_grad():
        model.budgets[1].norms[0].bias.add_(3.0)
        model.budgets[1].out_bias.add_(1.0)
    after = fold_arrays(model)[1]
    for layer in (0, 2):
        assert (after[layer][1] != before[layer][1]).any()
        np.testing.assert_array_equal(after[layer][[0, 2]], before[layer][[0, 2]])
    np.testing.assert_array_equal(after[1], before[1])


def test_negative_bn_scale_flips_planes():
    model, _ = _randomized(EXACT, 5)
    planes = fold_arrays(model)[0]
    gamma = model.budgets[0].norms[0].weight.detach().numpy()
    base = np.where(model.linears[0].base.detach().numpy() >= 0, 1, -1)
    supports = np.where(model.linears[0].supports.detach().numpy() >= 0, 1, -1)
    for j, g in enumerate(gamma):
        sign = 1 if g > 0 else -1
        np.testing.assert_array_equal(planes[0][0, j], sign * base[j])
        np.testing.assert_array_equal(planes[0][2, j], sign * supports[1, j])


def test_adc_floor_bias_counts_the_planes_of_each_pass():
    cfg = EXACT.replace(adc_steps=(4, 1, 1))
    model, _ = _randomized(cfg, 3)
    thresholds = fold_arrays(model)[1][0]
    mask = model.linears[0].mask.numpy()
    g0, step, blocks = cfg.plane_gains[0], 4, cfg.row_blocks(0)
    for p in range(cfg.planes):
        bn = model.budgets[p].norms[0]
        gamma, beta = bn.weight.detach().double(), bn.bias.detach().double()
        mu, sigma = bn.running_mean.double(), (bn.running_var.double() + bn.eps).sqrt()
        sign = torch.where(model.budgets[0].norms[0].weight < 0, -1.0, 1.0).double()
        for j in range(cfg.layers[1]):
            # floor(s/4) loses (4 - gcd(g, 4)) / 8 on average: 0, 1/4, 3/8 for gains 4, 2, 1,
            # for the planes pass p has evaluated (0..p) only
            loss = blocks * (0.25 * mask[j, 0] * (p >= 1) + 0.375 * mask[j, 1] * (p >= 2))
            if gamma[j] == 0:
                assert abs(thresholds[p, j]) == cfg.threshold_reach  # constant neuron
                continue
            t = float(sign[j] * (mu[j] - beta[j] * sigma[j] / gamma[j]))
            assert thresholds[p, j] == int(np.ceil(t * g0 / step - loss))


def test_gammas_of_mixed_sign_across_budgets_are_refused():
    model, _ = _randomized(EXACT, 6)
    with torch.no_grad():
        gamma0 = model.budgets[0].norms[1].weight
        model.budgets[2].norms[1].weight[3] = -float(gamma0[3])
    with pytest.raises(FoldError, match="layer 1, neuron 3: batch-norm scales differ in sign"):
        fold_arrays(model)
    model.align_norm_signs()  # the training projection repairs it
    fold_arrays(model)
