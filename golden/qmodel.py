"""The deployed network as integers: what the hardware computes, before it is tiled.

A :class:`QuantizedModel` holds, per weight layer, the K+1 binary planes (+-1), the integer
thresholds in ADC-code units (one row per pass: pass p's answer is a one-shot budget-p model)
and the support-column mask. It is what training exports
(golden/fold.py), what the hardware-exact path runs (golden/hwpath.py) and what the tiler
turns into macro words (gen/image.py).

File format (``.npz``, :meth:`QuantizedModel.save`): ``format_version`` (int64 scalar,
:data:`FORMAT_VERSION`; a file without it is version 1), ``config_json`` (the UTF-8 JSON
snapshot of the :class:`SbnnConfig`, as uint8), and per weight layer ``i``: ``planes{i}``
(uint8 (K+1, m, ceil(n/8)), the +-1 bits packed along the inputs, 1 = +1, padding bits 0),
``thresholds{i}`` (int64 (K+1, m): row p is used in pass p; version 1 files hold (m,), one
row for every pass, and load broadcast) and ``mask{i}`` (uint8 0/1 (m, K)).
:meth:`QuantizedModel.load` checks all of it (names, dtypes, shapes, packed lengths, values,
the config) before using any.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbnn.config import ConfigError, SbnnConfig, parse_record_text

__all__ = ["QuantizedModel", "ModelFileError", "FORMAT_VERSION"]

#: Model-file format version, stored as the array ``format_version``. Files written before
#: the number existed are version 1. Version 2: thresholds per pass, (K+1, m).
FORMAT_VERSION = 2
#: The first version whose thresholds{i} arrays have the pass dimension.
PER_PASS_VERSION = 2
VERSION_KEY = "format_version"


class ModelFileError(ValueError):
    """A model file is missing, malformed, or does not fit the configuration."""


@dataclass(frozen=True)
class QuantizedModel:
    """Integer parameters of a supported BNN for one :class:`SbnnConfig`.

    ``planes[l]``: int8 array (K+1, m, n) of +-1; plane 0 is the base plane B0.
    ``thresholds[l]``: int64 array (K+1, m); row p holds the thresholds used in pass p:
    hidden neuron j fires (+1) in pass p iff acc_j >= thresholds[l][p, j], output logit j of
    pass p is acc_j - thresholds[l][p, j]. The constructor also takes an (m,) array (one
    threshold per neuron for every pass) and stores it broadcast to (K+1, m).
    ``support_mask[l]``: bool array (m, K); False = support column (j, k+1) never evaluated.
    """

    config: SbnnConfig
    planes: tuple[np.ndarray, ...]
    thresholds: tuple[np.ndarray, ...]
    support_mask: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        cfg = self.config
        if not (len(self.planes) == len(self.thresholds) == len(self.support_mask)
                == cfg.num_layers):
            raise ModelFileError(f"model has {len(self.planes)} layers but the config's "
                                 f"layers {list(cfg.layers)} give {cfg.num_layers}")
        lim = 1 << (cfg.threshold_bits - 1)
        for i in range(cfg.num_layers):
            n, m = cfg.layers[i], cfg.layers[i + 1]
            p, t, k = self.planes[i], self.thresholds[i], self.support_mask[i]
            want = (cfg.planes, m, n)
            if p.shape != want:
                raise ModelFileError(f"layer {i}: planes have shape {p.shape}, config needs "
                                     f"{want} (K+1, neurons, inputs)")
            if not np.isin(p, (-1, 1)).all():
                raise ModelFileError(f"layer {i}: planes must hold only -1/+1")
            if t.shape not in ((m,), (cfg.planes, m)):
                raise ModelFileError(f"layer {i}: thresholds have shape {t.shape}, config "
                                     f"needs ({cfg.planes}, {m}) (passes, neurons) or ({m},) "
                                     f"(one row for every pass)")
            # Checked before any comparison or cast: a float NaN would warn, then wrap.
            if t.dtype.kind not in "iu":
                raise ModelFileError(f"layer {i}: thresholds must be integers, got "
                                     f"{t.dtype}")
            if t.size and (int(t.min()) < -lim or int(t.max()) >= lim):
                raise ModelFileError(f"layer {i}: thresholds outside the "
                                     f"{cfg.threshold_bits}-bit signed range "
                                     f"{-lim}..{lim - 1}")
            if k.shape != (m, cfg.num_supports):
                raise ModelFileError(f"layer {i}: support_mask has shape {k.shape}, config "
                                     f"needs ({m}, {cfg.num_supports})")
            if k.dtype != bool and not (k.dtype.kind in "iu" and np.isin(k, (0, 1)).all()):
                raise ModelFileError(f"layer {i}: support_mask must hold only 0/1 (or "
                                     f"False/True), got {k.dtype} values")
        reach = cfg.threshold_reach
        out = self.thresholds[-1]
        if out.size and (int(out.min()) < -reach or int(out.max()) > reach):
            raise ModelFileError(f"layer {cfg.num_layers - 1} (output): thresholds outside "
                                 f"{-reach}..{reach}, the accumulator's range: the logits "
                                 f"acc - theta would not fit {cfg.threshold_bits} bits")
        # Frozen record: the per-pass form is stored once, here, so readers index [pass].
        # A hidden threshold beyond the accumulator's range decides exactly as the range's
        # end (every reachable sum is on the same side): stored at the end, so that the
        # RTL's acc - theta cannot overflow threshold_bits (older folds used +-2**acc_bits).
        object.__setattr__(self, "thresholds", tuple(
            np.clip(np.broadcast_to(t, (cfg.planes, t.shape[-1])), -reach, reach)
            .astype(np.int64) if i < cfg.num_layers - 1 else
            np.broadcast_to(t, (cfg.planes, t.shape[-1])).astype(np.int64)
            for i, t in enumerate(self.thresholds)))

    @property
    def support_columns_kept(self) -> float:
        """Fraction of support columns left enabled (1.0 when K = 0)."""
        total = sum(k.size for k in self.support_mask)
        return 1.0 if total == 0 else sum(int(k.sum()) for k in self.support_mask) / total

    @property
    def per_pass_thresholds(self) -> bool:
        """True when some layer uses different thresholds in different passes."""
        return any(bool((t != t[:1]).any()) for t in self.thresholds)

    def with_mask(self, masks: tuple[np.ndarray, ...]) -> QuantizedModel:
        return QuantizedModel(self.config, self.planes, self.thresholds,
                              tuple(np.asarray(m, dtype=bool) for m in masks))

    # ---------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Write the model as .npz (bits packed) with the config and format version embedded,
        atomically (a temporary file renamed into place)."""
        from sbnn.fileio import atomic_file

        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            VERSION_KEY: np.array(FORMAT_VERSION, dtype=np.int64),
            "config_json": np.frombuffer(self.config.to_json().encode(), dtype=np.uint8)}
        for i in range(self.config.num_layers):
            arrays[f"planes{i}"] = np.packbits(self.planes[i] > 0, axis=-1)
            arrays[f"thresholds{i}"] = self.thresholds[i].astype(np.int64)
            arrays[f"mask{i}"] = self.support_mask[i].astype(np.uint8)
        with atomic_file(path) as tmp:
            np.savez_compressed(tmp, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path, config: SbnnConfig | None = None) -> QuantizedModel:
        """Load and validate a model in full; with ``config`` given, it must equal the
        embedded one but for the implementation fields (``SbnnConfig.IMPLEMENTATION_FIELDS``:
        SRAM macros, number of macros and their interval), which the model then takes from
        ``config``. Every problem is one :class:`ModelFileError` line."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file {str(path)!r} does not exist")
        arrays = _read_npz(path)
        version = _format_version(path, arrays)
        stored = _embedded_config(path, arrays)
        planes, thresholds, masks = _layers(path, arrays, stored, version)
        if config is not None:
            # the same network built another way: the model takes the arrangement asked for
            try:
                stored = stored.replace(**{f: getattr(config, f)
                                           for f in SbnnConfig.IMPLEMENTATION_FIELDS})
            except ConfigError:
                pass  # not valid with the model's other fields: the difference is named below
        if config is not None and config != stored:
            a, b = config.to_dict(), stored.to_dict()
            diff = [k for k in {**a, **b} if a.get(k) != b.get(k)]
            raise ModelFileError(f"{path} was made for a different config (fields differ: "
                                 f"{', '.join(diff)}); pass the matching --config")
        try:
            return cls(stored, planes, thresholds, masks)
        except ModelFileError as exc:
            raise _bad(path, str(exc)) from None

    @classmethod
    def random(cls, config: SbnnConfig, rng: np.random.Generator,
               mask_keep: float = 0.7, per_pass: bool = False) -> QuantizedModel:
        """Random parameters, for tests and equivalence runs. ``per_pass``: an independent
        threshold for every pass (K+1, m), about 3 % of the hidden ones at the ends of the
        accumulator's range (constant neurons); otherwise one row shared by every pass,
        drawn as before the pass dimension existed (the same random stream)."""
        planes, thresholds, masks = [], [], []
        for i in range(config.num_layers):
            n, m = config.layers[i], config.layers[i + 1]
            planes.append(rng.choice(np.array([-1, 1], dtype=np.int8), (config.planes, m, n)))
            spread = max(2, config.row_blocks(i) * config.adc_max // 4)
            shape = (config.planes, m) if per_pass else m
            theta = rng.integers(-spread, spread, shape).astype(np.int64)
            if per_pass and i < config.num_layers - 1:
                # constant neurons (a budget's batch-norm scale 0): thresholds at the ends
                # of the accumulator's range, where the RTL's acc - theta is widest
                ends = rng.random(shape) < 0.03
                reach = config.threshold_reach
                theta[ends] = np.where(rng.random(int(ends.sum())) < 0.5, -reach, reach)
            thresholds.append(theta)
            masks.append(rng.random((m, config.num_supports)) < mask_keep)
        return cls(config, tuple(planes), tuple(thresholds), tuple(masks))


# ---------------------------------------------------------------- model-file validation

def _bad(path: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{path}: not a valid sbnn model file: {what}; re-export it "
                          f"(sbnn train / sbnn prune write valid files)")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz, read (and decompressed) now: damage shows here, once."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # .npy content: one bare array
            raise ValueError("a single .npy array, not an .npz archive")
        with data:
            return {name: data[name] for name in data.files}
    except Exception as exc:  # noqa: BLE001 - zip, zlib, npy header: one clear line
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise _bad(path, f"cannot read it ({msg})") from None


def _format_version(path: Path, arrays: dict[str, np.ndarray]) -> int:
    """The file's format version; a file without the number predates it: version 1."""
    if VERSION_KEY not in arrays:
        return 1
    v = arrays[VERSION_KEY]
    if v.shape != () or v.dtype.kind not in "iu":
        raise _bad(path, f"{VERSION_KEY} must be one integer, got {v.dtype} {v.shape}")
    if not 1 <= int(v) <= FORMAT_VERSION:
        raise ModelFileError(f"{path}: model format version {int(v)} is not one this "
                             f"sbnn reads (1..{FORMAT_VERSION}); update sbnn or "
                             f"re-export the model")
    return int(v)


