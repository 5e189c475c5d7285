"""``sbnn train``: train case (i) (base BNN, then supports) or case (ii) (joint).

The design comes from ``--config`` with the ``--layers/--supports/--dac-bits/--adc-bits``
overrides; the recipe from the config's ``[train]`` table with the recipe options over it.
Every value is checked before MNIST is loaded. Training fits on the ``fit`` split and
validates on ``val`` (studies/mnist.py); it never reads the test set (``sbnn eval`` does).
``--device auto`` trains on CUDA when torch sees it; ``cpu`` results do not depend on it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sbnn.config import SbnnConfig, load_train_table
from sbnn.fileio import atomic_write_text, check_output_path
from sbnn.options import check_mnist_design, check_seed
from sbnn.studies.recipe import TrainSettings, TrainSettingsError

from .arguments import (
    add_command,
    add_config_option,
    add_data_dir_option,
    add_record_options,
    given_record_options,
)
from .errors import CliError
from .loaders import design_config

__all__ = ["add_parser", "run", "design_overrides"]

def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn train``."""
    sp = add_command(subparsers, "train", run,
                     "train case (i) (base BNN, then supports) or case (ii) (joint)",
                     add_config_option, add_data_dir_option)
    sp.add_argument("--case", choices=("i", "ii"), default="i",
                    help="i: supports on the frozen pre-trained BNN; ii: joint training")
    sp.add_argument("--out", type=Path, default=Path("runs/default"))
    sp.add_argument("--layers", help="layer widths, e.g. 784,1024,1024,10 (overrides config)")
    sp.add_argument("--supports", type=int, help="support planes K (overrides config)")
    sp.add_argument("--dac-bits", type=int, help="first-layer DAC bits (overrides config)")
    sp.add_argument("--adc-bits", type=int, help="ADC bits (overrides config)")
    sp.add_argument("--base-from", type=Path, metavar="RUN_DIR",
                    help="case (i): start from the finished stage 1 of another run of the "
                         "same design and stage-1 recipe (a paired control or stage-2 "
                         "variant trains only stage 2)")
    sp.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where to train and run the float evaluation: auto (CUDA when "
                         "present, else the CPU), cpu or cuda; default auto")
    # Recipe options, generated from TrainSettings' documented fields; not given = the
    # config's [train] table, else the field's default.
    sp.set_defaults(recipe_options=add_record_options(sp, TrainSettings))
    return sp


def design_overrides(cfg: SbnnConfig, args: argparse.Namespace) -> SbnnConfig:
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
    # Left out, not None: training then chooses the steps from data (studies/train.py
    # steps_from_data), as for a config that never named them.
    data.pop("adc_steps")
    return SbnnConfig.from_dict(data)


def _settings(args: argparse.Namespace, cfg: SbnnConfig) -> TrainSettings:
    """The recipe: the config's [train] table with the given recipe options over it,
    checked against the design (one loss weight per budget)."""
    recipe = load_train_table(args.config)
    recipe.update(given_record_options(args, args.recipe_options))
    try:
        settings = TrainSettings.from_dict(recipe)
        settings.loss_weights(range(1 if args.case == "i" else 0, cfg.num_supports + 1),
                              cfg.num_supports)
        return settings
    except TrainSettingsError as exc:
        raise CliError(f"{exc} (set it with --{exc.field_name.replace('_', '-')} or in "
                       f"the config's [train] table)") from None


def _device(name: str):
    """The torch device of ``--device``."""
    from sbnn.studies.train_loop import resolve_device

    try:
        return resolve_device(name)
    except ValueError as exc:
        raise CliError(f"--device {name}: {exc}") from None


def _warn_clipping(model_file: Path, val) -> None:
    """A warning line per layer whose ADC step (given in the config) clips most of its
    conversions on 1,000 validation images."""
    import sys

    from sbnn.golden.adc_calibration import clipping_warnings
    from sbnn.golden.qmodel import QuantizedModel

    images = val[0][:1000].reshape(min(1000, len(val[0])), -1)
    for line in clipping_warnings(QuantizedModel.load(model_file), images,
                                  f"{len(images)} validation images"):
        print(f"sbnn: warning: {line}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Train into ``--out`` (resumable) and write ``train_summary.json`` with the command."""
    from sbnn.studies.mnist import VALIDATION_IMAGES, load_mnist
    from sbnn.studies.train import train

    cfg = design_overrides(design_config(args), args)
    check_mnist_design(cfg, "sbnn train (--layers or the config)")
    settings = _settings(args, cfg)
    check_seed("--seed (or [train] seed)", settings.seed)
    check_output_path(args.out, "--out", folder=True)
    device = _device(args.device)
    if args.base_from is not None:
        if args.case != "i":
            raise CliError("--base-from adopts a case (i) stage 1; use it with --case i")
        from sbnn.studies.train import adopt_base

        try:
            adopt_base(args.base_from, args.out, cfg, settings)
        except TrainSettingsError as exc:
            raise CliError(f"--base-from: {exc}") from None
    fit = load_mnist("fit", args.data_dir)
    val = load_mnist("val", args.data_dir)
    print(f"training case ({args.case}) {list(cfg.layers)} K={cfg.num_supports} into "
          f"{args.out} (seed {settings.seed}, {device}); fit on {len(fit[1])} training "
          f"digits, validate on the last {len(val[1])}; rerun the same command to resume",
          flush=True)
    summary = train(args.case, cfg, fit, val, args.out, settings,
                    log=lambda m: print(m, flush=True), device=device)
    summary["split"] = {"fit": f"training digits 0..{len(fit[1]) - 1}",
                        "val": f"the last {VALIDATION_IMAGES} training digits",
                        "test": "not read (sbnn eval)"}
    summary["command"] = "sbnn " + " ".join(args.argv)
    atomic_write_text(Path(args.out) / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    _warn_clipping(Path(args.out) / "model.npz", val)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("config", "stages")},
                     indent=2))
    return 0
