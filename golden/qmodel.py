"""The deployed network as integers: what the hardware computes, before it is tiled.

A :class:`QuantizedModel` holds, per weight layer, the K+1 binary planes (+-1), the integer
thresholds in ADC-code units and the support-column mask. It is what training exports
(golden/fold.py), what the hardware-exact path runs (golden/hwpath.py) and what the tiler
turns into macro words (gen/image.py).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbnn.config import ConfigError, SbnnConfig

__all__ = ["QuantizedModel", "ModelFileError"]


class ModelFileError(ValueError):
    """A model file is missing, malformed, or does not fit the configuration."""


@dataclass(frozen=True)
class QuantizedModel:
    """Integer parameters of a supported BNN for one :class:`SbnnConfig`.

    ``planes[l]``: int8 array (K+1, m, n) of +-1; plane 0 is the base plane B0.
    ``thresholds[l]``: int64 array (m,); hidden neuron j fires (+1) iff acc_j >= theta_j,
    output logit j is acc_j - theta_j.
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
            if t.shape != (m,):
                raise ModelFileError(f"layer {i}: thresholds have shape {t.shape}, "
                                     f"config needs ({m},)")
            if t.size and (t.min() < -lim or t.max() >= lim):
                raise ModelFileError(f"layer {i}: thresholds outside the "
                                     f"{cfg.threshold_bits}-bit signed range")
            if k.shape != (m, cfg.num_supports):
                raise ModelFileError(f"layer {i}: support_mask has shape {k.shape}, config "
                                     f"needs ({m}, {cfg.num_supports})")

    @property
    def support_columns_kept(self) -> float:
        """Fraction of support columns left enabled (1.0 when K = 0)."""
        total = sum(k.size for k in self.support_mask)
        return 1.0 if total == 0 else sum(int(k.sum()) for k in self.support_mask) / total

    def with_mask(self, masks: tuple[np.ndarray, ...]) -> QuantizedModel:
        return QuantizedModel(self.config, self.planes, self.thresholds,
                              tuple(np.asarray(m, dtype=bool) for m in masks))

    # ---------------------------------------------------------------- files

    def save(self, path: str | Path) -> Path:
        """Write the model as .npz (bits packed) with the config embedded."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "config_json": np.frombuffer(self.config.to_json().encode(), dtype=np.uint8)}
        for i in range(self.config.num_layers):
            arrays[f"planes{i}"] = np.packbits(self.planes[i] > 0, axis=-1)
            arrays[f"thresholds{i}"] = self.thresholds[i].astype(np.int64)
            arrays[f"mask{i}"] = self.support_mask[i].astype(np.uint8)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, config: SbnnConfig | None = None) -> QuantizedModel:
        """Load a model; with ``config`` given, it must equal the embedded one."""
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"model file {str(path)!r} does not exist")
        try:
            with np.load(path) as data:
                fields = json.loads(bytes(data["config_json"]).decode())
                if not isinstance(fields, dict):
                    raise ModelFileError(f"{path}: embedded config is not a JSON object")
                stored = SbnnConfig.from_dict(fields)
                planes, thresholds, masks = [], [], []
                for i in range(stored.num_layers):
                    n = stored.layers[i]
                    bits = np.unpackbits(data[f"planes{i}"], axis=-1, count=n)
                    planes.append(np.where(bits > 0, 1, -1).astype(np.int8))
                    thresholds.append(data[f"thresholds{i}"].astype(np.int64))
                    masks.append(data[f"mask{i}"].astype(bool))
        except ConfigError as exc:
            raise ModelFileError(f"{path}: embedded config is invalid: {exc}") from None
        except ModelFileError:
            raise
        except (KeyError, ValueError, TypeError, OSError, EOFError,
                zipfile.BadZipFile) as exc:
            raise ModelFileError(f"{path}: not a valid sbnn model file ({exc})") from None
        if config is not None and config != stored:
            diff = [k for k, v in config.to_dict().items() if stored.to_dict()[k] != v]
            raise ModelFileError(f"{path} was made for a different config (fields differ: "
                                 f"{', '.join(diff)}); pass the matching --config")
        return cls(stored, tuple(planes), tuple(thresholds), tuple(masks))

    @classmethod
    def random(cls, config: SbnnConfig, rng: np.random.Generator,
               mask_keep: float = 0.7) -> QuantizedModel:
        """Random parameters, for tests and equivalence runs."""
        planes, thresholds, masks = [], [], []
        for i in range(config.num_layers):
            n, m = config.layers[i], config.layers[i + 1]
            planes.append(rng.choice(np.array([-1, 1], dtype=np.int8), (config.planes, m, n)))
            spread = max(2, config.row_blocks(i) * config.adc_max // 4)
            thresholds.append(rng.integers(-spread, spread, m).astype(np.int64))
            masks.append(rng.random((m, config.num_supports)) < mask_keep)
        return cls(config, tuple(planes), tuple(thresholds), tuple(masks))
