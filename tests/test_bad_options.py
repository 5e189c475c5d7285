"""Bad command-line values: one clear ``error:`` line, exit status 2, nothing written.

Values out of the range their option allows (for runtime controls: the range of the
register they end up in), outputs that cannot be written, image files that do not fit the
model, and argparse-level errors (usage line, then the error). Helpers: test_bad_input.py.
"""

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_MNIST
from test_bad_input import HAVE_MNIST, _ids, _write, check_one_clear_line, make_quiet_env

from sbnn.cli import main


@pytest.fixture
def quiet_env(tmp_path, monkeypatch):
    return make_quiet_env(tmp_path, monkeypatch)


# ----------------------------------------------------------------- command-line values

def _images(tmp: Path, **arrays) -> Path:
    path = tmp / "imgs.npz"
    np.savez(path, **arrays)
    return path


def _sim_images(make):
    def build(tmp: Path) -> list[str]:
        return ["sim", "--images", str(make(tmp)), "--budgets", "0", "--count", "1",
                "--build", str(tmp / "out")]
    return build


def _sim(*extra):
    return lambda tmp: ["sim", *extra, "--build", str(tmp / "out")]


def _mnist_cmd(*argv):
    return lambda tmp: [a.replace("{tmp}", str(tmp)) for a in argv]


needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="no shared MNIST folder")
GOOD = np.zeros((3, 28, 28), np.uint8)
ARG_CASES = [
    ("sim-count-negative", _sim("--count", "-5", "--budgets", "0"), "--count"),
    ("sim-count-zero", _sim("--count", "0", "--budgets", "0"), "--count"),
    ("sim-count-too-large", _sim("--count", "100000"), "holds 300 images"),
    ("sim-budget-outside", _sim("--budgets", "0,5"), "--budgets: 5 is outside"),
    ("sim-images-not-npz", _sim_images(lambda tmp: _write(tmp / "i.npz", "text\n")), "--images"),
    ("sim-images-no-labels", _sim_images(lambda tmp: _images(tmp, images=GOOD)), "labels"),
    ("sim-images-missing", _sim_images(lambda tmp: tmp / "nope.npz"), "does not exist"),
    ("sim-image-outside", _sim("--count", "10", "--image", "10", "--budgets", "0"),
     "--image 10 is outside 0..9"),
    ("sim-image-cycle-engine", _sim("--count", "10", "--image", "2", "--engine", "cycle",
                                    "--budgets", "0"), "needs --engine fast"),
    ("sim-workers-zero", _sim("--workers", "0", "--budgets", "0"), "--workers"),
    ("sim-mnist-test-zero", _sim("--mnist-test", "0"), "--mnist-test must be in 1..10000"),
    ("sim-mnist-test-and-images", _sim("--mnist-test", "5", "--images", "x.npz"),
     "either --images or --mnist-test"),
    ("equiv-case-malformed", lambda tmp: ["equiv", "--case", "12", "--build",
                                          str(tmp / "out")], "CONFIG_SEED:INDEX"),
    ("equiv-configs-zero", lambda tmp: ["equiv", "--configs", "0", "--build",
                                        str(tmp / "out")], "--configs must be at least 1"),
    ("equiv-cases-negative", lambda tmp: ["equiv", "--cases", "-4", "--build",
                                          str(tmp / "out")], "--cases must be at least 1"),
    ("gen-out-and-bundle", lambda tmp: ["gen", "--out", str(tmp / "out"), "--bundle",
                                        str(tmp / "out2")], "either --out"),
    ("gen-bundle-is-file", lambda tmp: ["gen", "--bundle", str(_write(tmp / "b", "x"))],
     "is not a folder"),
    ("sweep-energy-bad", lambda tmp: ["sweep", "--energy", str(_write(tmp / "e.json", "{x")),
                                      "--out", str(tmp / "out")], "cannot parse energy"),
    ("sweep-energy-unknown", lambda tmp: ["sweep", "--energy",
                                          str(_write(tmp / "e.json", {"zap_pj": 1})),
                                          "--out", str(tmp / "out")], "zap_pj"),
    pytest.param("sweep-count-negative",
                 _mnist_cmd("sweep", "--data-dir", str(SHARED_MNIST), "--count", "-1",
                            "--out", "{tmp}/out"), "--count must be in 1..10000",
                 marks=needs_mnist),
    pytest.param("sweep-count-too-large",
                 _mnist_cmd("sweep", "--data-dir", str(SHARED_MNIST), "--count", "20000",
                            "--out", "{tmp}/out"), "--count must be in 1..10000",
                 marks=needs_mnist),
    pytest.param("sample-data-count-negative",
                 _mnist_cmd("sample-data", "--data-dir", str(SHARED_MNIST), "--count", "-3",
                            "--out", "{tmp}/out/s.npz"), "--count must be in 1..10000",
                 marks=needs_mnist),
]


