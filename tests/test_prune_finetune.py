"""Pruning with retraining (studies/prune_finetune.py, ``sbnn prune --finetune-epochs``)."""

import json

import numpy as np
import pytest
import torch
from conftest import SHARED_MNIST

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.golden.fold import fold_model
from sbnn.golden.model import SupportedBNN
from sbnn.studies.mnist import load_mnist
from sbnn.studies.prune import hw_error
from sbnn.studies.prune_finetune import FinetuneSettings, masked_finetune, prune_finetune
from sbnn.studies.train import TrainSettings

pytestmark = pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no shared MNIST folder")

CFG = SbnnConfig(layers=(784, 24, 10), num_supports=1)
FAST = FinetuneSettings(epochs=1, recipe=TrainSettings(lr=1e-3, lr_final=1e-4, shift=2,
                                                    batch_size=200, threads=1),
                        resolution_pct=25)


@pytest.fixture(scope="module")
def data():
    images, labels = load_mnist("fit", SHARED_MNIST)
    val_images, val_labels = load_mnist("val", SHARED_MNIST)
    return (images[:1200], labels[:1200]), (val_images[:400], val_labels[:400])


def _net(seed: int = 0) -> SupportedBNN:
    torch.manual_seed(seed)
    return SupportedBNN(CFG).eval()


def test_masked_finetune_keeps_the_mask_and_the_base_plane(tmp_path, data):
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    cols = [(0, 3, 1), (0, 7, 1), (1, 2, 1)]
    tuned = masked_finetune(net, cols, *data, FAST, tmp_path / "t.pt", log=lambda m: None)
    for p, b in zip(net.parameters(), before):  # the input network is left alone
        assert torch.equal(p, b)
    for lin, lin0 in zip(tuned.linears, net.linears):
        assert torch.equal(lin.base, lin0.base)  # B0 frozen
    assert not torch.equal(tuned.linears[0].supports, net.linears[0].supports)  # trained
    q = fold_model(tuned)
    masked = {(layer, int(j), int(k) + 1) for layer, m in enumerate(q.support_mask)
              for j, k in zip(*np.nonzero(~m))}
    assert masked == set(cols)


def test_prune_finetune_limit_control_and_resume(tmp_path, data):
    net = _net()
    model = fold_model(net)
    calib = data[0][0][:300].reshape(300, -1)
    res, control, tuned = prune_finetune(net, model, calib, *data, tmp_path,
                                         tolerance_pp=100.0, settings=FAST, log=lambda m: None)
    total = sum(m.size for m in model.support_mask)
    assert res.pruned == total and res.pruned_pct == 100.0
    assert res.base_error_pct == hw_error(model, *data[1])
    assert res.error_pct == hw_error(res.model, *data[1])
    assert hw_error(fold_model(tuned), *data[1]) == res.error_pct  # the result's float twin
    assert [t["pruned"] for t in res.trials] == [0, 0, total]  # unpruned, control, all
    assert res.trials[1]["finetuned"] and res.trials[1]["error_pct"] == control
    # rerun: every trial is taken from its checkpoint, none retrained, same answer
    logs: list[str] = []
    again, control2, _ = prune_finetune(net, model, calib, *data, tmp_path,
                                        tolerance_pp=100.0, settings=FAST, log=logs.append)
    assert control2 == control and again.error_pct == res.error_pct
    assert not any("epoch 1/1:" in m for m in logs)
    assert sum("resumed from" in m for m in logs) == 2


def test_prune_finetune_zero_tolerance_never_exceeds_the_limit(tmp_path, data):
    net = _net(1)
    model = fold_model(net)
    calib = data[0][0][:300].reshape(300, -1)
    res, control, _ = prune_finetune(net, model, calib, *data, tmp_path, tolerance_pp=0.0,
                                     settings=FAST, log=lambda m: None)
    assert res.error_pct <= min(res.base_error_pct, control) + 1e-9
    for t in res.trials:  # every count above the answer that was tried failed the limit
        if t["pruned"] > res.pruned:
            assert t["error_pct"] > min(res.base_error_pct, control)


