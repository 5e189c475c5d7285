"""Training recipes as parameter records: :class:`TrainSettings` (one training run) and
:class:`FinetuneSettings` (the fine-tuning of pruning with retraining).

Torch-free, so the command line can read the documented fields (and generate the options of
``sbnn train`` from them) without importing torch; studies/train.py and
studies/prune_finetune.py re-export these classes. The design itself is the SbnnConfig.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import Field

from sbnn.params import ParamError, Record

if TYPE_CHECKING:
    import numpy as np

__all__ = ["SupportInit", "CheckpointRule", "TrainSettings", "TrainSettingsError",
           "FinetuneSettings", "FinetuneSettingsError", "FINETUNE_RECIPE_FIELDS",
           "INHERITED_RECIPE_FIELDS"]


class TrainSettingsError(ParamError):
    """A training option is invalid; the message names the option and what is allowed."""

    prefix: ClassVar[str] = "training option"


class FinetuneSettingsError(ParamError):
    """A fine-tuning setting is invalid; the message names it and what is allowed."""

    prefix: ClassVar[str] = "fine-tune option"


class SupportInit(str, Enum):
    """How case (i) starts the support latents from the trained base plane."""

    #: 0.1 * sign(base latent): every support flips easily
    sign = "sign"
    #: a copy of the base latent: a support flips early only where the base weight itself
    #: was undecided (|latent| small)
    latent = "latent"


class CheckpointRule(str, Enum):
    """Which epoch's model a training stage keeps (chosen on the validation split only)."""

    #: the epoch with the lowest mean float validation error over the budgets the stage
    #: trains (ties: the later epoch). Float, not hardware-exact: it is measured every epoch
    #: for about a second, and the two agree within about 0.1 pp on MNIST
    best_val = "best_val"
    #: the last epoch
    last = "last"


_LossWeight = Annotated[float, Field(ge=0, le=1000)]


class TrainSettings(Record):
    """Schedule and recipe of one training run (the design itself is the SbnnConfig).

    Anytime inference: every latency budget p (planes 0..p) has its own batch norms and
    output affine. Case (ii) minimizes ``sum_p w_p CE_p`` over budgets 0..K, case (i) stage 2
    over budgets 1..K (budget 0 is stage 1's BNN, kept as it is), with ``w`` the
    ``budget_loss_weights`` of those budgets normalized to sum 1 (equal when left out).
    """

    _record_name: ClassVar[str] = "training option"
    _error: ClassVar[type[ParamError]] = TrainSettingsError

    base_epochs: int = Field(20, ge=0, le=10000,
                             description="case (i) epochs of the plain BNN")
    support_epochs: int = Field(10, ge=0, le=10000,
                                description="case (i) epochs of the supports on the frozen "
                                            "base")
    joint_epochs: int = Field(30, ge=0, le=10000,
                              description="case (ii) epochs of joint training of base plane "
                                          "and supports")
    batch_size: int = Field(100, ge=1, le=60000, description="minibatch size")
    lr: float = Field(3e-3, gt=0, le=1, description="initial Adam learning rate")
    lr_final: float = Field(3e-4, gt=0, le=1,
                            description="learning rate of the last epoch, exponential decay")
    support_lr: float | None = Field(None, gt=0, le=1,
                                     description="case (i) stage-2 initial learning rate, "
                                                 "decaying to lr_final; left out: lr")
    support_init: SupportInit = Field(SupportInit.sign, strict=False,
                                      description="case (i) support latents start at "
                                                  "0.1*sign(base) or at a copy of the base "
                                                  "latents")
    seed: int = Field(0, ge=0, description="random seed")
    threads: int = Field(2, ge=1, le=256, description="torch CPU threads")
    shift: int = Field(0, ge=0, le=8,
                       description="augmentation: random +-N pixel shifts of each training "
                                   "image")
    rotate: float = Field(0.0, ge=0, le=45,
                          description="augmentation: random rotation up to +-N degrees")
    scale: float = Field(0.0, ge=0, le=0.5,
                         description="augmentation: random scaling up to +-F, a fraction")
    elastic: float = Field(0.0, ge=0, le=8,
                           description="augmentation: smooth random elastic displacement of "
                                       "about N pixels")
    support_drop: float = Field(0.0, ge=0, lt=1,
                                description="probability that a support column is dropped "
                                            "for one minibatch")
    adc_aware: bool = Field(False, description="model the first layer's per-tile ADC "
                                               "clipping in training")
    adc_quantize: bool = Field(
        False, description="model every layer's ADC conversion in training (per row block "
                           "and plane: the floor, its mean corrected as folding does, with a "
                           "straight-through gradient, and the clipping) with the config's "
                           "steps; for designs with few ADC bits")
    adc_finetune_epochs: int = Field(
        1, ge=0, le=1000,
        description="where the ADC steps are chosen from data: epochs of training through "
                    "every layer's modelled ADC conversion (adc_quantize) with the chosen "
                    "steps at the end of the run, at a tenth of lr (the parameters and "
                    "budgets of the run's last stage); 0: none")
    supports_off: bool = Field(
        False, description="case (i) control: stage 2 runs its schedule with every support "
                           "column masked, training only budgets 1..K's norms and outputs "
                           "(what the extra training gives without the supports)")
    budget_loss_weights: tuple[_LossWeight, ...] | None = Field(
        None, description="weight of each budget's cross-entropy in the loss, one per budget "
                          "0..K (case i stage 2 uses those of 1..K), normalized to sum 1; "
                          "left out: equal weights")
    keep_checkpoint: CheckpointRule = Field(
        CheckpointRule.best_val, strict=False,
        description="the epoch each stage keeps: best_val (lowest mean float validation "
                    "error over the stage's budgets, ties to the later epoch) or last")
    hw_val_every: int = Field(
        10, ge=0, le=10000,
        description="hardware-exact validation every N epochs and at each stage's last "
                    "(0: only of the final model, in the summary); float validation runs "
                    "every epoch")

    @property
    def distorts(self) -> bool:
        """Whether training images are resampled (rotation, scaling or elastic field)."""
        return bool(self.rotate or self.scale or self.elastic)

    def loss_weights(self, budgets: range, num_supports: int) -> tuple[float, ...]:
        """The normalized loss weights of ``budgets`` for a network with K = ``num_supports``;
        raises :class:`TrainSettingsError` if ``budget_loss_weights`` does not hold K+1
        weights or those of ``budgets`` are all 0."""
        weights = self.budget_loss_weights
        if weights is None:
            weights = (1.0,) * (num_supports + 1)
        if len(weights) != num_supports + 1:
            raise TrainSettingsError("budget_loss_weights",
                                     f"needs one weight per budget 0..{num_supports} "
                                     f"({num_supports + 1}), got {len(weights)}")
        chosen = [weights[b] for b in budgets]
        if not sum(chosen) > 0:
            raise TrainSettingsError("budget_loss_weights",
                                     f"the weights of budgets {budgets.start}.."
                                     f"{budgets.stop - 1} are all 0: nothing to train")
        return tuple(w / sum(chosen) for w in chosen)

    def augment(self, images: np.ndarray, rng: np.random.Generator,
                device: Any = "cpu") -> np.ndarray:
        """One epoch's augmented copy of the (N, 28, 28) training images; a resampling runs
        on ``device`` (a torch device: the training's)."""
        from .augment import distort_images, shift_images  # torch: only when training

        if self.distorts:
            return distort_images(images, rng, shift=self.shift, rotate=self.rotate,
                                  scale=self.scale, elastic=self.elastic, device=device)
        return shift_images(images, self.shift, rng)


