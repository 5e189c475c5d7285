"""Folding batch norm and output bias into integer thresholds: float and integer agree."""

import numpy as np
import pytest
import torch

from sbnn.config import SbnnConfig
from sbnn.golden.fold import fold_model
from sbnn.golden.hwpath import run_hw
from sbnn.golden.model import SupportedBNN, pixels_to_codes

# Step 1 and wide ADCs: no quantization, so the integer path must equal the float model.
EXACT = SbnnConfig(layers=(30, 16, 12, 5), num_supports=2, active_rows=8, macro_cols=12,
                   macro_rows=1024, adc_bits=14, adc_steps=(1, 1, 1), gain_bits=3)


def _randomized(cfg, seed):
    torch.manual_seed(seed)
    model = SupportedBNN(cfg)
    with torch.no_grad():
        for lin in model.linears:
            lin.base.uniform_(-1, 1)
            lin.supports.uniform_(-1, 1)
            lin.mask.copy_((torch.rand_like(lin.mask) < 0.6).float())
        for bn in model.norms:
            bn.weight.copy_(torch.randn_like(bn.weight))  # negative scales included
            bn.bias.copy_(torch.randn_like(bn.bias))
            bn.running_mean.copy_(torch.randn_like(bn.running_mean) * 5)
            bn.running_var.copy_(torch.rand_like(bn.running_var) * 20 + 1)
    return model.eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fold_is_exact_without_adc_quantization(seed):
    model = _randomized(EXACT, seed)
    q = fold_model(model)
    assert any((bn.weight < 0).any() for bn in model.norms)  # the flip path is exercised
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (300, EXACT.layers[0]), dtype=np.uint8)
    with torch.no_grad():
        logits = model(pixels_to_codes(torch.from_numpy(pixels), EXACT)).numpy()
    res = run_hw(q, pixels)
    scale = float(model.log_out_scale.detach().exp())
    g0 = EXACT.plane_gains[0]
    # Output bias is zero: integer logits are exactly g0 * y_float.
    np.testing.assert_allclose(res.logits, logits / scale * g0, atol=1e-3)
    assert (res.classes == logits.argmax(1)).all()


def test_negative_bn_scale_flips_planes():
    model = _randomized(EXACT, 5)
    q = fold_model(model)
    gamma = model.norms[0].weight.detach().numpy()
    base = np.where(model.linears[0].base.detach().numpy() >= 0, 1, -1)
    for j, g in enumerate(gamma):
        expected = base[j] if g > 0 else -base[j]
        np.testing.assert_array_equal(q.planes[0][0, j], expected)


def test_adc_floor_bias_is_compensated():
    cfg = EXACT.replace(adc_steps=(4, 1, 1))
    model = _randomized(cfg, 3)
    q = fold_model(model)
    bn = model.norms[0]
    gamma, beta = bn.weight.detach().double(), bn.bias.detach().double()
    mu, sigma = bn.running_mean.double(), (bn.running_var.double() + bn.eps).sqrt()
    mask = model.linears[0].mask.numpy()
    g0, step, blocks = cfg.plane_gains[0], 4, cfg.row_blocks(0)
    for j in range(cfg.layers[1]):
        t = float(mu[j] - beta[j] * sigma[j] / gamma[j])
        t = t if gamma[j] > 0 else -t
        # floor(s/4) loses (4 - gcd(g, 4)) / 8 on average: 0, 1/4, 3/8 for gains 4, 2, 1
        loss = blocks * (0 + 0.25 * mask[j, 0] + 0.375 * mask[j, 1])
        assert q.thresholds[0][j] == int(np.ceil(t * g0 / step - loss))