def _blocker(tmp: Path) -> str:
    """A plain file where a command wants a folder."""
    return str(_write(tmp / "blocker", "x"))


def _folder(tmp: Path, name: str = "adir") -> str:
    (tmp / name).mkdir()
    return str(tmp / name)


def _energy(content):
    return lambda tmp: ["sweep", "--energy", str(_write(tmp / "e.json", content)),
                        "--out", str(tmp / "out")]


DEFAULT_MODEL = str(Path(__file__).resolve().parents[1] / "golden/assets/default_model.npz")
# The default design's EXIT_MARGIN register: threshold_bits + 1 = 16 bits.
MARGIN_MAX = "65535"

# Runtime controls and outputs, checked against the design and its registers (issue 19).
RANGE_CASES = [
    ("sim-exit-margin-too-wide", _sim("--exit-margin", "65536", "--budgets", "0"),
     f"--exit-margin must be in 0..{MARGIN_MAX}"),
    ("sim-exit-margin-negative", _sim("--exit-margin", "-1", "--budgets", "0"),
     "--exit-margin must be in 0.."),
    ("sim-random-seed-negative", _sim("--random-seed", "-3", "--budgets", "0"),
     "--random-seed must be in 0..4294967295"),
    ("sim-random-seed-huge", _sim("--random-seed", str(2**70), "--budgets", "0"),
     "--random-seed must be in 0..4294967295"),
    ("sim-workers-huge", _sim("--workers", "100000", "--budgets", "0"),
     "--workers must be in 1..256"),
    ("sim-images-float", _sim_images(lambda tmp: _images(tmp, images=GOOD.astype(np.float32),
                                                         labels=np.zeros(3, np.uint8))),
     "must be uint8"),
    ("sim-images-27x27", _sim_images(lambda tmp: _images(tmp, images=GOOD[:, 1:, 1:],
                                                         labels=np.zeros(3, np.uint8))),
     "784 pixels per image"),
    ("sim-images-empty", _sim_images(lambda tmp: _images(tmp, images=GOOD[:0],
                                                         labels=np.zeros(0, np.uint8))),
     "N >= 1"),
    ("sim-labels-range", _sim_images(lambda tmp: _images(tmp, images=GOOD,
                                                         labels=np.array([0, 12, 1]))),
     "labels must be in 0..9"),
    ("sim-labels-count", _sim_images(lambda tmp: _images(tmp, images=GOOD,
                                                         labels=np.zeros(2, np.uint8))),
     "one per image"),
    ("sim-labels-float", _sim_images(lambda tmp: _images(tmp, images=GOOD,
                                                         labels=np.zeros(3, np.float32))),
     "need integers"),
    ("sim-build-is-file", lambda tmp: ["sim", "--budgets", "0", "--build", _blocker(tmp)],
     "--build"),
    ("sim-report-is-folder", lambda tmp: ["sim", "--budgets", "0", "--report", _folder(tmp),
                                          "--build", str(tmp / "out")], "is a folder"),
    ("sweep-keeps-above-1", lambda tmp: ["sweep", "--keeps", "1.5", "--out", str(tmp / "out")],
     "--keeps values must be fractions in [0, 1], got 1.5"),
    ("sweep-keeps-nan", lambda tmp: ["sweep", "--keeps", "nan", "--out", str(tmp / "out")],
     "--keeps"),
    ("sweep-margins-too-wide", lambda tmp: ["sweep", "--margins", "10,70000",
                                            "--out", str(tmp / "out")],
     f"--margins must be in 0..{MARGIN_MAX}"),
    ("sweep-margins-negative", lambda tmp: ["sweep", "--margins", "-5",
                                            "--out", str(tmp / "out")], "--margins"),
    ("sweep-confirm-too-many", lambda tmp: ["sweep", "--confirm", "500",
                                            "--out", str(tmp / "out")],
     "--confirm must be in 0..300"),
    ("sweep-count-zero", lambda tmp: ["sweep", "--count", "0", "--out", str(tmp / "out")],
     "--count must be in 1..10000"),
    ("sweep-out-is-file", lambda tmp: ["sweep", "--out", _blocker(tmp)], "is not a folder"),
    ("sweep-energy-nan", _energy('{"cycle_pj": NaN}'), "cannot parse energy"),
    ("sweep-energy-duplicate", _energy('{"cycle_pj": 1, "cycle_pj": 2}'), "duplicate key"),
    ("sweep-energy-array", _energy("[1, 2]"), "must hold a JSON object"),
    ("sweep-energy-string", _energy({"cycle_pj": "x"}), "'cycle_pj' must be a finite number"),
    ("sweep-energy-not-utf8", _energy(b"\xff\xfe"), "cannot parse energy"),
    ("equiv-seed-negative", lambda tmp: ["equiv", "--seed", "-1", "--build", str(tmp / "out")],
     "--seed must be in 0.."),
    ("equiv-seed-span", lambda tmp: ["equiv", "--seed", str(2**32 - 2), "--configs", "5",
                                     "--build", str(tmp / "out")], "--seed must be in 0.."),
    ("equiv-case-negative-seed", lambda tmp: ["equiv", "--case=-1:0",
                                              "--build", str(tmp / "out")],
     "--case CONFIG_SEED must be in 0.."),
    ("equiv-workers-huge", lambda tmp: ["equiv", "--workers", "999",
                                        "--build", str(tmp / "out")], "--workers"),
    ("equiv-workers-zero", lambda tmp: ["equiv", "--workers", "0", "--build", str(tmp / "out")],
     "--workers must be in 1..256 (local Dask worker processes"),
    ("equiv-workers-and-scheduler", lambda tmp: ["equiv", "--workers", "2", "--scheduler",
                                                 "tcp://127.0.0.1:1", "--build",
                                                 str(tmp / "out")], "give one of them"),
    ("equiv-scheduler-malformed", lambda tmp: ["equiv", "--scheduler", "nohost", "--configs",
                                               "1", "--cases", "4", "--build", str(tmp / "out"),
                                               "--ledger", str(tmp / "out" / "l.jsonl")],
     "cannot reach the Dask scheduler at 'nohost' (--scheduler)"),
    ("gen-out-is-file", lambda tmp: ["gen", "--out", _blocker(tmp)], "is not a folder"),
    ("gen-out-under-file", lambda tmp: ["gen", "--out", _blocker(tmp) + "/rtl"], "is a file"),
    ("lint-out-is-file", lambda tmp: ["lint", "--out", _blocker(tmp)], "is not a folder"),
    ("train-layers-inputs", lambda tmp: ["train", "--layers", "100,10", "--out",
                                         str(tmp / "out")], "must start with 784 inputs"),
    ("train-layers-outputs", lambda tmp: ["train", "--layers", "784,64,5", "--out",
                                          str(tmp / "out")], "at least 10 outputs"),
    ("train-config-inputs", lambda tmp: ["train", "--config", str(_write(
        tmp / "c.json", {"layers": [16, 8, 10], "macro_rows": 1024})), "--out",
        str(tmp / "out")], "must start with 784 inputs"),
    ("train-seed-huge", lambda tmp: ["train", "--seed", str(2**40), "--out", str(tmp / "out")],
     "--seed (or [train] seed) must be in 0..4294967295"),
    ("train-out-is-file", lambda tmp: ["train", "--out", _blocker(tmp)], "is not a folder"),
    ("train-table-unknown", lambda tmp: ["train", "--config", str(_write(
        tmp / "c.toml", "[sbnn]\n[train]\nbase_epoch = 3\n")), "--out", str(tmp / "out")],
     "base_epoch"),
    ("train-table-duplicate", lambda tmp: ["train", "--config", str(_write(
        tmp / "c.json", '{"train": {"lr": 0.1, "lr": 0.2}}')), "--out", str(tmp / "out")],
     "duplicate key 'lr'"),
    ("eval-json-is-folder", lambda tmp: ["eval", "--json", _folder(tmp)], "is a folder"),
    ("eval-table-out-is-file", lambda tmp: ["eval", "--baseline", DEFAULT_MODEL,
                                            "--out", _blocker(tmp)], "is not a folder"),
    ("prune-out-is-folder", lambda tmp: ["prune", "--model", DEFAULT_MODEL,
                                         "--out", _folder(tmp, "p.npz")], "is a folder"),
    ("prune-seed-negative", lambda tmp: ["prune", "--model", DEFAULT_MODEL, "--seed", "-2",
                                         "--out", str(tmp / "out" / "p.npz")], "--seed"),
    ("sample-data-not-npz", lambda tmp: ["sample-data", "--out", str(tmp / "out" / "s.txt")],
     "must name a .npz file"),
    ("sample-data-out-is-folder", lambda tmp: ["sample-data", "--out", _folder(tmp, "s.npz")],
     "is a folder"),
    ("sample-data-count-huge", lambda tmp: ["sample-data", "--count", "20000",
                                            "--out", str(tmp / "out" / "s.npz")],
     "--count must be in 1..10000"),
]

