"""Fuzzing command-line values: out-of-range options are refused before any work.

Every drawn value lies outside the range its option allows for the default design (the
embedded model: K = 1, a 16-bit EXIT_MARGIN register); the command must exit with status 2
and one ``sbnn: error:`` line naming the option, with no traceback and nothing written,
before any data is loaded, Verilog generated or simulator built.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.options import SEED_MAX, WORKERS_MAX, margin_max

FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
MARGIN_MAX = margin_max(SbnnConfig())
BIG = 2**70


def _outside(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(-BIG, lo - 1), st.integers(hi + 1, BIG))


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


def _bad_fraction() -> st.SearchStrategy[float]:
    return st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1 + 1e-9),
                     st.just(math.nan), st.just(math.inf))


@st.composite
def bad_command(draw):
    """(argv without the output options, option the error must name)."""
    case = draw(st.sampled_from([
        "sim-margin", "sim-seed", "sim-workers", "sim-count", "sim-budgets", "sim-mnist",
        "sweep-margins", "sweep-keeps", "sweep-confirm", "sweep-count", "equiv-seed",
        "equiv-workers", "equiv-configs", "train-seed", "train-layers", "prune-tolerance",
        "prune-calib", "sample-count"]))
    if case == "sim-margin":
        return ["sim", "--budgets", "0", f"--exit-margin={draw(_outside(0, MARGIN_MAX))}"], \
            "--exit-margin"
    if case == "sim-seed":
        return ["sim", "--budgets", "0", f"--random-seed={draw(_outside(0, SEED_MAX))}"], \
            "--random-seed"
    if case == "sim-workers":
        return ["sim", "--budgets", "0", f"--workers={draw(_outside(1, WORKERS_MAX))}"], \
            "--workers"
    if case == "sim-count":
        return ["sim", "--budgets", "0", f"--count={draw(st.integers(-BIG, 0))}"], "--count"
    if case == "sim-budgets":
        good = draw(st.lists(st.integers(0, 1), max_size=2))
        return ["sim", f"--budgets={_csv([*good, draw(_outside(0, 1))])}"], "--budgets"
    if case == "sim-mnist":
        return ["sim", f"--mnist-test={draw(_outside(1, 10000))}"], "--mnist-test"
    if case == "sweep-margins":
        good = draw(st.lists(st.integers(0, MARGIN_MAX), max_size=2))
        return ["sweep", f"--margins={_csv([draw(_outside(0, MARGIN_MAX)), *good])}"], \
            "--margins"
    if case == "sweep-keeps":
        good = draw(st.lists(st.floats(0, 1), max_size=2))
        return ["sweep", f"--keeps={_csv([*good, draw(_bad_fraction())])}"], "--keeps"
    if case == "sweep-confirm":
        return ["sweep", f"--confirm={draw(_outside(0, 300))}"], "--confirm"
    if case == "sweep-count":
        return ["sweep", f"--count={draw(_outside(1, 10000))}"], "--count"
    if case == "equiv-seed":
        return ["equiv", f"--seed={draw(_outside(0, SEED_MAX - 19))}"], "--seed"
    if case == "equiv-workers":
        return ["equiv", f"--workers={draw(_outside(1, WORKERS_MAX))}"], "--workers"
    if case == "equiv-configs":
        return ["equiv", f"--configs={draw(st.integers(-BIG, 0))}"], "--configs"
    if case == "train-seed":
        return ["train", f"--seed={draw(st.integers(SEED_MAX + 1, BIG))}"], "seed"
    if case == "train-layers":
        widths = draw(st.one_of(
            st.tuples(st.integers(1, 5000).filter(lambda n: n != 784), st.integers(10, 99)),
            st.tuples(st.just(784), st.integers(2, 9))))
        return ["train", f"--layers={_csv(widths)}"], "layers"
    if case == "prune-tolerance":
        tol = draw(st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=100.001),
                             st.just(math.nan)))
        return ["prune", "--model", _DEFAULT_MODEL, f"--tolerance={tol}"], "--tolerance"
    if case == "prune-calib":
        return ["prune", "--model", _DEFAULT_MODEL, f"--calib={draw(_outside(1, 60000))}"], \
            "--calib"
    return ["sample-data", f"--count={draw(_outside(1, 10000))}"], "--count"


_DEFAULT_MODEL = str(Path(__file__).resolve().parents[1] / "golden/assets/default_model.npz")
_OUT = {"sim": "--build", "equiv": "--build", "sweep": "--out", "train": "--out"}


@FUZZ
@given(case=bad_command())
def test_out_of_range_options_are_refused_first(case, capsys, monkeypatch):
    argv, option = case
    with tempfile.TemporaryDirectory() as tmp, monkeypatch.context() as mp:
        tmp = Path(tmp)
        mp.chdir(tmp)  # default outputs would land here; undone before tmp goes
        monkeypatch.setenv("SBNN_MNIST_MIRRORS", "http://127.0.0.1:9/")  # never download
        monkeypatch.setenv("SBNN_MNIST_DIR", str(tmp / "no-mnist"))  # data would not load
        files = {"prune": "p.npz", "sample-data": "s.npz"}
        out = ["--out", str(tmp / "out" / files[argv[0]])] if argv[0] in files else \
            [_OUT[argv[0]], str(tmp / "out")]
        status = main([*argv, *out])
        stdout, err = capsys.readouterr()
        assert list(tmp.iterdir()) == []  # nothing written (no MNIST folder either)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in stdout + err, (argv, err)
    assert lines[0].startswith("sbnn: error:") and option in lines[0], (argv, err)
