"""Energy model: per-event energies that turn the controller's counters into energy.

The defaults are grounded where a published number exists and marked ASSUMPTION where none
does (``ENERGY_SOURCES`` says, per field, where each came from and how it was derived;
docs/silicon.md prints it). The bitline figure comes from a measured binary SRAM
compute-in-memory macro; the controller's per-cycle energy from this project's own SKY130
synthesis and OpenSTA power (docs/silicon.md). Pass your own with ``--energy FILE`` (JSON
with these field names) to get figures for your process and macro.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["EnergyModel", "ENERGY_SOURCES", "KHWA_COLUMN_PJ", "VALAVI_COLUMN_PJ"]


#: Published SRAM compute-in-memory macros the defaults are derived from.
KHWA_ISSCC18 = ("Khwa et al., ISSCC 2018, 31.5: 65 nm 4 Kb 6T SRAM computing-in-memory "
                "unit-macro, binary DNN (0/1 inputs, +-1 weights), 55.8 TOPS/W")
VALAVI_JSSC19 = ("Valavi et al., IEEE JSSC 54(6), 2019: 65 nm 2.4 Mb 64-tile charge-domain "
                 "in-memory-computing accelerator, 8T1C bitcell, 866 TOPS/W (binary)")
#: Ops in one column evaluation, as the macro papers count them: 2 per bitcell
#: multiply-accumulate, over the default design's 64 active rows.
COLUMN_OPS = 2 * 64
#: pJ per column evaluation at each macro's efficiency: ops / (TOPS/W) (1 TOPS/W = 1 op/pJ).
KHWA_COLUMN_PJ = round(COLUMN_OPS / 55.8, 3)  # 2.294
VALAVI_COLUMN_PJ = round(COLUMN_OPS / 866.0, 3)  # 0.148
#: Controller energy per clock cycle, from docs/silicon.md (default design, SKY130 hd tt,
#: OpenSTA report_power at a 10 % toggle rate, no clock gating) divided by 100 MHz.
CONTROLLER_CYCLE_PJ = 1659.2  # 165.921 mW / 100 MHz (the retimed controller, 2026-12-03)

ENERGY_SOURCES: dict[str, str] = {
    "macro_eval_pj": "0: word-line drive, precharge and sequencing are inside the macro-level "
                     "efficiency that column_pj is derived from (counted there, not twice)",
    "column_pj": f"{KHWA_ISSCC18}: {COLUMN_OPS} ops (64 rows x 2) / 55.8 TOPS/W = "
                 f"{KHWA_COLUMN_PJ} pJ per column evaluation, that macro's readout included; "
                 f"{VALAVI_JSSC19} gives {VALAVI_COLUMN_PJ} pJ the same way (an optimistic "
                 "bound; pass it with --energy). Both are 65 nm silicon, not scaled",
    "dac_pj": "ASSUMPTION, no cited source: 0.1 pJ per row driven with a nonzero code",
    "adc_pj": "ASSUMPTION, no cited source: an 8-bit SAR ADC at a Walden figure of merit of "
              "5 fJ per conversion step, 5 fJ x 2^8 = 1.28 pJ per conversion (column_pj "
              "already holds a 1-bit readout, so this counts the extra ADC bits high)",
    "cycle_pj": f"this project's SKY130 synthesis of the default controller: OpenSTA "
                f"report_power (10 % toggle rate, ideal clock, no clock gating) / 100 MHz = "
                f"{CONTROLLER_CYCLE_PJ:g} pJ per cycle (docs/silicon.md; other configs there "
                "use their own power)",
}


@dataclass(frozen=True)
class EnergyModel:
    """Per-event energies in pJ; ``ENERGY_SOURCES`` gives each default's derivation."""

    macro_eval_pj: float = 0.0  # per evaluation (start pulse)
    column_pj: float = KHWA_COLUMN_PJ  # one enabled column over the active rows
    dac_pj: float = 0.1  # one row DAC driving a nonzero code (ASSUMPTION)
    adc_pj: float = 1.28  # one ADC conversion (ASSUMPTION)
    cycle_pj: float = CONTROLLER_CYCLE_PJ  # controller logic and clock, per cycle

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
