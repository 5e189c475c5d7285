"""``sbnn sweep``: error vs cycles vs energy over budgets, exit margins and support masks.

Every option is checked against the design (exit margins against the EXIT_MARGIN register)
before MNIST is loaded; the four output files are staged and appear together.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sbnn.fileio import check_output_path, staged_folder
from sbnn.options import check_energy_file, check_fraction, check_int, check_margin

from .arguments import (
    add_command,
    add_config_option,
    add_data_dir_option,
    add_model_option,
    comma_ints,
)
from .errors import CliError
from .loaders import SAMPLE_IMAGES, default_sample_path, model_from_args, model_path

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn sweep``."""
    sp = add_command(subparsers, "sweep", run,
                     "error vs cycles vs energy over budgets, exit margins and support masks",
                     add_config_option, add_data_dir_option, add_model_option)
    sp.add_argument("--count", type=int, default=10000, help="test images to use")
    sp.add_argument("--margins", type=comma_ints, default=(10, 20, 30, 40, 50, 60, 80),
                    help="comma-separated exit margins (no exit is always included)")
    sp.add_argument("--keeps", type=lambda t: [float(v) for v in t.split(",")],
                    default=[1.0, 0.75, 0.5, 0.25, 0.0],
                    help="fractions of support columns kept (least useful masked first)")
    sp.add_argument("--energy", type=Path, help="JSON of per-event energies (pJ)")
    sp.add_argument("--confirm", type=int, default=0,
                    help="rerun each budget on N embedded images on the RTL (cosim)")
    sp.add_argument("--build", type=Path, default=Path("out/cosim"))
    sp.add_argument("--out", type=Path, default=Path("docs"))
    return sp


def _print_row(r: dict) -> None:
    print(f"{r['support_kept_pct']:>6} {r['budget']:>6} {str(r['exit_margin']):>6} "
          f"{r['error_pct']:>8.2f} {r['mean_cycles']:>8.1f} {r['mean_energy_pj']:>9.1f} "
          f"{r['exit_early_pct']:>7.1f}", flush=True)


def run(args: argparse.Namespace) -> int:
    """Sweep on the golden path (optionally confirmed on the RTL); write the four files."""
    from sbnn.golden.energy import EnergyModel
    from sbnn.studies.mnist import load_mnist
    from sbnn.studies.sweep import latency_table, sweep
    from sbnn.studies.sweep_report import write_sweep_outputs

    model = model_from_args(args)
    check_energy_file(args.energy)  # strict JSON first: no NaN, duplicates or non-numbers
    try:
        energy = EnergyModel.load(args.energy)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    check_int("--count", args.count, 1, 10000, " test images")
    check_margin("--margins", args.margins, model.config)
    check_fraction("--keeps", args.keeps)
    check_int("--confirm", args.confirm, 0, SAMPLE_IMAGES, " embedded sample images")
    check_output_path(args.out, "--out", folder=True)
    if args.confirm:
        check_output_path(args.build, "--build", folder=True)
    images, labels = load_mnist("test", args.data_dir)
    if not 1 <= args.count <= len(labels):
        raise CliError(f"--count must be in 1..{len(labels)}, got {args.count}")
    pixels = images.reshape(len(images), -1)[: args.count]
    labels = labels[: args.count]
    out = Path(args.out)
    margins = [None, *args.margins]
    keeps = args.keeps if model.config.num_supports else [1.0]
    print(f"sweep: {len(labels)} test images, budgets 0..{model.config.num_supports}, "
          f"exit margins {margins}, support kept {keeps}", flush=True)
    print(f"{'kept %':>6} {'budget':>6} {'margin':>6} {'error %':>8} {'cycles':>8} "
          f"{'energy pJ':>9} {'early %':>7}")
    rows = sweep(model, pixels, labels, margins, keeps, energy, progress=_print_row)
    latency = latency_table(model, pixels, labels)
    confirmed = _confirm(args, model, latency) if args.confirm else []
    command = " ".join(["sbnn", *sys.argv[1:]])
    with staged_folder(out) as stage:  # the four files appear together, or none
        write_sweep_outputs(stage, command, rows, latency, confirmed, energy, len(labels))
    print(f"wrote {out / 'sweep.json'}, {out / 'latency.json'}, {out / 'sweep.png'}")
    return 0


def _confirm(args: argparse.Namespace, model, latency: list[dict]) -> list[dict]:
    """``--confirm N``: the RTL reruns on N embedded images (cycles must match)."""
    from sbnn.cosim.sweep_confirm import RtlDisagreement, confirm_on_rtl

    try:
        return confirm_on_rtl(model, model_path(args), default_sample_path(), args.confirm,
                              args.margins, latency, args.build)
    except RtlDisagreement as exc:
        raise CliError(str(exc)) from None