def test_finetune_settings_reject_bad_values():
    with pytest.raises(ValueError, match="epochs"):
        FinetuneSettings(epochs=0)
    with pytest.raises(ValueError, match="resolution"):
        FinetuneSettings(resolution_pct=0)


def test_prune_cli_with_finetune(tmp_path, capsys, monkeypatch):
    import sbnn.studies.mnist as mnist

    splits: list[str] = []
    real = mnist.load_mnist
    monkeypatch.setattr(mnist, "load_mnist",
                        lambda split, *a, **k: splits.append(split) or real(split, *a, **k))
    net = _net()
    run = tmp_path / "run"
    run.mkdir()
    fold_model(net).save(run / "model.npz")
    torch.save(net.state_dict(), run / "model_float.pt")
    # the fine-tuning copies the source run's batch size and augmentation
    (run / "train_summary.json").write_text(json.dumps(
        {"settings": {"batch_size": 100, "shift": 1, "rotate": 5.0, "elastic": 0.5}}))
    out = tmp_path / "pruned.npz"
    argv = ["prune", "--model", str(run / "model.npz"), "--out", str(out), "--tolerance",
            "100", "--calib", "100", "--finetune-epochs", "1", "--threads", "1",
            "--data-dir", str(SHARED_MNIST)]
    assert main(argv) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["support_columns_pruned_pct"] == 100.0 and meta["finetune_epochs"] == 1
    assert isinstance(meta["finetuned_unpruned_val_error_pct"], float)
    # fine-tuned on fit, limit on val (both cut from "train"), never the test set
    assert {"fit", "val"} <= set(splits) and "test" not in splits
    assert meta["split"] == "val" and "test_images" not in meta
    ft = meta["finetune"]
    assert (ft["batch_size"], ft["shift"], ft["rotate"], ft["scale"], ft["elastic"]) == (
        100, 1, 5.0, 0.0, 0.5)
    assert (tmp_path / "pruned.finetune" / "masked_0.pt").is_file()
    # the chosen trial's fine-tuned float twin is saved where `sbnn eval` looks for it
    from sbnn.golden.qmodel import QuantizedModel
    from sbnn.studies.evaluate import float_model_for

    pruned = QuantizedModel.load(out)
    twin = float_model_for(out, pruned)
    assert (tmp_path / "pruned_float.pt").is_file() and twin is not None
    assert fold_model(twin).planes[0].tolist() == pruned.planes[0].tolist()
    assert not twin.linears[0].mask.any()


@pytest.mark.parametrize("extra, words", [
    ([], "needs the trained float network"),
    (["--float-model", "nope.pt"], "does not exist"),
    (["--no-refit"], "exclude each other"),
])
def test_prune_cli_finetune_errors(tmp_path, capsys, extra, words):
    fold_model(_net()).save(tmp_path / "model.npz")
    argv = ["prune", "--model", str(tmp_path / "model.npz"), "--out", str(tmp_path / "p.npz"),
            "--finetune-epochs", "1", "--calib", "50", "--data-dir", str(SHARED_MNIST)]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sbnn: error:") and words in err and "\n" not in err


def test_prune_cli_float_model_of_another_config(tmp_path, capsys):
    fold_model(_net()).save(tmp_path / "model.npz")
    torch.manual_seed(0)
    other = SupportedBNN(SbnnConfig(layers=(784, 8, 10), num_supports=1))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    argv = ["prune", "--model", str(tmp_path / "model.npz"), "--out", str(tmp_path / "p.npz"),
            "--finetune-epochs", "1", "--float-model", str(tmp_path / "other.pt"),
            "--data-dir", str(SHARED_MNIST)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "does not fit the model's config" in err and "\n" not in err