OPTION_CASES = ARG_CASES + RANGE_CASES


@pytest.mark.parametrize("name, build, words", OPTION_CASES, ids=_ids(OPTION_CASES))
def test_bad_option_one_clear_line(name, build, words, quiet_env, capsys):
    check_one_clear_line(build, words, quiet_env, capsys)


# ----------------------------------------------------------------- argparse errors (exit 2)

ARGPARSE_CASES = [
    ("unknown-subcommand", ["frobnicate"], "invalid choice: 'frobnicate'", "sbnn: error:"),
    ("no-subcommand", [], "command", "sbnn: error:"),
    ("unknown-option", ["gen", "--frob"], "unrecognized arguments: --frob", "sbnn: error:"),
    ("count-not-int", ["sim", "--count", "ten"], "argument --count", "sbnn sim: error:"),
    ("budgets-not-int", ["sim", "--budgets", "1,x"], "--budgets must be comma-separated",
     "sbnn sim: error:"),
    ("budgets-empty", ["sim", "--budgets", ""], "--budgets", "sbnn sim: error:"),
    ("margins-float", ["sweep", "--margins", "1.5"], "--margins", "sbnn sweep: error:"),
    ("keeps-not-float", ["sweep", "--keeps", "half"], "argument --keeps", "sbnn sweep: error:"),
    ("sample-data-no-out", ["sample-data"], "--out", "sbnn sample-data: error:"),
    ("exit-margin-not-int", ["sim", "--exit-margin", "1e3"], "argument --exit-margin",
     "sbnn sim: error:"),
    ("sim-engine-unknown", ["sim", "--engine", "warp"], "argument --engine",
     "sbnn sim: error:"),
    ("equiv-seed-not-int", ["equiv", "--seed", "x"], "argument --seed", "sbnn equiv: error:"),
]


@pytest.mark.parametrize("name, argv, words, prefix", ARGPARSE_CASES,
                         ids=[c[0] for c in ARGPARSE_CASES])
def test_bad_arguments_exit_2_with_usage(name, argv, words, prefix, quiet_env, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith(prefix) and words in last, err
    assert err.strip().splitlines()[0].startswith("usage:")
    assert not any(quiet_env.iterdir())
