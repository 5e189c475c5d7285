"""The sweep's RTL confirmation: each budget (and the largest exit margin) rerun on the RTL
(cocotb + Verilator); the RTL's cycles per inference must be the timing contract's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sbnn.golden.qmodel import QuantizedModel

__all__ = ["RtlDisagreement", "confirm_on_rtl"]


class RtlDisagreement(ValueError):
    """The RTL disagreed with the golden model or took other cycles than the contract."""


def confirm_on_rtl(model: QuantizedModel, model_path: Path, images: Path, count: int,
                   margins: Sequence[int], latency: list[dict], build: Path,
                   log: Callable[[str], None] = print) -> list[dict]:
    """Rerun every budget on the first ``count`` of ``images`` without early exit and with
    the largest of ``margins``; returns one entry per (margin, budget) run and adds the
    RTL's cycles to the ``latency`` rows of the model's own design (its ``num_macros`` and
    macro interval) of the run without exit."""
    from .runner import CosimJob, run_cosim

    k = model.config.num_supports
    confirmed = []
    for margin in (None, max(margins) if margins else None):
        report = run_cosim(CosimJob(model.config, model_path, images, count,
                                    tuple(range(k + 1)), exit_margin=margin), build).to_dict()
        if report["mismatches"]:
            raise RtlDisagreement(f"RTL disagrees with golden: {report['first_mismatch']}")
        for run in report["runs"]:
            entry = {"budget": run["budget"], "exit_margin": margin, "images": run["images"],
                     "rtl_mean_cycles": run["cycles_per_inference"],
                     "rtl_macro_evals": run["macro_evals"] / run["images"]}
            confirmed.append(entry)
            if margin is None:
                cfg = model.config
                row = next(r for r in latency if r["budget"] == run["budget"] and
                           r.get("num_macros", 1) == cfg.num_macros and
                           r.get("macro_interval", cfg.interval) == cfg.interval)
                if row["cycles_per_inference"] != run["cycles_per_inference"]:
                    raise RtlDisagreement(f"budget {run['budget']}: RTL took "
                                          f"{run['cycles_per_inference']} cycles, the timing "
                                          f"contract says {row['cycles_per_inference']}")
                row["rtl_cycles_per_inference"] = run["cycles_per_inference"]
        log(f"RTL confirmed on {count} images (exit margin {margin}): 0 mismatches")
    return confirmed
