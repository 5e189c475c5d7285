"""``sbnn prune``: mask support columns while the hardware-exact VALIDATION error stays
within a tolerance (threshold re-fit, or fine-tuning of the float network with
``--finetune-epochs``).

Pruning reads the validation split ("val", the last 10,000 training digits) for the column
ranking, the threshold re-fit and the bisection's limit, and the fitting split ("fit") for
fine-tuning; there is no option and no code path that loads the test set. The pruned
model's test error is measured by the final evaluation (``sbnn eval``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from sbnn.fileio import atomic_write_text, check_output_path
from sbnn.options import check_int, check_seed
from sbnn.studies.mnist import VALIDATION_IMAGES

from .arguments import add_command, add_config_option, add_data_dir_option
from .errors import CliError
from .loaders import model_from_args

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn prune``."""
    sp = add_command(subparsers, "prune", run,
                     "mask support columns while the hw-exact validation error stays within "
                     "a tolerance",
                     add_config_option, add_data_dir_option)
    sp.add_argument("--model", type=Path, required=True, help="QuantizedModel .npz to prune")
    sp.add_argument("--out", type=Path, required=True, help="pruned model .npz (a .json "
                                                            "summary is written beside it)")
    sp.add_argument("--tolerance", type=float, default=0.05,
                    help="allowed validation-error increase in percentage points "
                         "(default 0.05)")
    sp.add_argument("--calib", type=int, default=3000,
                    help="validation images used to rank columns and re-fit thresholds")
    sp.add_argument("--seed", type=int, default=0, help="seed of the calibration subset")
    sp.add_argument("--no-refit", action="store_true",
                    help="keep the thresholds (only mask); by default neurons that lose a "
                         "column get their threshold re-fitted on the calibration images")
    sp.add_argument("--finetune-epochs", type=int, default=0,
                    help="pruning with retraining: fine-tune the float network this many "
                         "epochs after each trial mask (default 0: threshold re-fit only)")
    sp.add_argument("--finetune-lr", type=float, default=1e-4,
                    help="fine-tuning learning rate, decaying to a tenth (default 1e-4)")
    sp.add_argument("--float-model", type=Path,
                    help="trained float state dict for fine-tuning (default: <model>_float.pt "
                         "beside --model)")
    sp.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return sp


def _check_options(args: argparse.Namespace) -> None:
    """Every option of ``sbnn prune``, checked before any data is loaded."""
    if not 0 <= args.tolerance <= 100:
        raise CliError(f"--tolerance must be in 0..100 percentage points, got {args.tolerance}")
    if not 1 <= args.calib <= VALIDATION_IMAGES:
        raise CliError(f"--calib must be in 1..{VALIDATION_IMAGES} validation images, "
                       f"got {args.calib}")
    check_seed("--seed", args.seed)
    check_int("--threads", args.threads, 1, 256)


def _check_finetune_options(args: argparse.Namespace) -> None:
    """The fine-tuning options of ``sbnn prune``, checked before any data is loaded."""
    if args.no_refit:
        raise CliError("--no-refit and --finetune-epochs exclude each other: fine-tuning "
                       "re-learns the thresholds; drop one of them")
    if not 1 <= args.finetune_epochs <= 1000:
        raise CliError(f"--finetune-epochs must be in 1..1000, got {args.finetune_epochs}")
    if not 0 < args.finetune_lr <= 1:
        raise CliError(f"--finetune-lr must be in (0, 1], got {args.finetune_lr}")
    if args.float_model is not None and not args.float_model.is_file():
        raise CliError(f"--float-model {args.float_model} does not exist")


def _source_summary(model: Path) -> dict:
    """The training summary of the run that made ``model`` ({} if none): a committed model's
    ``<stem>.train_summary.json`` beside it, else a run folder's ``train_summary.json``."""
    for summary in (model.with_name(model.stem + ".train_summary.json"),
                    model.parent / "train_summary.json"):
        if summary.is_file():
            return json.loads(summary.read_text())
    return {}


