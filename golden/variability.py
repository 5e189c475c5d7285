"""Process variability: a seeded Monte Carlo model of the analog macro's mismatch.

Three sources, each drawn once per seed for the whole physical macro (docs/variability.md):

* **bitcell read current** of macro cell (row R, column c): ``I = I0 * (1 + d_Rc)``. Either
  ``cell_sigma`` gives the relative sigma of ``d`` directly, or ``vth_sigma_mv`` gives a
  threshold-voltage sigma mapped through the alpha-power law
  ``I = k (Vgs - Vth)^alpha``: ``1 + d = (1 - dVth / overdrive)^alpha`` (0 below cut-off);
* **row DAC gain**: the DAC of row r of the driven word-line group (the ``active_rows`` DACs
  are shared by every group) has gain ``gain * (1 + e_r)``;
* **ADC offset**: column c's ADC adds ``o_c`` LSB (of its own step) before it rounds down.

The ideal macro computes ``clamp(floor(gain * sum_r x_r w_rc / step))``; the varied one

    code_c = clamp(floor(gain * sum_r x_r (1 + e_r) w_rc (1 + d_Rc) / step + o_c))

Two evaluations of it, both used through ``hwpath.run_hw(..., variation=...)``:

* :class:`FloatMacro`: the factors as drawn (float64): the physical model, for the study;
* :class:`IntegerMacro`: the hardware-exact form the behavioral RTL macro reproduces bit for
  bit. With ``F = frac_bits``: ``C_Rc = round(2^F (1 + d_Rc))``, ``G_r = round(2^F (1 + e_r))``
  (both unsigned ``F + 2`` bits), ``O_c = round(2^F o_c)`` (signed), and

      T_c = gain * sum_r x_r * G_r * w_rc * C_Rc + O_c * 2^(F + shift)
      code_c = clamp(T_c >> (2F + shift), adc_min, adc_max)

  All integers, one arithmetic shift: exactly what an adder tree, a constant multiplier
  and the ADC shift do in the RTL. With every sigma 0, ``C = G = 2^F`` and ``O = 0``, so
  ``T_c = 2^(2F) gain * sum`` and the code is hwpath's ``floor(gain * sum / step)``.

Why this fixed point: the factors are quantized to ``2^-F`` (F = 8: 0.4 %, a rounding error
of 0.11 % rms, well under the smallest sigma studied), the product of the two scales is a
power of two so the ideal path is the special case ``C = G = 2^F`` with no rounding, and
the offset joins the sum before the floor, as a comparator offset does. Factors are clipped
to ``[0, 4 - 2^-F]`` (a read current cannot be negative; 4 is the table's width, a
6-sigma event at sigma 0.5) in both forms, so the two differ only by the rounding of the
factors and codes agree but for sums within that rounding of a step boundary
(tests/test_variability.py).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import Field, model_validator

from sbnn.config import ConfigError, SbnnConfig
from sbnn.params import ParamError, Record

from .qmodel import QuantizedModel

__all__ = ["Variation", "VariationError", "DrawnVariation", "IntegerMacro", "FloatMacro",
           "draw", "physical_index", "load_variation"]

#: The cell and gain factors are unsigned ``frac_bits + 2`` bits: range [0, 4).
FACTOR_INT_BITS = 2


class VariationError(ConfigError):
    """A variability parameter is invalid; the message names the field and what is allowed."""

    prefix = "variation field"


class Variation(Record):
    """Parameters of the mismatch model; all sigmas 0 is the ideal macro.

    Validated at construction: an invalid value raises :class:`VariationError` naming the field.
    """

    _record_name: ClassVar[str] = "variation field"
    _error: ClassVar[type[ParamError]] = VariationError

    seed: int = Field(
        0, ge=0, le=2**63 - 1,
        description="Seed of the draw; the same seed and config give the same tables on "
                    "every machine.")
    cell_sigma: float = Field(
        0.0, ge=0, le=1,
        description="Relative sigma of a bitcell's read current (0.05 = 5 %). Exclusive "
                    "with vth_sigma_mv.")
    vth_sigma_mv: float = Field(
        0.0, ge=0, le=1000,
        description="Threshold-voltage sigma of the read transistor in mV, mapped through "
                    "the alpha-power law with overdrive_mv and alpha. Exclusive with "
                    "cell_sigma.")
    overdrive_mv: float = Field(
        200.0, ge=10, le=2000,
        description="Gate overdrive Vgs - Vth of the read transistor (mV), for the Vth "
                    "mapping.")
    alpha: float = Field(
        1.3, ge=1, le=2,
        description="Alpha-power-law exponent (2 long channel, ~1.3 short channel), for the "
                    "Vth mapping.")
    dac_gain_sigma: float = Field(
        0.0, ge=0, le=1, description="Relative sigma of each row DAC's gain.")
    adc_offset_sigma: float = Field(
        0.0, ge=0, le=64, description="Sigma of each column ADC's offset, in LSB of the ADC "
                                      "code.")
    frac_bits: int = Field(
        8, ge=1, le=12,
        description="Fractional bits F of the integerized factors (hardware-exact path and "
                    "RTL tables).")

    @model_validator(mode="after")
    def _one_cell_sigma(self) -> Variation:
        if self.cell_sigma and self.vth_sigma_mv:
            raise VariationError("vth_sigma_mv", "give either cell_sigma (relative current "
                                                 "sigma) or vth_sigma_mv, not both")
        return self

    @property
    def is_ideal(self) -> bool:
        return not (self.cell_sigma or self.vth_sigma_mv or self.dac_gain_sigma
                    or self.adc_offset_sigma)


def load_variation(path: str | Path) -> Variation:
    """A :class:`Variation` from a JSON or TOML file (fields at top level or under
    ``[variation]``)."""
    return Variation.load_file(path, "--variation", "variation")


@dataclass(frozen=True)
class DrawnVariation:
    """One Monte Carlo sample for one macro: real factors and their integer forms.

    Indexed physically: ``cell[R, c]`` for macro row R (word-line group * active_rows + r)
    and column c, ``row_gain[r]`` for the DAC of row r of the driven group, ``adc_offset[c]``.
    """

    config: SbnnConfig
    variation: Variation
    cell: np.ndarray  # float64 (macro_rows, macro_cols): 1 + d, clipped
    row_gain: np.ndarray  # float64 (active_rows,): 1 + e, clipped
    adc_offset: np.ndarray  # float64 (macro_cols,): LSB
    cell_int: np.ndarray  # int64, round(2^F cell)
    row_gain_int: np.ndarray  # int64, round(2^F row_gain)
    adc_offset_int: np.ndarray  # int64, round(2^F adc_offset)

    @property
    def frac_bits(self) -> int:
        return self.variation.frac_bits

    def save(self, path: str | Path) -> Path:
        """The drawn tables as .npz, with the config and the parameters embedded."""
        path = Path(path)
        np.savez_compressed(
            path, config_json=np.frombuffer(self.config.to_json().encode(), np.uint8),
            variation_json=np.frombuffer(self.variation.to_json().encode(), np.uint8),
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("config", "variation")})
        return path

    @classmethod
    def load(cls, path: str | Path) -> DrawnVariation:
        with np.load(path) as data:
            cfg = SbnnConfig.from_dict(json.loads(bytes(data["config_json"]).decode()))
            var = Variation.from_dict(json.loads(bytes(data["variation_json"]).decode()))
            arrays = {f.name: data[f.name] for f in dataclasses.fields(cls)
                      if f.name not in ("config", "variation")}
        return cls(cfg, var, **arrays)


def _factor(z: np.ndarray, sigma: float, frac_bits: int) -> np.ndarray:
    return np.clip(1.0 + sigma * z, 0.0, _factor_max(frac_bits))


def _factor_max(frac_bits: int) -> float:
    return ((1 << (frac_bits + FACTOR_INT_BITS)) - 1) / (1 << frac_bits)


def _to_int(values: np.ndarray, frac_bits: int) -> np.ndarray:
    # np.rint: round half to even, the same on every platform (the table must not depend
    # on the machine that draws it).
    return np.rint(values * (1 << frac_bits)).astype(np.int64)


def draw(variation: Variation, config: SbnnConfig) -> DrawnVariation:
    """Draw every factor of the macro of ``config`` from ``variation.seed``.

    Each source has its own child stream of the seed and is drawn as standard normals scaled
    by its sigma: changing one sigma never changes the pattern of another source, and a sigma
    sweep at one seed scales the same pattern (common random numbers: smoother curves).
    """
    v, f = variation, variation.frac_bits
    cell_rng, row_rng, col_rng = (np.random.default_rng(s) for s in
                                  np.random.SeedSequence(v.seed).spawn(3))
    z = cell_rng.standard_normal((config.macro_rows, config.macro_cols))
    if v.vth_sigma_mv:
        # alpha-power law: I / I0 = ((Vov - dVth) / Vov)^alpha, no current below cut-off.
        cell = np.clip(1.0 - v.vth_sigma_mv * z / v.overdrive_mv, 0.0, None) ** v.alpha
        cell = np.clip(cell, 0.0, _factor_max(f))
    else:
        cell = _factor(z, v.cell_sigma, f)
    row = _factor(row_rng.standard_normal(config.active_rows), v.dac_gain_sigma, f)
    off_lim = float(1 << (config.adc_bits - 1))  # an offset past the full range is a dead ADC
    off = np.clip(v.adc_offset_sigma * col_rng.standard_normal(config.macro_cols),
                  -off_lim, off_lim)
    return DrawnVariation(config, variation, cell, row, off, _to_int(cell, f),
                          _to_int(row, f), _to_int(off, f))


def physical_index(config: SbnnConfig, layer: int, plane: int) -> tuple[np.ndarray, np.ndarray]:
    """Macro row (m, n) and column (m,) holding plane ``plane`` of weight (neuron j, input i)
    of ``layer``, per the tiling of docs/architecture.md (sbnn/tiling.py)."""
    return config.tiling.macro_rows(layer), config.tiling.plane_columns(layer, plane)


class _Macro:
    """What ``hwpath.run_hw(..., variation=...)`` calls for every (layer, plane, row block)."""

    def __init__(self, drawn: DrawnVariation):
        self.drawn = drawn
        self._weights: dict = {}

    def _layer(self, model: QuantizedModel, layer: int, plane: int):
        # Cached per planes array (masked copies of a model share it); the array is kept in
        # the entry so its id cannot be reused by another while the entry lives.
        planes = model.planes[layer]
        key = (id(planes), layer, plane)
        hit = self._weights.get(key)
        if hit is None or hit[0] is not planes:
            hit = self._weights[key] = (planes, *self._build(model, layer, plane))
        return hit[1:]

    def _check(self, model: QuantizedModel) -> None:
        if model.config != self.drawn.config:
            raise ValueError("the variation was drawn for a different config than the model's")


class IntegerMacro(_Macro):
    """The hardware-exact integerized macro (the RTL's arithmetic)."""

    def _build(self, model, layer, plane):
        self._check(model)
        d, a = self.drawn, model.config.active_rows
        rows, cols = physical_index(model.config, layer, plane)
        g = d.row_gain_int[model.config.tiling.tile_rows(layer)]
        w = model.planes[layer][plane].astype(np.int64) * d.cell_int[rows, cols[:, None]] * g
        # float64 BLAS is exact while every partial sum stays an integer below 2**53.
        bound = int(np.abs(w).max(initial=0)) * ((1 << model.config.dac_bits) - 1) * a
        if bound >= 1 << 52:
            raise ValueError("integerized sums would exceed float64's exact range; lower "
                             "frac_bits")
        return w.astype(np.float64), d.adc_offset_int[cols]

    def adc_codes(self, model: QuantizedModel, layer: int, plane: int, rows: slice,
                  x: np.ndarray) -> np.ndarray:
        """(B, m) ADC codes of one evaluation of plane ``plane`` over input rows ``rows``."""
        cfg, f = model.config, self.drawn.frac_bits
        w, off = self._layer(model, layer, plane)
        shift = cfg.adc_steps[layer].bit_length() - 1
        s = np.rint(x @ w[:, rows].T).astype(np.int64) * cfg.plane_gains[plane]
        t = s + (off << (f + shift))
        return np.clip(t >> (2 * f + shift), cfg.adc_min, cfg.adc_max)


class FloatMacro(_Macro):
    """The physical model with the factors as drawn (no fixed-point rounding)."""

    def _build(self, model, layer, plane):
        self._check(model)
        d = self.drawn
        rows, cols = physical_index(model.config, layer, plane)
        w = model.planes[layer][plane] * d.cell[rows, cols[:, None]] \
            * d.row_gain[model.config.tiling.tile_rows(layer)]
        return w, d.adc_offset[cols]

    def adc_codes(self, model: QuantizedModel, layer: int, plane: int, rows: slice,
                  x: np.ndarray) -> np.ndarray:
        cfg = model.config
        w, off = self._layer(model, layer, plane)
        step = cfg.adc_steps[layer]
        s = (x @ w[:, rows].T) * (cfg.plane_gains[plane] / step) + off
        return np.clip(np.floor(s), cfg.adc_min, cfg.adc_max).astype(np.int64)
