"""The training model's fast paths give what the plain forms give, bit for bit.

``SignSTE`` (a vectorised sign, a fused straight-through backward) against the spec's
``x >= 0 ? +1 : -1`` and ``grad * (|x| <= 1)``, written out here; ``forward_budgets`` (the
planes binarized once per step) against one forward per budget. Equality is bitwise, so
that a model trained before the fast paths is reproduced exactly by a rerun.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sbnn.config import SbnnConfig
from sbnn.golden.model import SupportedBNN, binarize

#: the float32 values either side of the estimator's and the sign's edges
_ABOVE_ONE = float(torch.nextafter(torch.tensor(1.0), torch.tensor(2.0)))
_BELOW_ONE = float(torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)))
_TINY = float(torch.finfo(torch.float32).tiny)
EDGES = [0.0, -0.0, _TINY, -_TINY, 1.0, -1.0, _ABOVE_ONE, -_ABOVE_ONE, _BELOW_ONE,
         -_BELOW_ONE, 0.5, -0.5, 3.0, -3.0]


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().view(-1).numpy().tobytes()


@pytest.mark.parametrize("with_zero", [True, False], ids=["zeros", "no-zeros"])
def test_sign_and_its_estimator_equal_the_plain_forms(with_zero):
    torch.manual_seed(0)
    x = torch.cat([torch.tensor(EDGES), torch.empty(5000).uniform_(-1.5, 1.5)])
    if not with_zero:  # the fast path (no exact zero in the tensor) is taken
        x = x[x != 0]
    x.requires_grad_(True)
    grad = torch.randn(len(x))
    out = binarize(x)
    out.backward(grad)
    plain = torch.tensor([1.0 if v >= 0 else -1.0 for v in x.tolist()])
    plain_grad = torch.tensor([g if abs(v) <= 1 else 0.0
                               for v, g in zip(x.tolist(), grad.tolist())])
    assert torch.equal(out, plain)
    assert torch.equal(x.grad, plain_grad)
    if with_zero:
        assert out[:2].tolist() == [1.0, 1.0]  # sign(0) = sign(-0.0) = +1
    # the estimator's edge: |x| = 1 passes, the next float above does not
    edge = {v: g for v, g in zip(x.tolist(), x.grad.tolist())}
    assert edge[1.0] != 0 and edge[-1.0] != 0
    assert edge[_ABOVE_ONE] == 0 and edge[-_ABOVE_ONE] == 0


def _model(k: int) -> SupportedBNN:
    cfg = SbnnConfig(layers=(40, 24, 10), num_supports=k, active_rows=16, macro_cols=32,
                     macro_rows=4096)
    torch.manual_seed(3)
    model = SupportedBNN(cfg)
    for lin in model.linears:
        lin.support_drop = 0.3
    return model.train()


@pytest.mark.parametrize(("k", "budgets", "adc_quantize"),
                         [(1, (0, 1), False), (2, (0, 1, 2), False), (2, (2, 0), False),
                          (1, (0, 1), True)])
def test_forward_budgets_is_one_forward_per_budget(k, budgets, adc_quantize):
    """Same logits, the same dropout draws, the same gradients and batch-norm statistics,
    bit for bit, as the per-budget loop it replaced in training."""
    x = torch.randint(0, 16, (32, 40)).float()
    y = torch.randint(0, 10, (32,))
    results = []
    for shared in (False, True):
        model = _model(k)
        model.adc_quantize = adc_quantize
        torch.manual_seed(7)  # the support-column dropout draws
        outs = model.forward_budgets(x, budgets) if shared else [model(x, b) for b in budgets]
        loss = sum(nn.functional.cross_entropy(o, y) / len(budgets) for o in outs)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results.append((outs, grads, model.state_dict()))
    (outs_a, grads_a, state_a), (outs_b, grads_b, state_b) = results
    assert all(_bits(a) == _bits(b) for a, b in zip(outs_a, outs_b))
    assert grads_a.keys() == grads_b.keys() and grads_a
    assert all(_bits(grads_a[n]) == _bits(grads_b[n]) for n in grads_a)
    assert all(_bits(state_a[n]) == _bits(state_b[n]) for n in state_a
               if state_a[n].dtype.is_floating_point)
    # the supports are in play: budgets answer differently
    assert any((o != outs_a[0]).any() for o in outs_a[1:])
