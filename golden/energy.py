"""Energy model: per-event energies that turn the controller's counters into energy.

The defaults are illustrative figures of the right order for a 28 nm-class SRAM CIM macro
with 8-bit SAR ADCs (an ADC conversion dominates; a bitline column and a row DAC cost a
fraction of it); they are not measurements. Pass your own with ``--energy FILE`` (JSON with
these field names) to get figures for your process.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["EnergyModel"]


@dataclass(frozen=True)
class EnergyModel:
    macro_eval_pj: float = 2.0  # word-line group select, precharge, sequencing
    column_pj: float = 0.5  # bitline discharge of one enabled column
    dac_pj: float = 0.1  # one row DAC driving a nonzero code
    adc_pj: float = 1.0  # one ADC conversion
    cycle_pj: float = 0.3  # controller logic and clock tree, per cycle

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"energy field '{f.name}' must be a number >= 0, "
                                 f"got {value!r}")

    def energy_pj(self, cycles, macro_evals, column_evals, dac_conversions, adc_conversions):
        """Energy per inference (pJ); works on scalars and numpy arrays alike."""
        return (self.macro_eval_pj * macro_evals + self.column_pj * column_evals
                + self.dac_pj * dac_conversions + self.adc_pj * adc_conversions
                + self.cycle_pj * cycles)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def load(cls, path: str | Path | None) -> EnergyModel:
        if path is None:
            return cls()
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"energy file {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"cannot parse energy file {str(path)!r}: {exc}") from None
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"energy file {str(path)!r}: unknown field(s) "
                             f"{', '.join(sorted(unknown))}; allowed: "
                             f"{', '.join(sorted(known))}")
        return cls(**data)
