"""docs/silicon.md and docs/silicon.json: the silicon figures of gen/silicon.py, with energy.

Energy per inference comes from the golden model's counters (studies/sweep.py
``pass_counters``: the same counters the RTL reports, confirmed by the cosim) times the
per-event energies of golden/energy.py, whose macro figures are derived from published SRAM
compute-in-memory macros, plus the controller's own power from OpenSTA at the clock.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from sbnn.config import SbnnConfig
from sbnn.golden.energy import ENERGY_SOURCES, EnergyModel

__all__ = ["energy_rows", "markdown", "write_docs", "JSON_KEYS"]

#: The keys every silicon.json object has (issue 17's list), first in each object.
JSON_KEYS = ("config", "liberty", "clock_mhz", "area_um2", "logic_area_um2", "cells",
             "flip_flops", "sram_bits", "wns_ns", "tns_ns", "fmax_mhz")


def energy_rows(cfg: SbnnConfig, model, pixels: np.ndarray, power_mw: float,
                fmax_mhz: float, energy: EnergyModel | None = None) -> list[dict]:
    """Per budget: mean cycles, macro energy, controller energy, TOPS/W and throughput.

    Ops are counted as macro papers count them: 2 per bitcell MAC, active_rows MACs per
    enabled column per evaluation. The controller's energy per cycle is its OpenSTA power
    divided by the clock.
    """
    from sbnn.golden.hwpath import schedule
    from sbnn.studies.sweep import pass_counters

    energy = energy or EnergyModel()
    ctl_pj_per_cycle = power_mw * 1e-3 / (cfg.clock_mhz * 1e6) * 1e12
    rows = []
    for budget in range(cfg.num_supports + 1):
        sched = schedule(model, budget)
        counters = pass_counters(model, sched, pixels)[sched.passes[-1]]
        mean = {k: float(np.mean(v)) for k, v in counters.items()}
        macro_pj = float(np.mean(energy.energy_pj(**{**counters, "cycles": 0})))
        ctl_pj = ctl_pj_per_cycle * mean["cycles"]
        ops = 2 * cfg.active_rows * mean["column_evals"]
        total = macro_pj + ctl_pj
        rows.append({
            "budget": budget, "cycles": mean["cycles"], "macro_evals": mean["macro_evals"],
            "column_evals": mean["column_evals"], "macro_pj": round(macro_pj, 1),
            "controller_pj": round(ctl_pj, 1), "total_pj": round(total, 1),
            "ops": ops, "macro_tops_w": round(ops / macro_pj, 2) if macro_pj else None,
            "system_tops_w": round(ops / total, 3),
            "inferences_per_s": round(cfg.clock_mhz * 1e6 / mean["cycles"]),
            "inferences_per_s_fmax": round(fmax_mhz * 1e6 / mean["cycles"]),
        })
    return rows


def _fmt(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table: the header, its rule, one line per row of cell texts."""
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + \
        ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _table(results: list[dict]) -> list[str]:
    header = ["config", "layers", "clock", "area um^2", "logic area um^2", "cells",
              "flip-flops", "register-file bits", "SRAM bits", "WNS ns", "TNS ns",
              "hold WNS ns", "Fmax MHz", "power mW"]
    return _markdown_table(header, [
        [r["config"], "-".join(map(str, r["layers"])), f"{r['clock_mhz']:g} MHz",
         _fmt(r["area_um2"]), _fmt(r["logic_area_um2"]), _fmt(r["cells"]),
         _fmt(r["flip_flops"]), _fmt(r["memory_bits"]), _fmt(r["sram_bits"]),
         f"{r['wns_ns']:.3f}", f"{r['tns_ns']:.3f}", f"{r['whs_ns']:.3f}",
         f"{r['fmax_mhz']:.1f}", f"{r['power_mw']:.1f}"] for r in results])


def _paths(results: list[dict]) -> list[str]:
    header = ["config", "from (register)", "to (register)", "stages", "arrival ns",
              "required ns", "slack ns", "largest fanout on it"]
    paths = [r["critical_path"] for r in results]
    return _markdown_table(header, [
        [r["config"], f"`{p.get('start_register') or p.get('startpoint')}`",
         f"`{p.get('end_register') or p.get('endpoint')}`", p.get("stages"),
         p.get("arrival_ns"), p.get("required_ns"), p.get("slack_ns"), p.get("max_fanout")]
        for r, p in zip(results, paths)])


