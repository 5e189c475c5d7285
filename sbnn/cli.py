"""``sbnn`` command line: train, eval, gen, sim, lint, sample-data.

Every command that takes a design accepts ``--config FILE`` (TOML or JSON). Bad input ends
with one ``sbnn: error: ...`` line naming the problem and the fix, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from sbnn.config import ConfigError, SbnnConfig, load_config, load_train_table
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
    check_energy_file,
    check_fraction,
    check_int,
    check_margin,
    check_mnist_design,
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
    reuse = [p.name for p in out.glob("*.v")] + [".rtl_digest"] if out.is_dir() else []
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
    for top, srcs in ((SIM_TOP, [files["sim_top"]]),
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
        run_s = f"simulation + bulk check {report['wall_s']} s ({report['workers']} processes)"
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sbnn", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp):
        sp.add_argument("--config", type=Path, help="design config (TOML or JSON)")

    def with_data(sp):
        sp.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the MNIST IDX files (or set SBNN_MNIST_DIR)")

    sp = sub.add_parser("train", help="train case (i) (base BNN, then supports) or case "
                                      "(ii) (joint)")
    with_config(sp)
    with_data(sp)
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
    with_config(sp)
    with_data(sp)
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
    with_config(sp)
    with_data(sp)
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

    sp = sub.add_parser("gen", help="emit Verilog, macro stub, manifest (and hardware image)")
    with_config(sp)
    sp.add_argument("--model", type=Path, help="also export this model's hardware image")
    sp.add_argument("--out", type=Path, default=None, help="Verilog folder (default out/rtl)")
    sp.add_argument("--bundle", type=Path, default=None,
                    help="write a tapeout bundle (Verilog, SDC, macro views, image, "
                         "LibreLane config) into this folder instead")
    sp.set_defaults(func=cmd_gen)

    sp = sub.add_parser("lint", help="verilator --lint-only on the generated Verilog")
    with_config(sp)
    sp.add_argument("--out", type=Path, default=Path("out/rtl"))
    sp.add_argument("--wall", action="store_true", help="add -Wall")
    sp.set_defaults(func=cmd_lint)

    sp = sub.add_parser("sim", help="cocotb + Verilator cosim against the golden trace")
    with_config(sp)
    sp.add_argument("--model", type=Path, help="QuantizedModel .npz (default: embedded)")
    sp.add_argument("--images", type=Path, help=".npz with images/labels (default: "
                                                "embedded 300-image MNIST test sample)")
    sp.add_argument("--mnist-test", type=int, default=None, metavar="N",
                    help="instead of --images: the first N MNIST test images (and --count "
                         "N) from --data-dir / SBNN_MNIST_DIR / ../shared/data/mnist")
    with_data(sp)
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
                    help="fast: stimulus and monitor in the simulator, bulk check after, "
                         "parallel workers; cycle: Python drives and checks every clock "
                         "(same checks, ~10x slower)")
    sp.add_argument("--workers", type=int, default=None,
                    help="parallel simulator processes (fast engine; default: CPU cores)")
    sp.add_argument("--image", type=int, default=None,
                    help="run only this image (fast engine), e.g. with --waves")
    sp.add_argument("--waves", action="store_true",
                    help="dump an FST wave file (with the fast engine, use with --image)")
    sp.add_argument("--report", type=Path, help="write the report as JSON")
    sp.set_defaults(func=cmd_sim)

    sp = sub.add_parser("sweep", help="error vs cycles vs energy over budgets, exit margins "
                                      "and support masks")
    with_config(sp)
    with_data(sp)
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
    with_data(sp)
    sp.add_argument("--count", type=int, default=300)
    sp.add_argument("--out", type=Path, required=True)
    sp.set_defaults(func=cmd_sample_data)

    from sbnn.golden.variability_cli import add_variability_parser

    add_variability_parser(sub)  # sbnn variability: process-variability Monte Carlo
    return p


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


if __name__ == "__main__":
    sys.exit(main())
