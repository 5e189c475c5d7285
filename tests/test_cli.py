import json

import numpy as np
import pytest
from conftest import SHARED_MNIST

from sbnn.cli import main
from sbnn.config import SbnnConfig

needs_mnist = pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="no shared MNIST folder")


@needs_mnist
def test_eval_embedded_model_on_full_test_set(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--data-dir", str(SHARED_MNIST), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["budget"] for r in rows] == [0, 1]
    assert rows[1]["error_pct"] < rows[0]["error_pct"] < 10  # supports help
    assert rows[1]["cycles"] > rows[0]["cycles"]
    assert "10000 test images" in capsys.readouterr().out


@needs_mnist
def test_sample_data(tmp_path):
    out = tmp_path / "s.npz"
    assert main(["sample-data", "--data-dir", str(SHARED_MNIST), "--count", "7",
                 "--out", str(out)]) == 0
    with np.load(out) as d:
        assert d["images"].shape == (7, 28, 28) and d["labels"].shape == (7,)


@pytest.mark.parametrize("argv, words", [
    (["sim", "--count", "100000"], "holds 300 images"),
    (["sim", "--budgets", "5"], "outside 0..1"),
    (["sim", "--model", "nope.npz"], "does not exist"),
    (["sim", "--images", "nope.npz"], "does not exist"),
    (["eval", "--model", "nope.npz"], "does not exist"),
    (["eval", "--data-dir", "/nonexistent/mnist"], "SBNN_MNIST_DIR"),
])
def test_bad_arguments_one_line_exit_2(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SBNN_MNIST_MIRRORS", "http://127.0.0.1:9/")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sbnn: error:") and err.count("\n") == 0 and words in err
    assert not (tmp_path / "out").exists()


def test_truncated_model_file(tmp_path, capsys):
    bad = tmp_path / "m.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["eval", "--model", str(bad)]) == 2
    assert "not a valid sbnn model file" in capsys.readouterr().err


@pytest.mark.slow
@needs_mnist
def test_train_small_and_resume(tmp_path):
    cfg = SbnnConfig(layers=(784, 64, 10), macro_rows=8192)
    cfg_path = cfg.write_snapshot(tmp_path / "c.json")
    args = ["train", "--config", str(cfg_path), "--data-dir", str(SHARED_MNIST),
            "--out", str(tmp_path / "run"), "--base-epochs", "2", "--support-epochs", "1"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["hw_error_pct"] < 12
    assert abs(summary["hw_error_pct"] - summary["float_error_pct"]) < 1.5
    assert main(args) == 0  # resumes from the finished checkpoints