#: Where a worst path ends, by its end register's name (first match), in the cycles of
#: docs/architecture.md ("What each cycle holds").
_PLACES = (
    ("ctrl.decision.cand", "the threshold stage's cycle S: the threshold store's read "
     "register or the block's sums, logit = sum - theta and the first levels of the top-two "
     "tournament (rtl/exit.py `ExitDecision._tournament`), into the registered candidates"),
    ("ctrl.decision.running", "the merge of an output block's tournament winner into the "
     "running node, the cycle after its stage cycle"),
    ("ctrl.counters.", "the counters (rtl/counters.py)"),
    ("ctrl.ctrl_state", "the exit decision's cycle D: the rest of the tournament, the test "
     "top1 - top2 >= EXIT_MARGIN and the state register"),
    ("ctrl.decision.", "the exit decision's cycle D"),
    ("ctrl.activations.", "the threshold stage's activation write (cycle S)"),
    ("ctrl.accumulator.", "the accumulation of the ADC codes (cycle R)"),
)


def _path_places(results: list[dict]) -> list[str]:
    """One line per design: where its worst path is, then how it was before the retiming."""
    lines = []
    for r in results:
        end = r["critical_path"].get("end_register") or ""
        place = next((text for prefix, text in _PLACES if end.startswith(prefix)), None)
        if place:
            lines.append(f"* {r['config']}: {place}.")
    return [*lines, "",
            "Before the retiming of issue 17 (commit 68f1964, this flow, measured again on "
            "the loaded machine: its committed figures predated the per-pass threshold "
            "store): default WNS -1.234 ns, TNS -46.919 ns, Fmax 89.0 MHz, 685,120 um^2, "
            "86,672 cells, 16,495 flip-flops, worst path `ctrl.sequencer.row_block[1]` to "
            "`ctrl.counters.dac_conversions[31]` (the start cycle: the row-block select of "
            "the activation buffers, a 64-row population count, the 32-bit addition); "
            "mnist_large WNS -0.416 ns, TNS -62.052 ns, Fmax 96.0 MHz, 3,427,591 um^2, 411,486 "
            "cells, 87,229 flip-flops, worst path `ctrl.sequencer.global_col_block[0]` to "
            "`ctrl.counters.column_evals[31]` (the start cycle again: the column-enable "
            "read, the population count, the addition). The counters' additions a cycle "
            "after the start, the threshold store's and the first-layer store's registered "
            "reads and the tournament split over the stage and decision cycles took them "
            "out (docs/architecture.md, \"What each cycle holds\"). High-fanout selects are "
            "buffered by ABC here: the largest fanout on either worst path is the number in "
            "the table."]


def _energy(results: list[dict]) -> list[str]:
    header = ["config", "budget", "cycles", "column evals", "macro pJ", "controller pJ",
              "total pJ", "macro TOPS/W", "system TOPS/W", "inferences/s at clock", "at Fmax"]
    return _markdown_table(header, [
        [r["config"], e["budget"], _fmt(e["cycles"], 1), _fmt(e["column_evals"], 1),
         _fmt(e["macro_pj"], 1), _fmt(e["controller_pj"], 1), _fmt(e["total_pj"], 1),
         e["macro_tops_w"], e["system_tops_w"], _fmt(e["inferences_per_s"]),
         _fmt(e["inferences_per_s_fmax"])] for r in results for e in r.get("energy", [])])


def _sources() -> list[str]:
    lines = ["| field | default | source and derivation |", "| --- | --- | --- |"]
    defaults = EnergyModel().to_dict()
    for name, text in ENERGY_SOURCES.items():
        lines.append(f"| `{name}` | {defaults[name]:g} pJ | {text} |")
    return lines


