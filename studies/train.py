"""Training: case (i) — a plain BNN first, then support planes learned on its frozen base —
and case (ii) — base plane, supports and binarization learned jointly from scratch.

Published BinaryNet MLP practice: sign + straight-through estimator, latent weights clipped
to [-1, 1], batch norm (folded to thresholds at export), Adam with an exponentially decaying
learning rate. Options beyond that (all off by default, so the default design trains as it
always did): random +-``shift`` pixel translations of the training images, random affine +
elastic distortions (studies/augment.py), structured dropout of support columns
(``support_drop``), and the first layer's per-tile ADC clipping modelled in the forward
pass (``adc_aware``).

Anytime inference: every budget p has its own batch norms and output affine. Case (i)
stage 1 trains budget 0's (the plain BNN); stage 2 trains the supports and budgets 1..K's
norms and outputs on the frozen base (starting from copies of budget 0's), so budget 0 stays
exactly the stage-1 BNN. Case (ii) trains every budget at once. The loss is the weighted sum
of the budgets' cross-entropies (``budget_loss_weights``).

Protocol (issue 16): training fits on the ``fit`` split, validates every epoch on ``val``
(float and hardware-exact, per budget) and keeps the epoch ``keep_checkpoint`` names; it
never reads the test set (``sbnn eval`` does). Every epoch is checkpointed; rerunning the
same command resumes.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sbnn.config import SbnnConfig
from sbnn.fileio import atomic_file, atomic_write_text
from sbnn.golden.fold import fold_model
from sbnn.golden.model import SupportedBNN, pixels_to_codes, support_scales
from sbnn.golden.qmodel import QuantizedModel

from .augment import shift_images
from .recipe import TrainSettings, TrainSettingsError
from .train_loop import (
    Log,
    Split,
    Stage,
    cpu_state,
    device_name,
    evaluate_float,
    evaluate_hw,
    machine_record,
    run_stage,
    validate,
)

# TrainSettings and TrainSettingsError live in the torch-free studies/recipe.py (the CLI reads
# their fields without torch); they are re-exported here, where training uses them.
__all__ = ["TrainSettings", "TrainSettingsError", "adopt_base", "train_case_i", "train_case_ii",
           "train",
           "evaluate_float", "evaluate_hw", "shift_images"]

#: The recipe a training run uses when none is given.
DEFAULT_SETTINGS = TrainSettings()


#: Training images (the first of the fit split, unaugmented) the ADC steps are chosen on.
CALIBRATION_IMAGES = 1000


def steps_from_data(cfg: SbnnConfig, settings: TrainSettings) -> bool:
    """Whether folding chooses the ADC steps from data: the config leaves ``adc_steps``
    out (its derived default ignores the data) and training does not model the first
    layer's ADC with the configured step (``adc_aware``)."""
    return ("adc_steps" not in cfg.model_fields_set and not settings.adc_aware
            and not settings.adc_quantize)


def calibration_codes(cfg: SbnnConfig, fit: Split) -> torch.Tensor:
    """First-layer row codes of the :data:`CALIBRATION_IMAGES` calibration images."""
    pixels = torch.from_numpy(np.ascontiguousarray(
        fit[0][:CALIBRATION_IMAGES].reshape(min(len(fit[0]), CALIBRATION_IMAGES), -1)))
    return pixels_to_codes(pixels, cfg)


def _set_recipe(model: SupportedBNN, settings: TrainSettings) -> None:
    model.adc_aware = settings.adc_aware
    model.adc_quantize = settings.adc_quantize
    for lin in model.linears:
        lin.support_drop = settings.support_drop


def _run_stage(name: str, model: SupportedBNN, params: list[nn.Parameter], epochs: int,
               budget: int | None, fit: Split, val: Split, settings: TrainSettings,
               ckpt: Path, log: Log, lr: float | None = None) -> dict:
    """One stage at a single ``budget`` (None: K) with cross-entropy loss: the fine-tuning of
    studies/prune_finetune.py. See :func:`~sbnn.studies.train_loop.run_stage`."""
    budget = model.cfg.num_supports if budget is None else budget
    stage = Stage(name, params, epochs, (budget,), (1.0,),
                  settings.lr if lr is None else lr, ckpt)
    return run_stage(model, stage, fit, val, settings, log,
                     next(model.parameters()).device)


def _prepare(cfg: SbnnConfig, out_dir: str | Path, settings: TrainSettings,
             device: torch.device, fit: Split) -> tuple[Path, SupportedBNN, float]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    cfg.write_snapshot(out / "config.json")
    atomic_write_text(out / "recipe.json", json.dumps(settings.to_dict(), indent=2) + "\n")
    model = SupportedBNN(cfg)  # initialized on the CPU: the same weights on every device
    _set_recipe(model, settings)
    if steps_from_data(cfg, settings):
        model.calibration_codes = calibration_codes(cfg, fit)
    # Time already spent before an interruption counts: train_minutes is the whole run.
    spent_file = out / "train_seconds.json"
    spent = json.loads(spent_file.read_text())["seconds"] if spent_file.exists() else 0.0
    return out, model.to(device), time.time() - spent


