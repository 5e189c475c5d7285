"""The sweep's outputs: ``sweep.json``, ``latency.json``, ``sweep.md`` and ``sweep.png``."""

from __future__ import annotations

import json
from pathlib import Path

from sbnn.golden.energy import EnergyModel

__all__ = ["sweep_markdown", "write_sweep_outputs"]


def write_sweep_outputs(folder: Path, command: str, rows: list[dict], latency: list[dict],
                        confirmed: list[dict], energy: EnergyModel, images: int) -> None:
    """Write the four sweep files into ``folder`` (a staging folder: they appear together).

    ``rows`` are the sweep points, ``latency`` the per-budget table, ``confirmed`` the RTL
    reruns (empty: none), ``images`` the number of test images, ``command`` the command line.
    """
    from .sweep import plot_sweep

    (folder / "sweep.json").write_text(json.dumps(
        {"command": command, "test_images": images, "energy_model": energy.to_dict(),
         "rows": rows, "rtl_confirmed": confirmed}, indent=2) + "\n")
    (folder / "latency.json").write_text(json.dumps(latency, indent=2) + "\n")
    (folder / "sweep.md").write_text(sweep_markdown(command, rows, latency, confirmed, energy,
                                                    images))
    plot_sweep(rows, folder / "sweep.png")


def sweep_markdown(command: str, rows: list[dict], latency: list[dict], confirmed: list[dict],
                   energy: EnergyModel, images: int) -> str:
    """``sweep.md``: the latency table per budget, every sweep point, the RTL reruns."""
    lines = ["# Accuracy, latency and energy sweep", "",
             f"Made by `{command}` on {images} MNIST test images (hardware-exact golden path;",
             "cycles from the timing contract, confirmed on the RTL where noted below).",
             f"Energy model (pJ per event; defaults: golden/energy.py, each with its published "
             f"source in docs/silicon.md): {energy.to_dict()}.", "",
             "![error vs cycles and energy](sweep.png)", "",
             "## Latency per budget", "",
             "Macros: `num_macros` x start interval (cycles); minimum: the evaluations "
             "without dependencies; utilization: cycles with an evaluation in flight, mean "
             "and least over the macros.", "",
             "| macros x interval | budget | cycles/inference | minimum | macro utilization % "
             "| least macro % | error % | RTL cycles |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in latency:
        lines.append(f"| {r.get('num_macros', 1)} x {r.get('macro_interval', '-')} "
                     f"| {r['budget']} | {r['cycles_per_inference']} | {r['minimum_cycles']} "
                     f"| {r['macro_utilization_pct']} "
                     f"| {r.get('min_macro_utilization_pct', r['macro_utilization_pct'])} "
                     f"| {r['error_pct']} "
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