def run(args: argparse.Namespace) -> int:
    """Prune ``--model`` into ``--out`` and write the summary ``.json`` beside it."""
    from sbnn.studies.mnist import load_mnist
    from sbnn.studies.prune import prune

    _check_options(args)
    model = model_from_args(args)
    if model.config.num_supports == 0:
        raise CliError(f"{args.model} has no support planes (K=0): nothing to prune")
    if args.out.suffix != ".npz":
        raise CliError(f"--out must name a .npz file, got {str(args.out)!r}")
    check_output_path(args.out, "--out", folder=False)
    if args.finetune_epochs:
        _check_finetune_options(args)
    src = _source_summary(Path(args.model))
    val = load_mnist("val", args.data_dir)
    # Calibration images: a fixed random subset of the validation split (never test images).
    rng = np.random.default_rng(args.seed)
    calib = val[0][rng.choice(len(val[0]), args.calib, replace=False)]
    calib = calib.reshape(len(calib), -1)
    t0 = time.time()
    log = lambda m: print(m, flush=True)  # noqa: E731
    finetune = {}
    if args.finetune_epochs:
        fit = load_mnist("fit", args.data_dir)
        res, control, settings = _prune_finetune(args, model, src.get("settings", {}), calib,
                                                 fit, val, log)
        finetune = {"finetune_epochs": args.finetune_epochs,
                    "finetune": settings.summary(),
                    "finetuned_unpruned_val_error_pct": control}
    else:
        res = prune(model, calib, val, args.tolerance, not args.no_refit, log=log)
    res.model.save(args.out)  # atomic, as the summary below
    trials = [{"pruned": t["pruned"], "val_error_pct": t["error_pct"],
               **({"finetuned": t["finetuned"]} if "finetuned" in t else {})}
              for t in res.trials]
    meta = {"command": "sbnn " + " ".join(args.argv), "source_model": str(args.model),
            "seed": src.get("settings", {}).get("seed"), "calib_seed": args.seed,
            "train_minutes": src.get("train_minutes"),
            "prune_minutes": round((time.time() - t0) / 60, 2),
            "split": "val", "validation_images": int(len(val[1])),
            "tolerance_pp": args.tolerance, "calib_images": args.calib,
            "refit_thresholds": not args.no_refit,
            "base_val_error_pct": res.base_error_pct, "val_error_pct": res.error_pct,
            "support_columns_total": res.total, "support_columns_masked": res.pruned,
            "support_columns_pruned_pct": round(res.pruned_pct, 2), "trials": trials,
            **finetune}
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    print(f"masked {res.pruned} of {res.total} support columns ({res.pruned_pct:.1f} %): "
          f"hw-exact validation error {res.base_error_pct:.2f} % -> {res.error_pct:.2f} % "
          f"(limit +{args.tolerance} pp); wrote {args.out} and {args.out.with_suffix('.json')}"
          f"; its test error: sbnn eval --model {args.out}")
    return 0


def _prune_finetune(args, model, source_recipe: dict, calib: np.ndarray, fit, val, log):
    """``sbnn prune --finetune-epochs``: pruning with retraining (studies/prune_finetune.py);
    ``source_recipe`` is the settings of the run that trained ``model`` ({} if unknown)."""
    from sbnn.studies.evaluate import float_model_for, load_float_model
    from sbnn.studies.prune_finetune import FinetuneSettings, prune_finetune, save_float_twin

    if args.float_model is not None:
        try:
            net = load_float_model(args.float_model, model)
        except (RuntimeError, KeyError, ValueError, OSError) as exc:
            raise CliError(f"--float-model {args.float_model} does not fit the model's "
                           f"config {list(model.config.layers)} K={model.config.num_supports}"
                           f": {str(exc).splitlines()[0]}") from None
    else:
        net = float_model_for(args.model, model)
        if net is None:
            raise CliError(f"--finetune-epochs needs the trained float network: no "
                           f"{args.model.with_name(args.model.stem + '_float.pt')} beside "
                           f"the model; pass it with --float-model")
    # Same batch size and augmentation as the run that trained the model, where known.
    settings, same = FinetuneSettings.for_source(args.finetune_epochs, args.finetune_lr,
                                                 args.seed, args.threads, source_recipe)
    work = args.out.with_name(args.out.stem + ".finetune")
    log(f"pruning with {args.finetune_epochs} fine-tune epochs per trial (augmentation "
        f"{same or 'default'}); checkpoints in {work} (rerun the same command to resume)")
    res, control, tuned = prune_finetune(net, model, calib, fit, val, work, args.tolerance,
                                         settings, log)
    if tuned is not None:  # its float twin, where `sbnn eval` looks for it
        save_float_twin(tuned, args.out)
    return res, control, settings