def _targets(results: list[dict]) -> list[str]:
    """Issue 17's targets, met or not, from the measured rows."""
    lines = []
    for r in results:
        met = "met" if r["wns_ns"] >= 0 and r["critical_path"].get("slack_ns", 0) > 0 else \
            "NOT met"
        lines.append(f"* {r['config']}: {r['clock_mhz']:g} MHz with positive setup slack: "
                     f"{met} (worst slack {r['critical_path'].get('slack_ns')} ns, Fmax "
                     f"{r['fmax_mhz']:.1f} MHz).")
    # the default design, however its stores are built (flip-flops, SRAM macros)
    default_layers = list(SbnnConfig().layers)
    for d in results:
        if d.get("layers") != default_layers:
            continue
        ok = "met" if d["logic_area_um2"] <= 150_000 else "NOT met"
        lines.append(f"* {d['config']}: default-design logic area <= 0.15 mm^2 (SRAM macros "
                     f"excluded): {ok} ({d['logic_area_um2'] / 1e6:.3f} mm^2; "
                     f"{d['sram_bits']:,} bits in SRAM macros, {d['memory_bits']:,} "
                     f"register-file bits in flip-flops).")
    return lines


def markdown(results: list[dict], meta: dict) -> str:
    """docs/silicon.md from the result objects and the run's metadata."""
    r0 = results[0]
    return "\n".join([
        "# Silicon figures: SKY130 hd, typical corner, synthesis without placement",
        "",
        f"Measured with `{meta['command']}` (writes this file and `silicon.json`; "
        f"wall {meta['wall_s']:.0f} s, CPU {meta['cpu_s']:.0f} s on this project's 2-core "
        f"machine, {meta['machine']}).",
        "",
        f"Library `{r0['liberty']}`. Each row is the tapeout bundle's controller "
        "(`sbnn gen --bundle`), mapped by YoWASP Yosys "
        "(`gen/silicon.py: yosys_script`: flatten, `dfflibmap` and timing-driven `abc -D "
        "<period ps> -constr` with the library, which buffers and sizes high-fanout nets, "
        "`-dont_use *lpflow*`) and timed by OpenSTA (`sta`, Debian `opensta` 2.0.17) with "
        "the bundle's SDC and its placeholder macro .lib. No placement: wires have no "
        "capacitance, the clock is ideal; read WNS as the logic's, before routing.",
        "",
        "`area` = every standard cell plus the SRAM macros' placeholder area "
        "(`gen/macro_views.py` `SRAM_UM2_PER_BIT`); `logic area` = the standard cells "
        "only, the logic that stays in the controller; the analog macro `sbnn_macro` is a "
        "black box in both. Register-file bits (thresholds, column masks, stored "
        "accumulators) are flip-flops unless the config's `sram_min_bits` puts a store in "
        "an SRAM macro (`SRAM bits`). Fmax = 1 / "
        "(period - worst setup slack), with the SDC's I/O delays (20 % of the period) and "
        "the macro's placeholder setup and clock-to-output (20 % each) held fixed. Power: "
        "OpenSTA `report_power`, every non-clock net toggling at 10 % of the cycles "
        "(an assumption: no simulation activity), no clock gating.",
        "",
        *_table(results),
        "",
        "## Critical paths",
        "",
        *_paths(results),
        "",
        *_path_places(results),
        "",
        "## Issue 17 targets",
        "",
        *_targets(results),
        "",
        "## Energy per inference",
        "",
        "Counters from the golden model on the embedded 300 MNIST test images (the model "
        "named per config below; `studies/sweep.py: pass_counters`, the counters the RTL "
        "reports), times the per-event energies of `golden/energy.py` (table below); the "
        "controller's energy is its power above divided by the clock, per cycle. Ops: 2 per "
        "bitcell multiply-accumulate, `active_rows` per enabled column per evaluation, as "
        "macro papers count them.",
        "",
        *_energy(results),
        "",
        *[f"* {r['config']}: model `{r.get('model', 'none')}`." for r in results],
        "",
        "### Per-event energies (golden/energy.py defaults)",
        "",
        *_sources(),
        "",
        "What it says: with these macro figures the analog macro spends far less than the "
        "digital controller, which keeps its register files in flip-flops and clocks every "
        "one of them every cycle. Clock gating and SRAM macros for the register files are "
        "the levers (a row with `sram_min_bits` shows what the second does); the macro figures "
        "are 65 nm silicon results scaled by nothing.",
        "",
    ])


