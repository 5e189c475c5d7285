"""``sbnn`` golden-model commands: train, eval, prune (parsers and handlers).

Split from sbnn/cli.py, which holds the shared helpers and the RTL commands (gen, lint, sim,
equiv, sample-data); the same rule holds here: every option and input file is checked
before any data is loaded, and bad input ends in one ``sbnn: error:`` line, exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from sbnn.cli import (
    CliError,
    _config,
    _default_model,
    _load_model,
    _with_config,
    _with_data,
)
from sbnn.config import SbnnConfig, load_config, load_train_table
from sbnn.fileio import atomic_file, atomic_write_text, check_output_path, staged_folder
from sbnn.options import (
    check_int,
    check_mnist_design,
    check_seed,
)

__all__ = ["add_golden_parsers", "cmd_train", "cmd_eval", "cmd_prune"]


#: sbnn train options that override [train] fields of the config file (None = not given)
_TRAIN_OPTIONS = ("base_epochs", "support_epochs", "joint_epochs", "batch_size", "lr",
                  "lr_final", "support_lr", "support_init", "seed", "threads", "shift",
                  "rotate", "scale", "elastic", "support_drop", "adc_aware")


def _train_table(path: Path | None) -> dict:
    """The optional [train] table of a TOML/JSON config file (the recipe, not the design)."""
    return load_train_table(path)


def _design_overrides(cfg: SbnnConfig, args) -> SbnnConfig:
    """Apply --layers/--supports/--dac-bits/--adc-bits to the loaded design."""
    changes = {}
    if args.layers is not None:
        try:
            changes["layers"] = [int(v) for v in args.layers.split(",")]
        except ValueError:
            raise CliError(f"--layers must be comma-separated widths such as "
                           f"784,1024,1024,10, got {args.layers!r}") from None
    for opt, name in (("supports", "num_supports"), ("dac_bits", "dac_bits"),
                      ("adc_bits", "adc_bits")):
        if getattr(args, opt) is not None:
            changes[name] = getattr(args, opt)
    if not changes:
        return cfg
    data = cfg.to_dict()
    data.update(changes)
    # Derived fields follow the new shape, as if they had been left out of the file.
    if "num_supports" in changes:
        data["plane_gains"] = None
    data["adc_steps"] = None
    return SbnnConfig.from_dict(data)


def cmd_train(args) -> int:
    from sbnn.golden.mnist import load_mnist
    from sbnn.golden.train import TrainSettings, TrainSettingsError, train

    cfg = _design_overrides(_config(args), args)
    check_mnist_design(cfg, "sbnn train (--layers or the config)")
    recipe = _train_table(args.config)
    recipe.update({k: getattr(args, k) for k in _TRAIN_OPTIONS if getattr(args, k) is not None})
    try:
        settings = TrainSettings.from_dict(recipe)
    except TrainSettingsError as exc:
        raise CliError(f"{exc} (set it with --{exc.field_name.replace('_', '-')} or in "
                       f"the config's [train] table)") from None
    check_seed("--seed (or [train] seed)", settings.seed)
    check_output_path(args.out, "--out", folder=True)
    train_data = load_mnist("train", args.data_dir)
    test = load_mnist("test", args.data_dir)
    print(f"training case ({args.case}) {list(cfg.layers)} K={cfg.num_supports} into "
          f"{args.out} (seed {settings.seed}); rerun the same command to resume", flush=True)
    summary = train(args.case, cfg, train_data, test, args.out, settings,
                    log=lambda m: print(m, flush=True))
    summary["command"] = "sbnn " + " ".join(args.argv)
    atomic_write_text(Path(args.out) / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    return 0


_TABLE_ROLES = ("baseline", "case_i", "case_ii", "pruned")


def cmd_eval(args) -> int:
    from sbnn.golden.evaluate import build_results, evaluate_model, float_model_for
    from sbnn.golden.mnist import load_mnist

    table = {r: getattr(args, r) for r in _TABLE_ROLES if getattr(args, r) is not None}
    for item in args.also or ():
        name, sep, path = item.partition("=")
        if not sep or not name or not path or name in table:
            raise CliError(f"--also takes NAME=MODEL.npz with a new name, got {item!r}")
        table[name] = Path(path)
    if table:  # the results table: every named model, results.json and the plots
        if args.model is not None or args.json is not None:
            raise CliError("--model/--json evaluate one model; --baseline/--case-i/--case-ii/"
                           "--pruned build the results table: use one form or the other")
        for path in table.values():
            _load_model(path, None)  # clear error for a missing or bad file, before the work
        check_output_path(args.out, "--out", folder=True)
        images, labels = load_mnist("test", args.data_dir)
        print(f"results table on {len(labels)} test images, hardware-exact path; writing "
              f"{args.out}/results.json and plots", flush=True)
        with staged_folder(args.out) as stage:  # results.json and plots appear together
            res = build_results(table, images, labels, stage,
                                eval_command="sbnn " + " ".join(args.argv),
                                log=lambda m: print(m, flush=True))
        keys = ("baseline_error_pct", "case_i_error_pct", "case_ii_error_pct",
                "support_columns_pruned_pct", "pruned_error_pct", "test_images", "targets_met")
        print(json.dumps({k: res[k] for k in keys}, indent=2))
        return 0
    path = args.model or _default_model()
    model = _load_model(args.model, load_config(args.config) if args.config else None)
    cfg = model.config
    if args.json is not None:
        check_output_path(args.json, "--json", folder=False)
    images, labels = load_mnist("test", args.data_dir)
    net = float_model_for(Path(path), model)
    print(f"model {path}: layers {list(cfg.layers)}, "
          f"K={cfg.num_supports}, {len(labels)} test images, hardware-exact path"
          + ("" if net is None else " (float path beside it)"))
    ev = evaluate_model(model, images, labels, net)
    rows = []
    for row in ev["budgets"]:
        b, err, cyc = row["budget"], row["hw_error_pct"], row["cycles"]
        rows.append({"budget": b, "error_pct": round(err, 2), "cycles": cyc,
                     "float_error_pct": row["float_error_pct"]})
        fl = "" if net is None else f", float {row['float_error_pct']:.2f} %"
        print(f"  budget {b}: error {err:.2f} %{fl}, {cyc} cycles "
              f"({cyc / cfg.clock_mhz:.2f} us at {cfg.clock_mhz:g} MHz)")
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")
    return 0


def cmd_prune(args) -> int:
    from sbnn.golden.mnist import load_mnist
    from sbnn.golden.prune import prune

    if not 0 <= args.tolerance <= 100:
        raise CliError(f"--tolerance must be in 0..100 percentage points, got {args.tolerance}")
    if not 1 <= args.calib <= 60000:
        raise CliError(f"--calib must be in 1..60000 training images, got {args.calib}")
    check_seed("--seed", args.seed)
    check_int("--threads", args.threads, 1, 256)
    model = _load_model(args.model, load_config(args.config) if args.config else None)
    if model.config.num_supports == 0:
        raise CliError(f"{args.model} has no support planes (K=0): nothing to prune")
    if args.out.suffix != ".npz":
        raise CliError(f"--out must name a .npz file, got {str(args.out)!r}")
    check_output_path(args.out, "--out", folder=False)
    if args.finetune_epochs:
        _check_finetune_options(args)
    src_summary = Path(args.model).parent / "train_summary.json"
    src = json.loads(src_summary.read_text()) if src_summary.is_file() else {}
    train = load_mnist("train", args.data_dir)
    test = load_mnist("test", args.data_dir)
    # Calibration images: a fixed random subset of the training set (never test images).
    rng = np.random.default_rng(args.seed)
    calib = train[0][rng.choice(len(train[0]), args.calib, replace=False)]
    calib = calib.reshape(len(calib), -1)
    t0 = time.time()
    log = lambda m: print(m, flush=True)  # noqa: E731
    finetune = {}
    if args.finetune_epochs:
        res, control, settings = _prune_finetune(args, model, src.get("settings", {}), calib,
                                                 train, test, log)
        finetune = {"finetune_epochs": args.finetune_epochs,
                    "finetune": {"epochs": settings.epochs,
                                 "resolution_pct": settings.resolution_pct,
                                 **{k: getattr(settings.recipe, k) for k in _FINETUNE_RECIPE}},
                    "finetuned_unpruned_error_pct": control}
    else:
        res = prune(model, calib, test, args.tolerance, not args.no_refit, log=log)
    res.model.save(args.out)  # atomic, as the summary below
    meta = {"command": "sbnn " + " ".join(args.argv), "source_model": str(args.model),
            "seed": src.get("settings", {}).get("seed"), "calib_seed": args.seed,
            "train_minutes": src.get("train_minutes"),
            "prune_minutes": round((time.time() - t0) / 60, 2),
            "tolerance_pp": args.tolerance, "calib_images": args.calib,
            "refit_thresholds": not args.no_refit,
            "base_error_pct": res.base_error_pct, "error_pct": res.error_pct,
            "support_columns_total": res.total, "support_columns_masked": res.pruned,
            "support_columns_pruned_pct": round(res.pruned_pct, 2), "trials": res.trials,
            "test_images": int(len(test[1])), **finetune}
    atomic_write_text(args.out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    print(f"masked {res.pruned} of {res.total} support columns ({res.pruned_pct:.1f} %): "
          f"hw-exact test error {res.base_error_pct:.2f} % -> {res.error_pct:.2f} % "
          f"(limit +{args.tolerance} pp); wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


#: the TrainSettings fields a fine-tuning uses (recorded in the pruned model's .json)
_FINETUNE_RECIPE = ("lr", "lr_final", "batch_size", "shift", "rotate", "scale", "elastic",
                    "seed", "threads")


def _check_finetune_options(args) -> None:
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


def _prune_finetune(args, model, source_recipe: dict, calib: np.ndarray, train, test, log):
    """``sbnn prune --finetune-epochs``: pruning with retraining (golden/prune_finetune.py);
    ``source_recipe`` is the settings of the run that trained ``model`` ({} if unknown)."""
    import torch

    from sbnn.golden.evaluate import float_model_for, load_float_model
    from sbnn.golden.prune_finetune import FinetuneSettings, prune_finetune

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
    same = {k: source_recipe[k] for k in ("batch_size", "shift", "rotate", "scale", "elastic")
            if k in source_recipe}
    recipe = dataclasses.replace(FinetuneSettings().recipe, lr=args.finetune_lr,
                                 lr_final=args.finetune_lr / 10, seed=args.seed,
                                 threads=args.threads, **same)
    settings = FinetuneSettings(epochs=args.finetune_epochs, recipe=recipe)
    work = args.out.with_name(args.out.stem + ".finetune")
    log(f"pruning with {args.finetune_epochs} fine-tune epochs per trial (augmentation "
        f"{same or 'default'}); checkpoints in {work} (rerun the same command to resume)")
    res, control, tuned = prune_finetune(net, model, calib, train, test, work, args.tolerance,
                                         settings, log)
    if tuned is not None:  # its float twin, where `sbnn eval` looks for it: <stem>_float.pt
        with atomic_file(args.out.with_name(args.out.stem + "_float.pt")) as tmp:
            torch.save(tuned.state_dict(), tmp)
    return res, control, settings


def add_golden_parsers(sub) -> None:
    """The train, eval and prune sub-commands."""
    sp = sub.add_parser("train", help="train case (i) (base BNN, then supports) or case "
                                      "(ii) (joint)")
    _with_config(sp)
    _with_data(sp)
    sp.add_argument("--case", choices=("i", "ii"), default="i",
                    help="i: supports on the frozen pre-trained BNN; ii: joint training")
    sp.add_argument("--out", type=Path, default=Path("runs/default"))
    sp.add_argument("--layers", help="layer widths, e.g. 784,1024,1024,10 (overrides config)")
    sp.add_argument("--supports", type=int, help="support planes K (overrides config)")
    sp.add_argument("--dac-bits", type=int, help="first-layer DAC bits (overrides config)")
    sp.add_argument("--adc-bits", type=int, help="ADC bits (overrides config)")
    # Recipe options: default None = take the config's [train] table, else TrainSettings.
    sp.add_argument("--seed", type=int, help="random seed (default 0)")
    sp.add_argument("--base-epochs", type=int, help="case (i) plain-BNN epochs (default 20)")
    sp.add_argument("--support-epochs", type=int, help="case (i) support epochs (default 10)")
    sp.add_argument("--joint-epochs", type=int, help="case (ii) epochs (default 30)")
    sp.add_argument("--batch-size", type=int, help="minibatch size (default 100)")
    sp.add_argument("--lr", type=float, help="initial Adam learning rate (default 3e-3)")
    sp.add_argument("--lr-final", type=float, help="learning rate of the last epoch, "
                                                   "exponential decay (default 3e-4)")
    sp.add_argument("--support-lr", type=float, help="case (i) stage-2 initial learning "
                                                     "rate (default: --lr)")
    sp.add_argument("--support-init", choices=("sign", "latent"),
                    help="case (i) support latents start at 0.1*sign(base) or at a copy of "
                         "the base latents (default sign)")
    sp.add_argument("--threads", type=int, help="torch CPU threads (default 2)")
    sp.add_argument("--shift", type=int, help="augmentation: random +-N pixel shifts "
                                              "(default 0)")
    sp.add_argument("--rotate", type=float, help="augmentation: random rotation up to +-N "
                                                 "degrees (default 0)")
    sp.add_argument("--scale", type=float, help="augmentation: random scaling up to +-F, "
                                                "a fraction (default 0)")
    sp.add_argument("--elastic", type=float, help="augmentation: smooth random elastic "
                                                  "displacement of about N pixels (default 0)")
    sp.add_argument("--support-drop", type=float,
                    help="support-column dropout probability in training (default 0)")
    sp.add_argument("--adc-aware", action=argparse.BooleanOptionalAction, default=None,
                    help="model the first layer's per-tile ADC clipping in training")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("eval", help="test error per latency budget, hardware-exact path")
    _with_config(sp)
    _with_data(sp)
    sp.add_argument("--model", type=Path, help="QuantizedModel .npz (default: embedded)")
    sp.add_argument("--json", type=Path, help="also write the table as JSON")
    for role in _TABLE_ROLES:
        sp.add_argument(f"--{role.replace('_', '-')}", dest=role, type=Path,
                        help=f"results table: the {role.replace('_', ' ')} model .npz")
    sp.add_argument("--also", action="append", metavar="NAME=MODEL",
                    help="results table: one more run to evaluate and list (repeatable)")
    sp.add_argument("--out", type=Path, default=Path("docs"),
                    help="results table: folder for results.json and the plots (default docs)")
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("prune", help="mask support columns while the hw-exact test error "
                                      "stays within a tolerance")
    _with_config(sp)
    _with_data(sp)
    sp.add_argument("--model", type=Path, required=True, help="QuantizedModel .npz to prune")
    sp.add_argument("--out", type=Path, required=True, help="pruned model .npz (a .json "
                                                            "summary is written beside it)")
    sp.add_argument("--tolerance", type=float, default=0.05,
                    help="allowed test-error increase in percentage points (default 0.05)")
    sp.add_argument("--calib", type=int, default=3000,
                    help="training images used to rank columns and re-fit thresholds")
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
    sp.set_defaults(func=cmd_prune)
