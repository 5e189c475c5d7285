"""The float model's per-budget (switchable) batch norms and output affine."""

import pytest
import torch

from sbnn.config import SbnnConfig
from sbnn.golden.model import SupportedBNN

CFG = SbnnConfig(layers=(20, 8, 6, 5), num_supports=2, active_rows=8, macro_cols=12,
                 macro_rows=1024)


def _net(seed: int = 0) -> SupportedBNN:
    torch.manual_seed(seed)
    return SupportedBNN(CFG).eval()


def test_each_budget_uses_its_own_norms_and_output():
    net = _net()
    codes = torch.randint(0, 16, (16, 20)).float()
    before = [net(codes, p) for p in range(3)]
    with torch.no_grad():
        net.budgets[1].norms[0].bias.fill_(5.0)  # every neuron of layer 1 fires at budget 1
        net.budgets[1].out_bias.add_(torch.arange(5.0))
    after = [net(codes, p) for p in range(3)]
    assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
    assert not torch.allclose(after[1], before[1])
    assert torch.equal(net(codes), after[2])  # budget None is K


def test_training_updates_only_the_running_statistics_of_the_budget_run():
    net = _net().train()
    net(torch.randint(0, 16, (32, 20)).float(), 1)
    tracked = [int(own.norms[0].num_batches_tracked) for own in net.budgets]
    assert tracked == [0, 1, 0]


def test_align_norm_signs_zeroes_scales_against_budget_0():
    net = _net()
    with torch.no_grad():
        net.budgets[0].norms[1].weight.copy_(torch.tensor([1.0, -1.0, 0.0, -2.0, 1.0, 1.0]))
        net.budgets[1].norms[1].weight.copy_(torch.tensor([-0.5, -0.5, -0.5, 0.7, 0.3, 0.0]))
        net.budgets[2].norms[1].weight.copy_(torch.tensor([0.2, 0.2, 0.2, -0.1, -0.3, 2.0]))
    net.align_norm_signs()
    assert net.budgets[1].norms[1].weight.tolist() == pytest.approx(
        [0.0, -0.5, 0.0, 0.0, 0.3, 0.0])
    assert net.budgets[2].norms[1].weight.tolist() == pytest.approx(
        [0.2, 0.0, 0.2, -0.1, 0.0, 2.0])
    assert net.budgets[0].norms[1].weight.tolist() == [1.0, -1.0, 0.0, -2.0, 1.0, 1.0]


def test_copy_budget_copies_norms_statistics_and_output():
    net = _net().train()
    net(torch.randint(0, 16, (32, 20)).float(), 0)
    with torch.no_grad():
        net.budgets[0].out_bias.fill_(0.25)
    net.copy_budget(0, range(1, 3))
    for own in net.budgets[1:]:
        assert torch.equal(own.norms[0].running_mean, net.budgets[0].norms[0].running_mean)
        assert torch.equal(own.out_bias, torch.full((5,), 0.25))
    with torch.no_grad():
        net.budgets[1].out_bias.fill_(1.0)  # a copy, not a shared tensor
    assert torch.equal(net.budgets[0].out_bias, torch.full((5,), 0.25))


def test_state_dicts_of_shared_norms_load_at_every_budget():
    """Float twins saved before per-budget norms: one set of norms for every budget."""
    net = _net()
    old = {k: v for k, v in net.state_dict().items() if not k.startswith("budgets.")}
    for layer, m in enumerate(CFG.layers[1:-1]):
        old[f"norms.{layer}.weight"] = torch.full((m,), 2.0 + layer)
        old[f"norms.{layer}.bias"] = torch.zeros(m)
        old[f"norms.{layer}.running_mean"] = torch.ones(m)
        old[f"norms.{layer}.running_var"] = torch.ones(m)
        old[f"norms.{layer}.num_batches_tracked"] = torch.tensor(3)
    old["log_out_scale"] = torch.tensor(0.5)
    old["out_bias"] = torch.arange(5.0)
    loaded = SupportedBNN(CFG)
    loaded.load_state_dict(old)
    for own in loaded.budgets:
        assert torch.equal(own.norms[1].weight, torch.full((6,), 3.0))
        assert float(own.log_out_scale.detach()) == 0.5
        assert torch.equal(own.out_bias, torch.arange(5.0))