def write_docs(results: list[dict], out_dir: Path, meta: dict) -> tuple[Path, Path]:
    """Write silicon.json and silicon.md into ``out_dir``, each atomically (tmp + rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = [{**{k: r[k] for k in JSON_KEYS}, **r} for r in results]
    paths = (out_dir / "silicon.json", out_dir / "silicon.md")
    texts = (json.dumps(ordered, indent=2) + "\n", markdown(results, meta))
    for path, text in zip(paths, texts):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths


def _cpu() -> float:
    """CPU seconds of this process and its finished children (Yosys, OpenSTA)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _model_for(cfg: SbnnConfig, root: Path):
    """The trained model energy is computed with: the embedded default for the default
    design, else the first of models/*.npz made for ``cfg`` (None when there is none)."""
    from sbnn.golden.qmodel import QuantizedModel

    # The results table's case (i) model first (docs/results.md), then any other.
    candidates = [root / "golden" / "assets" / "default_model.npz",
                  root / "models" / "case_i.npz", *sorted((root / "models").glob("*.npz"))]
    for path in candidates:
        try:
            return path, QuantizedModel.load(path, cfg)
        except Exception:  # noqa: BLE001 - a model for another config: try the next
            continue
    return None, None


def run_silicon(designs: list[tuple[str, SbnnConfig]], liberty: Path, out_dir: Path | None,
                command: str, machine: str = "", keep: Path | None = None,
                log=print) -> list[dict]:
    """Synthesize and time every design, add energy, and write the docs into ``out_dir``."""
    import time

    from sbnn.gen.silicon import synthesize_silicon

    root = Path(__file__).resolve().parents[1]
    sample = np.load(root / "golden" / "assets" / "mnist_test_sample.npz")["images"]
    t0, c0 = time.time(), _cpu()
    results = []
    for name, cfg in designs:
        log(f"{name}: bundle, Yosys ({liberty.name}), OpenSTA ...")
        res, _ = synthesize_silicon(cfg, liberty, name,
                                    keep=None if keep is None else keep / name)
        row = res.to_dict()
        row["layers"] = list(cfg.layers)
        row["design"] = cfg.to_dict()
        path, model = _model_for(cfg, root)
        if model is not None:
            row["model"] = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
            row["energy"] = energy_rows(cfg, model, sample, res.power_mw, res.fmax_mhz)
        log(f"{name}: {res.cells:,} cells, {res.area_um2:,.0f} um^2, {res.flip_flops:,} FFs, "
            f"WNS {res.wns_ns:.3f} ns, TNS {res.tns_ns:.3f} ns, Fmax {res.fmax_mhz:.1f} MHz "
            f"(Yosys {res.yosys_s:.0f} s, OpenSTA {res.sta_s:.0f} s)")
        results.append(row)
    meta = {"command": command, "wall_s": time.time() - t0, "cpu_s": _cpu() - c0,
            "machine": machine or "nothing else recorded"}
    for row in results:
        row["run"] = meta  # kept with the figures, so the docs can be rendered again
    if out_dir is not None:
        for path in write_docs(results, out_dir, meta):
            log(f"wrote {path}")
    return results


def render_docs(out_dir: Path) -> tuple[Path, Path]:
    """Rewrite silicon.md and silicon.json from silicon.json, synthesizing nothing: the
    energy rows are recomputed from the stored power and Fmax with the current
    golden/energy.py defaults."""
    from sbnn.config import SbnnConfig as _Cfg

    root = Path(__file__).resolve().parents[1]
    sample = np.load(root / "golden" / "assets" / "mnist_test_sample.npz")["images"]
    results = json.loads((out_dir / "silicon.json").read_text())
    for row in results:
        cfg = _Cfg.from_dict(row["design"]) if "design" in row else None
        if cfg is None:
            continue
        path, model = _model_for(cfg, root)
        if model is not None:
            row["model"] = str(path.relative_to(root))
            row["energy"] = energy_rows(cfg, model, sample, row["power_mw"], row["fmax_mhz"])
    return write_docs(results, out_dir, results[0]["run"])