#: the TrainSettings fields a fine-tuning uses (recorded in the pruned model's .json)
FINETUNE_RECIPE_FIELDS = ("lr", "lr_final", "batch_size", "shift", "rotate", "scale",
                          "elastic", "seed", "threads")
#: the fields a fine-tuning takes from the run that trained the model, where known
INHERITED_RECIPE_FIELDS = ("batch_size", "shift", "rotate", "scale", "elastic")


class FinetuneSettings(Record):
    """Fine-tuning after each trial mask: ``epochs`` of the ``recipe`` (learning-rate
    schedule, batch size, augmentation, seed, threads; the CLI copies the source run's batch
    size and augmentation), and the bisection's resolution."""

    _record_name: ClassVar[str] = "fine-tune option"
    _error: ClassVar[type[ParamError]] = FinetuneSettingsError

    epochs: int = Field(3, ge=1, le=1000, description="fine-tune epochs after each trial mask")
    recipe: TrainSettings = Field(
        TrainSettings(batch_size=200, lr=1e-4, lr_final=1e-5, shift=2),
        description="learning-rate schedule, batch size, augmentation, seed and threads")
    resolution_pct: float = Field(2.0, gt=0, le=50,
                                  description="bisection stops when the bracket is this share "
                                              "of the enabled columns (percent)")

    @classmethod
    def for_source(cls, epochs: int, lr: float, seed: int, threads: int,
                   source_recipe: dict[str, Any]) -> tuple[FinetuneSettings, dict[str, Any]]:
        """The fine-tuning of a model trained with ``source_recipe`` (its run's settings, {}
        if unknown): learning rate ``lr`` decaying to a tenth, the source's batch size and
        augmentation where known. Returns the settings and the fields taken from the source."""
        same = {k: source_recipe[k] for k in INHERITED_RECIPE_FIELDS if k in source_recipe}
        recipe = cls().recipe.replace(lr=lr, lr_final=lr / 10, seed=seed, threads=threads,
                                      **same)
        return cls(epochs=epochs, recipe=recipe), same

    def summary(self) -> dict[str, Any]:
        """What a pruned model's .json records of the fine-tuning."""
        return {"epochs": self.epochs, "resolution_pct": self.resolution_pct,
                **{k: getattr(self.recipe, k) for k in FINETUNE_RECIPE_FIELDS}}
