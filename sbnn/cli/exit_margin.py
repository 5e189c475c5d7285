"""``sbnn exit-margin``: calibrate the confidence exit's EXIT_MARGIN on the validation split.

Scores every margin at which some validation image's decision changes (one hardware-exact
run, every pass's logits kept) and picks the one with the fewest mean cycles that passes
``--criterion``: by default (``agreement``) the exit may change at most ``--tolerance-pp`` %
(default 0) of the full budget's validation answers; ``error`` bounds the validation error
above the full budget's instead (default +0.05 pp). See studies/exit_calibration.py. The
test set is not read: ``sbnn eval --manifest`` measures the chosen margin once
(results.json ``anytime``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sbnn.fileio import atomic_write_text, check_output_path
from sbnn.studies.exit_calibration import DEFAULT_TOLERANCE_PP, ExitCriterion

from .arguments import add_command, add_config_option, add_data_dir_option, add_model_option
from .errors import CliError
from .evaluate import portable_command
from .loaders import model_from_args, model_path

__all__ = ["add_parser", "run", "CURVE_POINTS"]

#: Points of the validation curve kept in the output file (evenly spaced, plus the choice).
CURVE_POINTS = 96


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn exit-margin``."""
    sp = add_command(subparsers, "exit-margin", run,
                     "calibrate the confidence exit's EXIT_MARGIN on the validation split",
                     add_config_option, add_data_dir_option, add_model_option)
    sp.add_argument("--criterion", choices=[c.value for c in ExitCriterion],
                    default=ExitCriterion.AGREEMENT.value,
                    help="agreement: bound the share of the full budget's validation answers "
                         "the exit changes; error: bound the validation error above the full "
                         "budget's (default agreement)")
    sp.add_argument("--tolerance-pp", type=float,
                    help="the criterion's allowance in percentage points (default "
                         + ", ".join(f"{c.value} {t:g}" for c, t in DEFAULT_TOLERANCE_PP.items())
                         + ")")
    sp.add_argument("--budget", type=int, help="latency budget (default K: every plane)")
    sp.add_argument("--out", type=Path,
                    help="JSON with the choice and the validation curve (default: beside "
                         "the model, MODEL.exit.json)")
    return sp


def _thin(points: list[dict], keep: int) -> list[dict]:
    if len(points) <= keep:
        return points
    step = (len(points) - 1) / (keep - 1)
    return [points[round(i * step)] for i in range(keep)]


def run(args: argparse.Namespace) -> int:
    """Calibrate on ``val`` and write the choice with its curve."""
    from sbnn.studies.exit_calibration import choose_exit_margin, exit_curve
    from sbnn.studies.mnist import VALIDATION_IMAGES, load_mnist

    path = model_path(args)
    model = model_from_args(args)
    k = model.config.num_supports
    budget = k if args.budget is None else args.budget
    if not 1 <= budget <= k:
        raise CliError(f"--budget must be in 1..{k} (an exit needs a later pass to skip; "
                       f"this model has K={k}), got {budget}")
    criterion = ExitCriterion(args.criterion)
    tolerance = DEFAULT_TOLERANCE_PP[criterion] if args.tolerance_pp is None \
        else args.tolerance_pp
    if not 0 <= tolerance <= 100:
        raise CliError(f"--tolerance-pp must be in 0..100 percentage points, got "
                       f"{tolerance}")
    out = args.out or path.with_name(path.stem + ".exit.json")
    check_output_path(out, "--out", folder=False)
    images, labels = load_mnist("val", args.data_dir)
    pixels = images.reshape(len(images), -1)
    curve = exit_curve(model, pixels, labels, budget)
    chosen = choose_exit_margin(curve, tolerance, criterion)
    full = curve[0]
    record = {
        "model": path.name, "split": "val", "validation_images": int(len(labels)),
        "validation": f"the last {VALIDATION_IMAGES} training digits",
        "budget": budget, "criterion": criterion.value, "tolerance_pp": tolerance,
        "exit_margin": chosen.exit_margin, "chosen": chosen.to_dict(),
        "no_exit": full.to_dict(),
        "cycles_saved_pct": round(100 * (1 - chosen.mean_cycles / full.mean_cycles), 2),
        "candidates": len(curve) - 1,
        "curve": _thin([p.to_dict() for p in curve[1:]], CURVE_POINTS),
        "command": portable_command(args.argv),
    }
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"{path.name}: validation error {full.error_pct:.2f} % at budget {budget} without "
          f"exit, {full.mean_cycles:.0f} cycles; EXIT_MARGIN {chosen.exit_margin}: "
          f"{chosen.error_pct:.2f} %, {chosen.changed_pct:.2f} % of the answers changed, "
          f"{chosen.mean_cycles:.0f} mean cycles "
          f"({record['cycles_saved_pct']:.1f} % fewer, {chosen.exit_early_pct:.1f} % exit "
          f"early); wrote {out}")
    return 0
