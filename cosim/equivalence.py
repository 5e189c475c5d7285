"""Randomized equivalence: random configs, models, inputs and controls, RTL vs golden.

A *case* is one inference: a random image with a random latency budget (on the pixel
stream) under a random exit margin, on a random model (bitcells, thresholds per pass,
support mask) programmed just before it. Models are redrawn every ``CASES_PER_MODEL``
cases, so the run also checks reprogramming between inferences. A *config* (layer widths,
rows, active rows, columns, K, DAC/ADC bits and steps, gains, latency, lanes, number of
macros and their interval) is drawn from
its seed and built once with Verilator; its cases then run on the fast harness
(cosim/fast.py) with the full cycle-by-cycle bulk check.

Every case is named ``CONFIG_SEED:INDEX`` and can be rerun alone
(``sbnn equiv --case CONFIG_SEED:INDEX``). The long run over many configs, on the engine
(Dask), with its ledger is cosim/equivalence_run.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sbnn.config import ConfigError, SbnnConfig
from sbnn.gen.image import build_image
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import ProgOp, Sizes

from .report import EquivalenceRunReport

__all__ = ["random_config", "random_model", "plan_config", "run_config", "CASES_PER_MODEL"]

CASES_PER_MODEL = 4


def _model_seed(config_seed: int, model_index: int) -> int:
    return int(np.random.SeedSequence([config_seed, model_index, 1]).generate_state(1)[0])


#: Build and run cost bounds of one drawn config (each field is drawn over its whole valid
#: range; only combinations past these are redrawn): bitcells read per evaluation (the
#: behavioral macro has one adder term per row and column: ~a minute of Verilog generation
#: and Verilator build at 4096), and macro cycles of a full-budget inference.
MAX_MACRO_WORD = 4096
MAX_INFERENCE_CYCLES = 20000


def _wide(rng: np.random.Generator, small: tuple[int, int], whole: tuple[int, int],
          p_whole: float = 0.3) -> int:
    """Mostly a small value (cheap, many cases), sometimes one from the whole valid range."""
    lo, hi = whole if rng.random() < p_whole else small
    return int(rng.integers(lo, hi + 1))


def random_config(seed: int) -> SbnnConfig:
    """A valid configuration drawn from ``seed``, from the whole valid space: any K, any
    (coprime) active rows, neurons per tile and input lanes, wide lanes, many columns or
    many rows driven at once, any DAC/ADC widths, steps, gains and latency; redrawn only
    past the build/run bounds above (or where the validator refuses it)."""
    rng = np.random.default_rng([seed, 0])
    while True:
        k = int(rng.integers(0, 8)) if rng.random() < 0.2 else int(rng.integers(0, 4))
        planes = k + 1
        active = _wide(rng, (1, 16), (1, 1024))
        nt = _wide(rng, (1, 8), (1, 1024 // planes))
        cols = min(1024, planes * nt + int(rng.integers(0, planes)))
        if active * cols > MAX_MACRO_WORD:
            continue
        widths = [_wide(rng, (2, 100), (1, 784))] + \
                 [_wide(rng, (2, 40), (1, 256), 0.1) for _ in range(int(rng.integers(0, 3)))]
        widths.append(_wide(rng, (2, 12), (2, 64), 0.1))
        gain_bits = int(rng.integers(k + 1 if k else 1, 9))
        gains = None
        if rng.random() < 0.3 or gain_bits <= k:  # learned-style gains, not powers of two
            gains = tuple(int(g) for g in rng.integers(1, 1 << gain_bits, planes))
        steps = None
        if rng.random() < 0.5:
            steps = tuple(1 << int(rng.integers(0, 17 if rng.random() < 0.2 else 7))
                          for _ in range(len(widths) - 1))
        latency = _wide(rng, (2, 6), (2, 64), 0.15)
        fields = dict(
            layers=tuple(widths), num_supports=k, active_rows=active, macro_cols=cols,
            dac_bits=int(rng.integers(1, 9)), gain_bits=gain_bits, plane_gains=gains,
            adc_bits=int(rng.integers(2, 17)), adc_steps=steps, macro_latency=latency,
            input_lanes=_wide(rng, (1, 16), (1, 256)),
            macro_rows=active * ((1 << 20) // active))  # the most groups allowed
        fields |= _macro_arrangement(seed, latency)
        try:
            probe = SbnnConfig(**fields)
            if probe.total_tiles * planes * (latency + 1) > MAX_INFERENCE_CYCLES:
                continue
            extra = int(rng.integers(0, 3))  # spare word-line groups
            return SbnnConfig(**fields | {"macro_rows": active * (probe.total_tiles + extra)})
        except ConfigError:
            continue  # e.g. accumulators too wide: draw again


#: Macros drawn for a config: 1 .. MAX_DRAWN_MACROS, uniformly.
MAX_DRAWN_MACROS = 4


def _macro_arrangement(seed: int, latency: int) -> dict:
    """``num_macros`` (1 .. :data:`MAX_DRAWN_MACROS`) and ``macro_interval`` (left out, the
    latency, or 1 .. latency) of a drawn config, from a stream of their own, so that the
    other fields a seed draws are those it drew before these two were drawn."""
    rng = np.random.default_rng([seed, 3, latency])
    macros = int(rng.integers(1, MAX_DRAWN_MACROS + 1))
    interval = None if rng.random() < 0.3 else int(rng.integers(1, latency + 1))
    return {"num_macros": macros, "macro_interval": interval}


def random_model(cfg: SbnnConfig, model_seed: int) -> QuantizedModel:
    """Random bitcells, thresholds (drawn independently for every pass, so that a pass
    using another pass's row mismatches) and support mask (keep fraction drawn too)."""
    rng = np.random.default_rng(model_seed)
    keep = float(rng.choice([0.0, 0.3, 0.7, 1.0]))
    return QuantizedModel.random(cfg, rng, mask_keep=keep, per_pass=True)


def plan_config(config_seed: int, first: int, count: int, out_dir: Path):
    """Blocks and images for cases ``first .. first+count-1`` of one config."""
    from .fast import Block, Plan

    cfg = random_config(config_seed)
    images = np.zeros((count, cfg.layers[0]), dtype=np.uint8)
    never = (1 << Sizes(cfg).margin_bits) - 1
    blocks = []
    prog: tuple = ()
    for n in range(count):
        case = first + n
        rng = np.random.default_rng([config_seed, case, 2])  # the case alone: rerunnable
        images[n] = rng.integers(0, 256, cfg.layers[0], dtype=np.uint8)
        model_index = case // CASES_PER_MODEL
        mseed = _model_seed(config_seed, model_index)
        if n == 0 or case % CASES_PER_MODEL == 0:
            model = random_model(cfg, mseed)
            prog = tuple((int(op.value), a, d) for op, a, d in build_image(model).program())
        # Small margins so that exits happen; sometimes the never-exit code.
        margin = never if rng.random() < 0.25 else int(rng.integers(0, 4 * cfg.adc_max + 2))
        margin = min(margin, never)
        budget = int(rng.integers(0, cfg.num_supports + 1))
        prog = prog + ((ProgOp.EXIT_MARGIN.value, 0, margin),
                       (ProgOp.BUDGET.value, 0, int(rng.integers(0, cfg.num_supports + 1))))
        blocks.append(Block((n,), budget, True, margin, None, prog, "equiv", mseed,
                            group=model_index))
        prog = ()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "cases.npz"
    np.savez(path, images=images, labels=np.zeros(count, np.uint8))
    return cfg, Plan(blocks), path


def run_config(config_seed: int, build_root: Path, first: int = 0, count: int = 1000,
               workers: int | None = None) -> EquivalenceRunReport:
    """Run cases ``first .. first+count-1`` of one config (one case reruns a failure),
    with their images in a folder of their own (chunks of one config may run at once)."""
    from .fast import execute

    cfg, plan, images = plan_config(config_seed, first, count, Path(build_root) / "cases"
                                    / f"{config_seed}" / f"{first}+{count}")
    rep = execute(cfg, build_root, plan, images, None, None, workers=workers)
    failing = None
    if rep.mismatches:  # a plan's image index is the case's offset from ``first``
        bad = [p.image for p in rep.per_image if not p.ok]
        failing = f"{config_seed}:{first + min(bad)}" if bad else None
    return EquivalenceRunReport(**vars(rep), failing_case=failing, config=cfg.to_dict())


def parse_case(text: str) -> tuple[int, int]:
    """``'SEED:INDEX'`` -> (seed, index), or ValueError naming the format."""
    seed, sep, index = text.partition(":")
    if not sep or not seed.strip().lstrip("-").isdigit() or not index.strip().isdigit():
        raise ValueError(f"--case must be CONFIG_SEED:INDEX (as printed by the run), "
                         f"got {text!r}")
    return int(seed), int(index)