def _record_time(out: Path, t0: float) -> None:
    atomic_write_text(out / "train_seconds.json", json.dumps({"seconds": time.time() - t0}) + "\n")


def _save_float(model: SupportedBNN, path: Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(cpu_state(model), tmp)


def _finish(case: str, model: SupportedBNN, out: Path, settings: TrainSettings,
            fit: Split, val: Split, t0: float, stages: list[dict], device: torch.device,
            extra: dict) -> dict:
    """Fold and save the model, write ``train_summary.json`` (validation figures only)."""
    # No batch-norm re-estimation with every column on after support dropout: tried on
    # case (ii), it raised the hw-exact error from 1.50 % to 1.67 % (docs/results.md).
    cfg = model.cfg
    folded = fold_model(model)
    folded.save(out / "model.npz")
    _save_float(model, out / "model_float.pt")
    _record_time(out, t0)
    figures = validate(model, val, range(cfg.num_supports + 1), folded=folded)
    summary = {
        "case": case,
        "settings": settings.to_dict(),
        "config": cfg.to_dict(),
        "seed": settings.seed,
        "device": device_name(device),
        "machine": machine_record(),
        "train_minutes": round((time.time() - t0) / 60, 2),
        "fit_images": int(len(fit[1])),
        "validation_images": int(len(val[1])),
        "checkpoint_rule": settings.keep_checkpoint.value,
        "adc_steps": list(folded.config.adc_steps),
        "adc_steps_from": (f"data: chosen on {CALIBRATION_IMAGES} fit images"
                           if model.calibration_codes is not None
                           or getattr(model, "steps_chosen_on", None) is not None
                           else "the config"),
        **extra,
        "val_float_error_pct": figures["float_val_error_pct"][-1],
        "val_hw_error_pct": figures["hw_val_error_pct"][-1],
        "val_float_error_pct_by_budget": figures["float_val_error_pct"],
        "val_hw_error_pct_by_budget": figures["hw_val_error_pct"],
        "stages": stages,
    }
    atomic_write_text(out / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _save_baseline(model: SupportedBNN, out: Path) -> None:
    """Stage 1's BNN as ``baseline.npz`` and its float twin: budget 0's norms and output at
    every budget, every support column masked."""
    base = copy.deepcopy(model)
    base.copy_budget(0, range(1, model.cfg.num_supports + 1))
    with torch.no_grad():
        for lin in base.linears:
            lin.mask.zero_()
    fold_model(base).save(out / "baseline.npz")
    _save_float(base, out / "baseline_float.pt")


def _start_supports(model: SupportedBNN, settings: TrainSettings) -> None:
    """Stage 2's start: every support plane at the base plane's signs (small latent
    magnitude unless ``support_init`` is latent) and budget 0's norms and output at every
    budget, so that the network starts from the stage-1 function."""
    with torch.no_grad():
        for lin in model.linears:
            base = lin.base.detach()[None].expand_as(lin.supports)
            lin.supports.copy_(base if settings.support_init == "latent" else base * 0.1)
    model.copy_budget(0, range(1, model.cfg.num_supports + 1))


#: the recipe fields stage 1 (the plain BNN) depends on: a run may adopt another run's
#: stage 1 only when all of them agree
BASE_RECIPE_FIELDS = ("base_epochs", "batch_size", "lr", "lr_final", "seed", "shift", "rotate",
                      "scale", "elastic", "adc_aware", "adc_quantize", "keep_checkpoint")


def _stage_1_design(config: dict) -> dict:
    """The design as stage 1 sees it: every field but the support planes' gains, which only
    budgets >= 1 read (stage 1 trains the base plane alone at budget 0, and stage 2 starts
    every support from the base's latents). Two designs that differ in those gains alone
    (a_1 = 1/2 against a_1 = 1, say) share one stage 1, so a stage-2 variant of another
    support scale is paired with the run it adopts."""
    return {**config, "plane_gains": list(config["plane_gains"])[:1]}


def adopt_base(source: str | Path, out_dir: str | Path, cfg: SbnnConfig,
               settings: TrainSettings) -> None:
    """Start case (i) run ``out_dir`` from the finished stage 1 of run ``source`` (same
    design but perhaps the support gains, same stage-1 recipe): its checkpoint and stage-1
    time are copied, so the new run trains only stage 2 and its ``train_minutes`` still
    counts stage 1. A paired control
    (``supports_off``) then differs from its case (i) run in stage 2 alone. Raises
    :class:`TrainSettingsError` naming what does not match."""
    import shutil

    src, out = Path(source), Path(out_dir)
    if (out / "ckpt_base.pt").exists():
        return  # adopted before (a resumed run)
    need = [src / n for n in ("ckpt_base.pt", "base_seconds.json", "config.json",
                              "recipe.json")]
    missing = [str(f) for f in need if not f.exists()]
    if missing:
        raise TrainSettingsError("base_from", f"{src} has not finished a case (i) stage 1 "
                                 f"(missing {', '.join(missing)})")
    theirs_cfg = json.loads((src / "config.json").read_text())
    if _stage_1_design(theirs_cfg) != _stage_1_design(cfg.to_dict()):
        raise TrainSettingsError("base_from", f"{src} was trained for another design "
                                 f"(its config.json differs from this run's in more than "
                                 f"the support planes' gains)")
    theirs = TrainSettings.from_dict(json.loads((src / "recipe.json").read_text()))
    differ = [f for f in BASE_RECIPE_FIELDS if getattr(theirs, f) != getattr(settings, f)]
    if differ:
        raise TrainSettingsError("base_from", f"{src}'s stage 1 used another "
                                 f"{', '.join(differ)}; give the same values")
    state = torch.load(src / "ckpt_base.pt", map_location="cpu", weights_only=False)
    if state["epoch"] != settings.base_epochs:
        raise TrainSettingsError("base_from", f"{src}'s stage 1 is at epoch {state['epoch']} "
                                 f"of {settings.base_epochs}; wait for it to finish")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "base_seconds.json", out / "base_seconds.json")
    shutil.copyfile(src / "base_seconds.json", out / "train_seconds.json")
    atomic_write_text(out / "base_from.json", json.dumps({"base_from": str(src)}) + "\n")
    # The checkpoint's model carries the support scales a_k of its own design as buffers:
    # give it this design's, or stage 2 would train with the source run's a_k while the
    # hardware computes with this design's.
    scales = torch.tensor(support_scales(cfg), dtype=torch.float32)
    # "kept" is None for a stage of 0 epochs
    for weights in (state["model"], (state.get("kept") or {}).get("model") or {}):
        for key in [k for k in weights if k.endswith(".scales")]:
            weights[key] = scales.clone()
    with atomic_file(out / "ckpt_base.pt") as tmp:
        torch.save(state, tmp)


def _fix_steps_after_stage_1(model: SupportedBNN, settings: TrainSettings) -> None:
    """Case (i) chooses its ADC steps once, on the stage-1 BNN as stage 2 starts it (every
    support at the base's signs): the baseline and the final model then share one design,
    and budget 0 of the final model is the baseline exactly. A resumed run recomputes the
    same steps from the same stage-1 model."""
    if model.calibration_codes is None:
        return
    start = copy.deepcopy(model)
    _start_supports(start, settings)
    _fix_steps(model, start)


def _fix_steps(model: SupportedBNN, chosen_on: SupportedBNN) -> None:
    """Fix ``model``'s ADC steps to those calibrated on ``chosen_on`` (the model itself or
    a copy of it) with ``model``'s calibration codes, which it then no longer carries."""
    from sbnn.golden.adc_calibration import calibrate_adc_steps

    model.cfg = model.cfg.replace(
        adc_steps=calibrate_adc_steps(chosen_on, model.calibration_codes))
    model.steps_chosen_on = model.calibration_codes
    model.calibration_codes = None


def _adc_finetune(model: SupportedBNN, last: Stage, settings: TrainSettings, fit: Split,
                  val: Split, out: Path, log: Log, device: torch.device) -> dict | None:
    """Where the steps come from data (``model.calibration_codes`` or ``steps_chosen_on``):
    fix them (chosen now on the trained model unless case (i) fixed them after stage 1),
    then train ``adc_finetune_epochs`` through every layer's modelled ADC conversion with
    them, the parameters and budgets of ``last`` at a tenth of its learning rate. A short
    training run never sees the ADC's rounding otherwise: with 3 ADC bits its
    hardware-exact error was 4.9 pp above the float model's, and 0.1 pp below after one
    such epoch (docs/adc_calibration.md). None when it does not apply."""
    if not settings.adc_finetune_epochs or (model.calibration_codes is None and getattr(
            model, "steps_chosen_on", None) is None):
        return None
    if model.calibration_codes is not None:
        _fix_steps(model, model)
    model.adc_quantize = True
    stage = Stage("adc", last.params, settings.adc_finetune_epochs, last.budgets,
                  last.weights, last.lr / 10, out / "ckpt_adc.pt")
    return run_stage(model, stage, fit, val, settings.replace(lr_final=last.lr / 10), log,
                     device)


def train_case_i(cfg: SbnnConfig, fit: Split, val: Split, out_dir: str | Path,
                 settings: TrainSettings = DEFAULT_SETTINGS, log: Log = print,
                 device: torch.device | str = "cpu") -> dict:
    """Stage 1: plain BNN (budget 0). Stage 2: supports and the norms and outputs of budgets
    1..K on the frozen base, budget 0 left as stage 1 kept it. Writes ``baseline.npz`` and
    ``model.npz`` (QuantizedModel), their float state dicts (``*_float.pt``) and
    ``train_summary.json`` to ``out_dir``; returns the summary."""
    device = torch.device(device)
    k = cfg.num_supports
    weights = settings.loss_weights(range(1, k + 1), k) if k else ()
    out, model, t0 = _prepare(cfg, out_dir, settings, device, fit)
    stage1 = Stage("base", model.base_parameters() + model.budget_parameters(range(1)),
                   settings.base_epochs, (0,), (1.0,), settings.lr, out / "ckpt_base.pt")
    stages = [run_stage(model, stage1, fit, val, settings, log, device)]
    _record_time(out, t0)
    # Stage 1's time, kept from the run that finished it (a resumed run skips stage 1).
    base_file = out / "base_seconds.json"
    if not base_file.exists():
        atomic_write_text(base_file, json.dumps({"seconds": time.time() - t0}) + "\n")
    base_minutes = json.loads(base_file.read_text())["seconds"] / 60
    _fix_steps_after_stage_1(model, settings)
    _save_baseline(model, out)
    base_figures = validate(model, val, (0,),
                            folded=QuantizedModel.load(out / "baseline.npz"))

    if k:
        if not (out / "ckpt_supports.pt").exists():
            _start_supports(model, settings)
        for p in model.base_parameters():
            p.requires_grad_(False)
        trained = model.budget_parameters(range(1, k + 1))
        if settings.supports_off:
            # The control: same schedule, the supports masked out and left untrained, so
            # budget 1..K differ from budget 0 only by their retrained norms and outputs.
            with torch.no_grad():
                for lin in model.linears:
                    lin.mask.zero_()
        else:
            trained = model.support_parameters() + trained
        stage2 = Stage("supports", trained, settings.support_epochs,
                       tuple(range(1, k + 1)), weights, settings.support_lr or settings.lr,
                       out / "ckpt_supports.pt")
        stages.append(run_stage(model, stage2, fit, val, settings, log, device))
        tuned = _adc_finetune(model, stage2, settings, fit, val, out, log, device)
        if tuned is not None:
            stages.append(tuned)
    adopted = out / "base_from.json"
    return _finish("i", model, out, settings, fit, val, t0, stages, device, {
        **(json.loads(adopted.read_text()) if adopted.exists() else {}),
        "base_train_minutes": round(base_minutes, 2),
        "baseline_val_float_error_pct": base_figures["float_val_error_pct"][0],
        "baseline_val_hw_error_pct": base_figures["hw_val_error_pct"][0]})


def train_case_ii(cfg: SbnnConfig, fit: Split, val: Split, out_dir: str | Path,
                  settings: TrainSettings = DEFAULT_SETTINGS, log: Log = print,
                  device: torch.device | str = "cpu") -> dict:
    """Base plane, supports and every budget's norms and output learned together from
    scratch, the loss summing the budgets' weighted cross-entropies. Writes ``model.npz``,
    ``model_float.pt`` and ``train_summary.json`` to ``out_dir``; returns the summary."""
    device = torch.device(device)
    budgets = range(cfg.num_supports + 1)
    weights = settings.loss_weights(budgets, cfg.num_supports)
    out, model, t0 = _prepare(cfg, out_dir, settings, device, fit)
    stage = Stage("joint", list(model.parameters()), settings.joint_epochs, tuple(budgets),
                  weights, settings.lr, out / "ckpt_joint.pt")
    stages = [run_stage(model, stage, fit, val, settings, log, device)]
    tuned = _adc_finetune(model, stage, settings, fit, val, out, log, device)
    if tuned is not None:
        stages.append(tuned)
    return _finish("ii", model, out, settings, fit, val, t0, stages, device, {})


def train(case: str, cfg: SbnnConfig, fit: Split, val: Split, out_dir: str | Path,
          settings: TrainSettings = DEFAULT_SETTINGS, log: Log = print,
          device: torch.device | str = "cpu") -> dict:
    """Dispatch to :func:`train_case_i` (``case="i"``) or :func:`train_case_ii` (``"ii"``):
    fit on ``fit`` (images, labels), validate on ``val``."""
    if case == "i":
        return train_case_i(cfg, fit, val, out_dir, settings, log, device)
    if case == "ii":
        return train_case_ii(cfg, fit, val, out_dir, settings, log, device)
    raise TrainSettingsError("case", f"must be 'i' or 'ii', got {case!r}")
