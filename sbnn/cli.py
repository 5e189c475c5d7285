"""``sbnn`` command line: train, eval, prune, gen, lint, sim, sweep, equiv, sample-data.

Every command that takes a design accepts ``--config FILE`` (TOML or JSON). Bad input ends
with one ``sbnn: error: ...`` line naming the problem and the fix, and exit status 2, before
any expensive work; outputs are written atomically (sbnn/fileio.py). This module holds the
shared helpers and the RTL commands; train/eval/prune are in sbnn/cli_golden.py, sweep in
sbnn/cli_sweep.py, variability in golden/variability_cli.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from sbnn.config import ConfigError, SbnnConfig, load_config
from sbnn.fileio import (
    OutputPathError,
    atomic_file,
    atomic_write_text,
    check_output_path,
    staged_folder,
)
from sbnn.options import (
    WORKERS_MAX,
    OptionError,
    check_int,
    check_margin,
    check_seed,
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _assets_dir() -> Path:
    # Installed (non-editable) copies keep the assets as package data of sbnn.golden.
    import sbnn.golden

    return Path(sbnn.golden.__file__).resolve().parent / "assets"


def _default_model() -> Path:
    return _assets_dir() / "default_model.npz"


def _default_sample() -> Path:
    return _assets_dir() / "mnist_test_sample.npz"


def _config(args) -> SbnnConfig:
    return load_config(args.config)


def _load_model(path: Path | None, cfg: SbnnConfig | None):
    from sbnn.golden.qmodel import QuantizedModel

    path = path or _default_model()
    return QuantizedModel.load(path, cfg)


def _budgets(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--budgets must be comma-separated integers, got {text!r}") from None


def cmd_gen(args) -> int:
    from sbnn.gen.image import build_image
    from sbnn.gen.verilog import emit_all

    cfg = _config(args)
    if args.bundle is not None and args.out is not None:
        raise CliError("give either --out (Verilog folder) or --bundle (tapeout bundle)")
    # checked before anything is written
    model = _load_model(args.model, cfg) if args.model else None
    if args.bundle is not None:
        from sbnn.gen.bundle import write_bundle

        check_output_path(args.bundle, "--bundle", folder=True)
        if model is None and cfg == SbnnConfig():
            model = _load_model(None, cfg)
            print("no --model: the image is the embedded default model's")
        elif model is None:
            print("no --model: the bundle has no hardware image (the embedded model fits "
                  "the default config only)")
        files = write_bundle(cfg, args.bundle, model)
        for key, path in files.items():
            print(f"{key:12s} {path}")
        return 0
    out = check_output_path(args.out or "out/rtl", "--out", folder=True)
    with _staged_rtl(out) as stage:  # every file appears at once, or none
        files = emit_all(cfg, stage)
        if model is not None:
            image = build_image(model)
            files.update({p.stem: p for p in image.write_readmemh(stage)})
            prog = stage / "program.txt"
            prog.write_text(image.program_text())
            files["program"] = prog
        files = {key: out / path.relative_to(stage) for key, path in files.items()}
    for key, path in files.items():
        print(f"{key:12s} {path}")
    return 0


def _staged_rtl(out: Path):
    """A staging folder for emit_all into ``out``, seeded with ``out``'s Verilog and cache
    stamp so that an unchanged design is not converted again (and keeps its timestamps)."""
    reuse = [p.name for p in (*out.glob("*.v"), *out.glob("*.sv"))] + [".rtl_digest"] \
        if out.is_dir() else []
    return staged_folder(out, reuse=reuse)


def cmd_lint(args) -> int:
    from sbnn.gen.lint import lint
    from sbnn.gen.verilog import CONTROLLER_TOP, SIM_TOP, emit_all

    cfg = _config(args)
    out = check_output_path(args.out, "--out", folder=True)
    with _staged_rtl(out) as stage:
        files = {key: out / path.relative_to(stage)
                 for key, path in emit_all(cfg, stage).items()}
    bad = 0
    for top, srcs in ((SIM_TOP, [files["controller"], files["sim_top"]]),
                      (CONTROLLER_TOP, [files["controller"], files["macro_stub"]])):
        proc = lint(srcs, top, wall=args.wall)
        status = "clean" if proc.returncode == 0 else "FAILED"
        print(f"verilator --lint-only {top}: {status}")
        if proc.returncode:
            print(proc.stderr[-4000:])
            bad += 1
    return 1 if bad else 0


SIM_DEFAULT_COUNT = 200
#: Images in the embedded MNIST sample (golden/assets/mnist_test_sample.npz).
_SAMPLE_IMAGES = 300


def cmd_sim(args) -> int:
    from sbnn.cosim.fast import run_fast
    from sbnn.cosim.runner import CosimJob, run_cosim

    model = _load_model(args.model, load_config(args.config) if args.config else None)
    images = _sim_inputs(args, model.config)
    model_path = Path(args.model) if args.model else _default_model()
    print(f"cosim ({args.engine} engine): {args.count} images x budgets {list(args.budgets)}"
          f"{' + random controls' if args.random_seed is not None else ''} on Verilator, "
          f"model {model_path}", flush=True)
    t0 = time.time()
    job = CosimJob(model.config, model_path, images, args.count, tuple(args.budgets),
                   exit_margin=args.exit_margin, random_seed=args.random_seed)
    if args.engine == "fast":
        report = run_fast(job, args.build, workers=args.workers, waves=args.waves,
                          only_image=args.image)
        report["total_sim_cycles"] = report["sim_cycles"]
    else:
        report = run_cosim(job, args.build, waves=args.waves)
    wall = time.time() - t0
    print(f"{'budget':>6} {'images':>6} {'RTL acc %':>9} {'agree %':>8} {'cycles/inf':>10} "
          f"{'mean exit plane':>15}")
    for run in report["runs"]:
        agree = 100.0 * run["agree"] / run["images"]
        exit_mean = sum(run["exit_planes"]) / run["images"]
        label = run["budget"] if run["run"] == "budget" else "random"
        print(f"{label:>6} {run['images']:>6} {run['rtl_accuracy_pct']:>9.2f} "
              f"{agree:>8.2f} {run['cycles_per_inference']:>10.1f} {exit_mean:>15.2f}")
    print(f"macro transactions checked: {report['transactions_checked']}, results checked: "
          f"{report['results_checked']}, mismatches: {report['mismatches']}")
    run_s = f"simulation {report['sim_wall_s']} s"
    if args.engine == "fast":
        run_s = f"simulation + check {report['wall_s']} s ({report['workers']} processes)"
    print(f"simulated cycles: {report['total_sim_cycles']}, {run_s}, total wall (incl. "
          f"Verilog generation and build) {wall:.1f} s")
    for path in report.get("waves", []):
        print(f"waves: {path}")
    if args.report:
        atomic_write_text(args.report, json.dumps(report | {"wall_s": round(wall, 1)},
                                                  indent=2) + "\n")
    if report["mismatches"]:
        print(f"FIRST MISMATCH: {report['first_mismatch']}")
        return 1
    return 0


def _sim_inputs(args, cfg: SbnnConfig) -> Path:
    """Check every ``sbnn sim`` option and the image file before generation and builds;
    returns the image file (the MNIST subset is written into --build for --mnist-test)."""
    from sbnn.golden.mnist import check_image_file, load_mnist

    if args.mnist_test is not None and args.images:
        raise CliError("give either --images or --mnist-test, not both")
    check_int("--mnist-test", args.mnist_test, 1, 10000)
    if args.count is None:  # every image asked for, or the default run's 200
        args.count = args.mnist_test or SIM_DEFAULT_COUNT
    if args.count < 1:
        raise CliError(f"--count must be at least 1, got {args.count}")
    for b in args.budgets:
        if not 0 <= b <= cfg.num_supports:
            raise CliError(f"--budgets: {b} is outside 0..{cfg.num_supports} "
                           f"(planes after the base plane)")
    if args.exit_margin is not None:
        check_margin("--exit-margin", [args.exit_margin], cfg)
    check_seed("--random-seed", args.random_seed)
    check_int("--workers", args.workers, 1, WORKERS_MAX, " simulator processes")
    if args.image is not None and args.engine != "fast":
        raise CliError("--image (one image, e.g. with --waves) needs --engine fast")
    check_output_path(args.build, "--build", folder=True)
    if args.report is not None:
        check_output_path(args.report, "--report", folder=False)
    if args.mnist_test is not None:
        test_x, test_y = load_mnist("test", args.data_dir)
        images = Path(args.build) / f"mnist_test_{args.mnist_test}.npz"
        with atomic_file(images) as tmp:
            np.savez(tmp, images=test_x[: args.mnist_test], labels=test_y[: args.mnist_test])
    else:
        images = Path(args.images) if args.images else _default_sample()
    available = check_image_file(images, cfg.layers[0], cfg.num_classes)
    if args.count > available:
        raise CliError(f"--count {args.count} but {images} holds {available} images")
    if args.image is not None and not 0 <= args.image < args.count:
        raise CliError(f"--image {args.image} is outside 0..{args.count - 1} (the images run)")
    return images


def cmd_equiv(args) -> int:
    from sbnn.cosim.equivalence import parse_case, run_config, run_equivalence

    for name in ("configs", "cases"):
        if getattr(args, name) < 1:
            raise CliError(f"--{name} must be at least 1, got {getattr(args, name)}")
    check_int("--workers", args.workers, 1, WORKERS_MAX, " simulator processes")
    check_seed("--seed", args.seed, span=args.configs)  # config seeds seed..seed+configs-1
    check_output_path(args.build, "--build", folder=True)
    check_output_path(args.ledger, "--ledger", folder=False)
    if args.case:
        try:
            seed, index = parse_case(args.case)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        check_seed("--case CONFIG_SEED", seed)
        rep = run_config(seed, args.build, first=index, count=1, workers=1)
        print(f"case {seed}:{index}: {rep['transactions_checked']} transactions, "
              f"{'OK' if rep['mismatches'] == 0 else 'MISMATCH: ' + str(rep['first_mismatch'])}")
        print(f"config: {json.dumps(rep['config'])}")
        print(f"run folder (command file, logs, sim.log): {rep['run_dir']}")
        return 0 if rep["mismatches"] == 0 else 1
    print(f"random-config equivalence: configs {args.seed}..{args.seed + args.configs - 1}, "
          f"{args.cases} cases each; ledger {args.ledger}", flush=True)
    res = run_equivalence(args.configs, args.cases, args.seed, args.build, args.ledger,
                          args.workers, log=lambda m: print(m, flush=True))
    print(f"{'OK' if res['ok'] else 'FAILED'}: {res['total_cases']} cases checked in the "
          f"ledger so far with 0 mismatches" if res["ok"] else
          f"FAILED after {res['total_cases']} good cases")
    return 0 if res["ok"] else 1


def cmd_sample_data(args) -> int:
    from sbnn.golden.mnist import load_mnist

    check_int("--count", args.count, 1, 10000, " test images")
    out = check_output_path(args.out, "--out", folder=False)
    if out.suffix != ".npz":  # numpy would append it, and the file would not be --out
        raise CliError(f"--out must name a .npz file, got {str(out)!r}")
    images, labels = load_mnist("test", args.data_dir)
    if not 1 <= args.count <= len(labels):
        raise CliError(f"--count must be in 1..{len(labels)}, got {args.count}")
    with atomic_file(out) as tmp:
        np.savez_compressed(tmp, images=images[: args.count], labels=labels[: args.count])
    print(f"wrote the first {args.count} MNIST test images to {out}")
    return 0


def _with_config(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--config", type=Path, help="design config (TOML or JSON)")


def _with_data(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--data-dir", type=Path, default=None,
                    help="folder with the MNIST IDX files (or set SBNN_MNIST_DIR)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sbnn", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    from sbnn.cli_golden import add_golden_parsers

    add_golden_parsers(sub)  # train, eval, prune: the golden-model commands
    sp = sub.add_parser("gen", help="emit Verilog, macro stub, manifest (and hardware image)")
    _with_config(sp)
    sp.add_argument("--model", type=Path, help="also export this model's hardware image")
    sp.add_argument("--out", type=Path, default=None, help="Verilog folder (default out/rtl)")
    sp.add_argument("--bundle", type=Path, default=None,
                    help="write a tapeout bundle (Verilog, SDC, macro views, image, "
                         "LibreLane config) into this folder instead")
    sp.set_defaults(func=cmd_gen)

    sp = sub.add_parser("lint", help="verilator --lint-only on the generated Verilog")
    _with_config(sp)
    sp.add_argument("--out", type=Path, default=Path("out/rtl"))
    sp.add_argument("--wall", action="store_true", help="add -Wall")
    sp.set_defaults(func=cmd_lint)

    sp = sub.add_parser("sim", help="cocotb + Verilator cosim against the golden trace")
    _with_config(sp)
    sp.add_argument("--model", type=Path, help="QuantizedModel .npz (default: embedded)")
    sp.add_argument("--images", type=Path, help=".npz with images/labels (default: "
                                                "embedded 300-image MNIST test sample)")
    sp.add_argument("--mnist-test", type=int, default=None, metavar="N",
                    help="instead of --images: the first N MNIST test images (and --count "
                         "N) from --data-dir / SBNN_MNIST_DIR / ../shared/data/mnist")
    _with_data(sp)
    sp.add_argument("--count", type=int, default=None,
                    help=f"images to run (default: {SIM_DEFAULT_COUNT}, or N with "
                         f"--mnist-test N)")
    sp.add_argument("--budgets", type=_budgets, default=None,
                    help="comma-separated latency budgets (default: K and 0)")
    sp.add_argument("--build", type=Path, default=Path("out/cosim"))
    sp.add_argument("--exit-margin", type=int, default=None,
                    help="confidence-exit margin (default: never exit early)")
    sp.add_argument("--random-seed", type=int, default=None,
                    help="also run the images with random per-inference budgets, exit "
                         "margins and support masks drawn from this seed")
    sp.add_argument("--engine", choices=("fast", "cycle"), default="fast",
                    help="fast: stimulus and per-image transaction signatures in the "
                         "simulator, checked against the golden model after, parallel "
                         "workers; cycle: Python drives and checks every clock (same "
                         "checks, ~100x slower)")
    sp.add_argument("--workers", type=int, default=None,
                    help="parallel simulator processes (fast engine; default: CPU cores)")
    sp.add_argument("--image", type=int, default=None,
                    help="run only this image (fast engine), e.g. with --waves")
    sp.add_argument("--waves", action="store_true",
                    help="dump an FST wave file (with the fast engine, use with --image)")
    sp.add_argument("--report", type=Path, help="write the report as JSON")
    sp.set_defaults(func=cmd_sim)

    from sbnn.cli_sweep import add_sweep_parser

    add_sweep_parser(sub)

    sp = sub.add_parser("equiv", help="randomized RTL vs golden equivalence over random "
                                      "configs, models, inputs and controls (resumable)")
    sp.add_argument("--configs", type=int, default=20, help="random configs to run")
    sp.add_argument("--cases", type=int, default=5000, help="cases (inferences) per config")
    sp.add_argument("--seed", type=int, default=0, help="first config seed")
    sp.add_argument("--workers", type=int, default=None,
                    help="parallel simulator processes (default: CPU cores)")
    sp.add_argument("--build", type=Path, default=Path("out/equiv"))
    sp.add_argument("--ledger", type=Path, default=Path("out/equiv/ledger.jsonl"),
                    help="one line per finished config; reruns skip those (resume)")
    sp.add_argument("--case", default=None, help="rerun one case, CONFIG_SEED:INDEX")
    sp.set_defaults(func=cmd_equiv)

    sp = sub.add_parser("sample-data", help="save the first N MNIST test images as .npz")
    _with_data(sp)
    sp.add_argument("--count", type=int, default=300)
    sp.add_argument("--out", type=Path, required=True)
    sp.set_defaults(func=cmd_sample_data)

    from sbnn.golden.variability_cli import add_variability_parser

    add_variability_parser(sub)  # sbnn variability: process-variability Monte Carlo
    from sbnn.gen.silicon_report import add_synth_parser

    add_synth_parser(sub)  # sbnn synth: SKY130 area, timing (OpenSTA), energy
    return p


#: Packages of the ``train`` extra: training, evaluation plots and sweeps need them; the
#: main job (``sbnn sim`` on an .npz model) does not.
OPTIONAL_MODULES = ("torch", "matplotlib")


def main(argv: list[str] | None = None) -> int:
    from sbnn.golden.mnist import MnistError
    from sbnn.golden.qmodel import ModelFileError

    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in summaries
    try:
        if args.command == "sim" and args.budgets is None:
            cfg = _load_model(args.model, load_config(args.config) if args.config else None)
            k = cfg.config.num_supports
            args.budgets = (k, 0) if k else (0,)
        return args.func(args)
    except (ConfigError, ModelFileError, MnistError, CliError, OptionError,
            OutputPathError) as exc:
        print(f"sbnn: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a tool failed (Verilator build, simulator): say where
        print(f"sbnn: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # torch and matplotlib are the [train] extra
        if exc.name not in OPTIONAL_MODULES:
            raise
        print(f"sbnn: error: `sbnn {args.command}` needs {exc.name}, which `nox -s sim` does "
              f"not install: pip install -c constraints.txt -e '.[train]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