def _embedded_config(path: Path, arrays: dict[str, np.ndarray]) -> SbnnConfig:
    if "config_json" not in arrays:
        raise _bad(path, "missing array 'config_json' (the embedded config)")
    raw = arrays["config_json"]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _bad(path, f"config_json must be a 1-D uint8 array, got {raw.dtype} "
                         f"{raw.shape}")
    try:
        fields = parse_record_text(bytes(raw).decode(), toml=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(path, f"config_json is not JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(fields, dict):
        raise ModelFileError(f"{path}: embedded config is not a JSON object")
    try:
        return SbnnConfig.from_dict(fields)
    except ConfigError as exc:
        raise ModelFileError(f"{path}: embedded config is invalid: {exc}") from None


def _threshold_shapes(version: int, cfg: SbnnConfig, m: int) -> tuple[tuple[int, ...], ...]:
    """The thresholds{i} shapes a file of ``version`` may hold for a layer of m neurons:
    version 1 one row (m,); later ones the rows per pass (K+1, m), or one row (m,) that
    every pass uses."""
    return ((m,),) if version < PER_PASS_VERSION else ((cfg.planes, m), (m,))


def _layers(path: Path, arrays: dict[str, np.ndarray], cfg: SbnnConfig, version: int):
    """Unpacked planes, thresholds and masks, each array checked before it is used."""
    names = [f"{kind}{i}" for i in range(cfg.num_layers)
             for kind in ("planes", "thresholds", "mask")]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise _bad(path, f"missing array(s) {', '.join(missing)} for the embedded config's "
                         f"{cfg.num_layers} layer(s)")
    extra = sorted(set(arrays) - {*names, "config_json", VERSION_KEY})
    if extra:
        raise _bad(path, f"unexpected array(s) {', '.join(extra)} (the embedded config has "
                         f"{cfg.num_layers} layer(s))")
    planes, thresholds, masks = [], [], []
    for i in range(cfg.num_layers):
        n, m = cfg.layers[i], cfg.layers[i + 1]
        packed, t, k = arrays[f"planes{i}"], arrays[f"thresholds{i}"], arrays[f"mask{i}"]
        want = (cfg.planes, m, -(-n // 8))
        if packed.dtype != np.uint8 or packed.shape != want:
            raise _bad(path, f"layer {i}: planes{i} is {packed.dtype} {packed.shape}, the "
                             f"config needs uint8 {want} (K+1, neurons, inputs/8 packed)")
        if n % 8 and (packed[..., -1] & ((1 << (8 - n % 8)) - 1)).any():
            raise _bad(path, f"layer {i}: planes{i} has bits set past the layer's {n} "
                             f"inputs")
        if t.dtype.kind == "f" and not np.isfinite(t).all():
            raise _bad(path, f"layer {i}: thresholds{i} holds NaN or infinite values")
        shapes = _threshold_shapes(version, cfg, m)
        if t.dtype.kind not in "iu" or t.shape not in shapes:
            raise _bad(path, f"layer {i}: thresholds{i} is {t.dtype} {t.shape}, a version "
                             f"{version} file with this config needs integers "
                             f"{' or '.join(map(str, shapes))}")
        if k.dtype not in (np.uint8, np.bool_) or k.shape != (m, cfg.num_supports):
            raise _bad(path, f"layer {i}: mask{i} is {k.dtype} {k.shape}, the config needs "
                             f"uint8 ({m}, {cfg.num_supports}) (the support_mask)")
        if k.dtype == np.uint8 and not np.isin(k, (0, 1)).all():
            raise _bad(path, f"layer {i}: mask{i} must hold only 0/1")
        bits = np.unpackbits(packed, axis=-1, count=n)
        planes.append(np.where(bits > 0, 1, -1).astype(np.int8))
        thresholds.append(np.broadcast_to(t, (cfg.planes, m)).astype(np.int64))
        masks.append(k.astype(bool))
    return tuple(planes), tuple(thresholds), tuple(masks)
