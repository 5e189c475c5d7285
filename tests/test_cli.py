import json
import subprocess
import sys

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
    assert summary["val_hw_error_pct"] < 12
    assert abs(summary["val_hw_error_pct"] - summary["val_float_error_pct"]) < 1.5
    assert main(args) == 0  # resumes from the finished checkpoints


# The 16 recipe options `sbnn train` had when they were written by hand (the generated
# options must keep every one of them), and the anytime recipe's three (issue 15).
RECIPE_OPTIONS = ("--base-epochs", "--support-epochs", "--joint-epochs", "--batch-size", "--lr",
                  "--lr-final", "--support-lr", "--support-init", "--seed", "--threads",
                  "--shift", "--rotate", "--scale", "--elastic", "--support-drop",
                  "--adc-aware", "--adc-quantize", "--adc-finetune-epochs", "--supports-off",
                  "--budget-loss-weights", "--keep-checkpoint", "--hw-val-every")


def _train_parser():
    from sbnn.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    return subparsers.choices["train"]


def test_train_recipe_options_are_generated_from_the_recipe_fields():
    from sbnn.studies.recipe import TrainSettings

    actions = {opt: a for a in _train_parser()._actions for opt in a.option_strings}
    assert set(RECIPE_OPTIONS) <= set(actions)
    fields = TrainSettings.model_fields
    assert len(fields) == len(RECIPE_OPTIONS)  # every field has its option, no more
    for option in RECIPE_OPTIONS:
        action = actions[option]
        assert action.default is None  # not given: the [train] table, then the field default
        assert fields[action.dest].description.split()[0] in action.help
    assert actions["--support-init"].choices == ("sign", "latent")
    assert "0..8" in actions["--shift"].help and "default 0" in actions["--shift"].help
    assert "--no-adc-aware" in actions


def test_train_options_parse_to_the_recipe_types():
    args = _train_parser().parse_args(["--lr", "0.5", "--shift", "3", "--no-adc-aware",
                                       "--support-init", "latent"])
    assert (args.lr, args.shift, args.adc_aware, args.support_init) == (0.5, 3, False,
                                                                        "latent")
    assert args.base_epochs is None and args.support_lr is None


def test_train_option_overrides_the_config_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SBNN_MNIST_MIRRORS", "http://127.0.0.1:9/")  # never download
    cfg = tmp_path / "c.toml"
    cfg.write_text("[sbnn]\nlayers = [784, 16, 10]\n[train]\nshift = 20\n")
    argv = ["train", "--config", str(cfg), "--out", str(tmp_path / "r"),
            "--data-dir", str(tmp_path / "no-mnist")]
    assert main(argv) == 2  # the table's value is refused ...
    assert "training option 'shift'" in capsys.readouterr().err
    assert main([*argv, "--shift", "1"]) == 2  # ... unless the option replaces it
    err = capsys.readouterr().err
    assert "shift" not in err and "MNIST" in err


def test_recipe_and_parser_import_without_torch():
    code = ("import sys; from sbnn.cli import build_parser; build_parser(); "
            "import sbnn.studies.recipe; print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout.strip() == "False"


def test_python_m_sbnn_is_the_sbnn_command():
    for module in ("sbnn", "sbnn.cli"):
        proc = subprocess.run([sys.executable, "-m", module, "frobnicate"], capture_output=True,
                              text=True)
        assert proc.returncode == 2 and "invalid choice: 'frobnicate'" in proc.stderr
