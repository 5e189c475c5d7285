"""``sbnn sweep``: error vs cycles vs energy over budgets, exit margins and support masks.

Split from sbnn/cli.py (shared helpers there). Every option is checked against the design
(exit margins against the EXIT_MARGIN register) before MNIST is loaded; the four output files
are staged and appear together.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sbnn.cli import (
    _SAMPLE_IMAGES,
    CliError,
    _budgets,
    _default_model,
    _default_sample,
    _load_model,
    _with_config,
    _with_data,
)
from sbnn.config import load_config
from sbnn.fileio import check_output_path, staged_folder
from sbnn.options import check_energy_file, check_fraction, check_int, check_margin

__all__ = ["add_sweep_parser", "cmd_sweep"]


def cmd_sweep(args) -> int:
    from sbnn.golden.energy import EnergyModel
    from sbnn.golden.mnist import load_mnist
    from sbnn.golden.sweep import latency_table, plot_sweep, sweep

    model = _load_model(args.model, load_config(args.config) if args.config else None)
    check_energy_file(args.energy)  # strict JSON first: no NaN, duplicates or non-numbers
    try:
        energy = EnergyModel.load(args.energy)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    check_int("--count", args.count, 1, 10000, " test images")
    check_margin("--margins", args.margins, model.config)
    check_fraction("--keeps", args.keeps)
    check_int("--confirm", args.confirm, 0, _SAMPLE_IMAGES, " embedded sample images")
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

    def show(r):
        print(f"{r['support_kept_pct']:>6} {r['budget']:>6} {str(r['exit_margin']):>6} "
              f"{r['error_pct']:>8.2f} {r['mean_cycles']:>8.1f} {r['mean_energy_pj']:>9.1f} "
              f"{r['exit_early_pct']:>7.1f}", flush=True)

    rows = sweep(model, pixels, labels, margins, keeps, energy, progress=show)
    latency = latency_table(model, pixels, labels)
    confirmed = []
    if args.confirm:
        confirmed = _confirm_on_rtl(args, model, latency)
    with staged_folder(out) as stage:  # the four files appear together, or none
        (stage / "sweep.json").write_text(json.dumps(
            {"command": " ".join(["sbnn", *sys.argv[1:]]), "test_images": len(labels),
             "energy_model": energy.to_dict(), "rows": rows, "rtl_confirmed": confirmed},
            indent=2) + "\n")
        (stage / "latency.json").write_text(json.dumps(latency, indent=2) + "\n")
        (stage / "sweep.md").write_text(_sweep_markdown(rows, latency, confirmed, energy,
                                                        len(labels)))
        plot_sweep(rows, stage / "sweep.png")
    print(f"wrote {out / 'sweep.json'}, {out / 'latency.json'}, {out / 'sweep.png'}")
    return 0


def _sweep_markdown(rows, latency, confirmed, energy, images) -> str:
    cmd = " ".join(["sbnn", *sys.argv[1:]])
    lines = ["# Accuracy, latency and energy sweep", "",
             f"Made by `{cmd}` on {images} MNIST test images (hardware-exact golden path;",
             "cycles from the timing contract, confirmed on the RTL where noted below).",
             f"Energy model (pJ per event, illustrative defaults): {energy.to_dict()}.", "",
             "![error vs cycles and energy](sweep.png)", "",
             "## Latency per budget", "",
             "| budget | cycles/inference | minimum (evals x latency) | macro utilization % "
             "| error % | RTL cycles |", "| --- | --- | --- | --- | --- | --- |"]
    for r in latency:
        lines.append(f"| {r['budget']} | {r['cycles_per_inference']} | {r['minimum_cycles']} "
                     f"| {r['macro_utilization_pct']} | {r['error_pct']} "
                     f"| {r.get('rtl_cycles_per_inference', 'not run')} |")
    lines += ["", "## All points", "",
              "| support kept % | budget | exit margin | error % | mean cycles | "
              "mean energy pJ | exited early % |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['support_kept_pct']} | {r['budget']} | {r['exit_margin']} | "
                     f"{r['error_pct']} | {r['mean_cycles']} | {r['mean_energy_pj']} | "
                     f"{r['exit_early_pct']} |")
    if confirmed:
        lines += ["", "## Confirmed on the RTL (cocotb + Verilator, 0 mismatches)", "",
                  "| budget | exit margin | images | RTL mean cycles | RTL macro evals |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {c['budget']} | {c['exit_margin']} | {c['images']} | "
                  f"{c['rtl_mean_cycles']} | {c['rtl_macro_evals']} |" for c in confirmed]
    return "\n".join(lines) + "\n"


def _confirm_on_rtl(args, model, latency) -> list[dict]:
    """Rerun each budget (and the largest exit margin) on the RTL; cycles must match."""
    from sbnn.cosim.runner import CosimJob, run_cosim

    model_path = Path(args.model) if args.model else _default_model()
    k = model.config.num_supports
    confirmed = []
    for margin in (None, max(args.margins) if args.margins else None):
        report = run_cosim(CosimJob(model.config, model_path, _default_sample(), args.confirm,
                                    tuple(range(k + 1)), exit_margin=margin), args.build)
        if report["mismatches"]:
            raise CliError(f"RTL disagrees with golden: {report['first_mismatch']}")
        for run in report["runs"]:
            entry = {"budget": run["budget"], "exit_margin": margin, "images": run["images"],
                     "rtl_mean_cycles": run["cycles_per_inference"],
                     "rtl_macro_evals": run["macro_evals"] / run["images"]}
            confirmed.append(entry)
            if margin is None:
                row = latency[run["budget"]]
                if row["cycles_per_inference"] != run["cycles_per_inference"]:
                    raise CliError(f"budget {run['budget']}: RTL took "
                                   f"{run['cycles_per_inference']} cycles, the timing "
                                   f"contract says {row['cycles_per_inference']}")
                row["rtl_cycles_per_inference"] = run["cycles_per_inference"]
        print(f"RTL confirmed on {args.confirm} images (exit margin {margin}): 0 mismatches")
    return confirmed


def add_sweep_parser(sub) -> None:
    """The sweep sub-command."""
    sp = sub.add_parser("sweep", help="error vs cycles vs energy over budgets, exit margins "
                                      "and support masks")
    _with_config(sp)
    _with_data(sp)
    sp.add_argument("--model", type=Path, help="QuantizedModel .npz (default: embedded)")
    sp.add_argument("--count", type=int, default=10000, help="test images to use")
    sp.add_argument("--margins", type=_budgets, default=(10, 20, 30, 40, 50, 60, 80),
                    help="comma-separated exit margins (no exit is always included)")
    sp.add_argument("--keeps", type=lambda t: [float(v) for v in t.split(",")],
                    default=[1.0, 0.75, 0.5, 0.25, 0.0],
                    help="fractions of support columns kept (least useful masked first)")
    sp.add_argument("--energy", type=Path, help="JSON of per-event energies (pJ)")
    sp.add_argument("--confirm", type=int, default=0,
                    help="rerun each budget on N embedded images on the RTL (cosim)")
    sp.add_argument("--build", type=Path, default=Path("out/cosim"))
    sp.add_argument("--out", type=Path, default=Path("docs"))
    sp.set_defaults(func=cmd_sweep)
