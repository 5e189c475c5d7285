"""Tapeout bundle: everything a LibreLane / OpenROAD flow takes for the controller, in one folder.

Layout (paths relative to the bundle folder; ``BUNDLE_FILES`` is the one list):

* ``src/``: the controller Verilog (top ``sbnn_controller``), the macro's black-box stub and
  the SDC file;
* ``macro/``: PLACEHOLDER LEF and Liberty views of the macro (gen/macro_views.py), and of
  each SRAM macro when the config has some (``sram_min_bits``; :func:`sram_files`);
* ``sim/``: the simulation top (controller + behavioral macro), not for the flow;
* ``image/``: the hardware image as $readmemh files and the ``prog`` command sequence;
* ``manifest.json``, ``config.json``, ``librelane_config.json``, ``README.md``.

Everything is generated into a staging folder first and committed only when complete
(sbnn/fileio.py: a new bundle appears with one rename, an existing one has its changed files
renamed into place with interrupts held back), so a failure or an interrupt leaves the
destination as it was; files whose content is unchanged are not rewritten (same config and
model, same bytes, same timestamps).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from sbnn import __version__
from sbnn.config import SbnnConfig
from sbnn.fileio import staged_folder
from sbnn.gen.image import build_image
from sbnn.gen.macro_views import (
    lef_text,
    lib_text,
    macro_width_um,
    sram_lef_text,
    sram_lib_text,
)
from sbnn.gen.verilog import CONTROLLER_TOP, SIM_FILE, SIM_TOP, emit_all, manifest
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import Sizes
from sbnn.rtl.sram import SRAM_PREFIX
from sbnn.rtl.stores import sram_macros
from sbnn.rtl.top import MACRO_MODULE

__all__ = ["BUNDLE_FILES", "IMAGE_FILES", "CLOCK_PORT", "RESET_PORT", "write_bundle",
           "sdc_text", "flow_config", "verilog_ports", "macro_instance", "sram_files",
           "sram_instance"]

#: Amaranth's default clock domain ports, as ``verilog.convert`` names them.
CLOCK_PORT = "clk"
RESET_PORT = "rst"
#: External delay on every controller input and output, as a fraction of the clock period
#: (LibreLane's default IO_DELAY_CONSTRAINT is the same 20 %); tighten it to the real
#: surroundings of the controller.
IO_DELAY_FRACTION = 0.2
#: Clock uncertainty: LibreLane's default 0.25 ns, at most 5 % of the period.
CLOCK_UNCERTAINTY_NS = 0.25

#: role -> path inside the bundle, for the files every bundle has.
BUNDLE_FILES: dict[str, str] = {
    "controller": f"src/{CONTROLLER_TOP}.v",
    "macro_stub": f"src/{MACRO_MODULE}_stub.v",
    "sdc": f"src/{CONTROLLER_TOP}.sdc",
    "macro_lef": f"macro/{MACRO_MODULE}.lef",
    "macro_lib": f"macro/{MACRO_MODULE}.lib",
    "sim_top": f"sim/{SIM_FILE}",
    "manifest": "manifest.json",
    "config": "config.json",
    "flow_config": "librelane_config.json",
    "readme": "README.md",
}
#: role -> path, for the hardware image (present only when a model is given).
IMAGE_FILES: dict[str, str] = {
    "bitcells": "image/bitcells.hex",
    "col_enables": "image/col_enables.hex",
    "thresholds": "image/thresholds.hex",
    "program": "image/program.txt",
}
# emit_all's cache stamp, kept in the bundle so an unchanged design is not converted again.
_STAMP = "src/.rtl_digest"
# emit_all output name -> bundle role (the stamp travels with the Verilog it describes).
_EMITTED = {f"{CONTROLLER_TOP}.v": "controller", SIM_FILE: "sim_top",
            f"{MACRO_MODULE}_stub.v": "macro_stub"}


def sram_files(cfg: SbnnConfig) -> dict[str, str]:
    """role -> path of the SRAM macros' PLACEHOLDER views (``sram_lef_<store>``,
    ``sram_lib_<store>``; none without SRAM macros)."""
    files = {}
    for spec in sram_macros(cfg):
        files[f"sram_lef_{spec.store}"] = f"macro/{spec.module}.lef"
        files[f"sram_lib_{spec.store}"] = f"macro/{spec.module}.lib"
    return files


def verilog_ports(verilog: str, module: str) -> list[tuple[str, str, int]]:
    """(name, direction, width) of ``module``'s ports, read from Yosys-written Verilog."""
    match = re.search(rf"^module {re.escape(module)}\(.*?^endmodule", verilog, re.M | re.S)
    if match is None:
        raise ValueError(f"module {module} not found in the Verilog")
    ports = []
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\S+);",
                                          match.group(0), re.M):
        ports.append((name, direction, int(msb) + 1 if msb else 1))
    return ports


def macro_instance(verilog: str) -> str:
    """Instance name of the macro black box in the controller Verilog (the first)."""
    return macro_instances(verilog)[0]


def macro_instances(verilog: str) -> list[str]:
    """Instance names of the macro black boxes in the controller Verilog, in file order
    (``num_macros`` of them)."""
    names = re.findall(rf"^\s*{MACRO_MODULE}\s+(\S+)\s*\(", verilog, re.M)
    if not names:
        raise ValueError(f"no {MACRO_MODULE} instance in the controller Verilog")
    return names


def sram_instance(store: str, verilog: str | None = None, submodule: str | None = None) -> str:
    """Hierarchical instance name (as a flattening flow names it) of ``store``'s SRAM macro,
    held by the controller's ``submodule`` (default: ``store``); with ``verilog``, checked
    to be in the controller Verilog."""
    submodule = submodule or store
    name = f"ctrl.{submodule}.sram.macro"
    if verilog is not None and not re.search(
            rf"^module \\{CONTROLLER_TOP}\.ctrl\.{submodule}\.sram\b.*?^\s*{SRAM_PREFIX}_"
            rf"{store}_\w+ macro \(", verilog, re.M | re.S):
        raise ValueError(f"no SRAM macro instance {name} in the controller Verilog")
    return name


def sdc_text(cfg: SbnnConfig, ports: list[tuple[str, str, int]]) -> str:
    """SDC for the controller: the config's clock, I/O delays on every other port."""
    period = 1000.0 / cfg.clock_mhz
    names = {name for name, _, _ in ports}
    if CLOCK_PORT not in names:
        raise ValueError(f"the controller has no '{CLOCK_PORT}' port")
    inputs = sorted(n for n, d, _ in ports if d == "input" and n != CLOCK_PORT)
    outputs = sorted(n for n, d, _ in ports if d == "output")
    io_delay = IO_DELAY_FRACTION * period
    return "\n".join([
        f"# Timing constraints for {CONTROLLER_TOP}, generated by sbnn {__version__} from "
        f"config.json.",
        f"# Clock '{CLOCK_PORT}': clock_mhz = {cfg.clock_mhz:g} MHz. '{RESET_PORT}' is a "
        f"synchronous reset (Amaranth's",
        "# default domain), so it is timed like every other input.",
        f"# External input/output delay: {IO_DELAY_FRACTION:g} of the period on every port; "
        f"set it to the",
        "# real surroundings. Paths to and from the macro are timed by its .lib (macro/).",
        f"create_clock -name {CLOCK_PORT} -period {period:.3f} [get_ports {CLOCK_PORT}]",
        f"set_clock_uncertainty {min(CLOCK_UNCERTAINTY_NS, 0.05 * period):.3f} "
        f"[get_clocks {CLOCK_PORT}]",
        f"set_input_delay {io_delay:.3f} -clock [get_clocks {CLOCK_PORT}] "
        f"[get_ports {{{' '.join(inputs)}}}]",
        f"set_output_delay {io_delay:.3f} -clock [get_clocks {CLOCK_PORT}] "
        f"[get_ports {{{' '.join(outputs)}}}]",
        "",
    ])


def flow_config(cfg: SbnnConfig) -> dict:
    """LibreLane (v2 config) flow configuration; paths are relative to the bundle."""
    return {
        "meta": {"version": 2, "flow": "Classic"},
        "DESIGN_NAME": CONTROLLER_TOP,
        "VERILOG_FILES": [f"dir::{BUNDLE_FILES['controller']}"],
        # Read as a black box (-lib): the stub gives synthesis and lint the macro's ports.
        "EXTRA_VERILOG_MODELS": [f"dir::{BUNDLE_FILES['macro_stub']}"],
        "CLOCK_PORT": CLOCK_PORT,
        "CLOCK_PERIOD": round(1000.0 / cfg.clock_mhz, 3),
        "PNR_SDC_FILE": f"dir::{BUNDLE_FILES['sdc']}",
        "SIGNOFF_SDC_FILE": f"dir::{BUNDLE_FILES['sdc']}",
        # PLACEHOLDER views: replace with the real macro's, and add its GDS (EXTRA_GDS_FILES
        # or a MACROS entry); see README.md.
        # The SRAM macros' placeholder views follow (sram_min_bits; their stubs are in
        # the macro stub's file).
        "EXTRA_LEFS": [f"dir::{BUNDLE_FILES['macro_lef']}",
                       *(f"dir::{p}" for r, p in sram_files(cfg).items() if "_lef_" in r)],
        "EXTRA_LIBS": [f"dir::{BUNDLE_FILES['macro_lib']}",
                       *(f"dir::{p}" for r, p in sram_files(cfg).items() if "_lib_" in r)],
    }


def write_bundle(cfg: SbnnConfig, out_dir: str | Path,
                 model: QuantizedModel | None = None) -> dict[str, Path]:
    """Write the tapeout bundle for ``cfg`` (and ``model``'s image) into ``out_dir``.

    Returns role -> path of every bundle file. Raises ValueError, before anything is
    written, when ``model`` was made for another config.
    """
    out = Path(out_dir)
    if model is not None and model.config != cfg:
        raise ValueError("the model was made for a different config than the bundle's")
    if out.exists() and not out.is_dir():
        raise ValueError(f"bundle folder {str(out)!r} exists and is not a folder")
    roles = {**BUNDLE_FILES, **sram_files(cfg), **(IMAGE_FILES if model is not None else {})}
    # Without a model, an image from an earlier run would not match this bundle: removed;
    # so are SRAM views of an earlier config (those of this one are written again).
    stale = tuple(IMAGE_FILES.values()) if model is None else ()
    if out.is_dir():
        stale += tuple(f"macro/{p.name}" for p in sorted((out / "macro").glob(
            f"{SRAM_PREFIX}_*")) if p.is_file())
    with tempfile.TemporaryDirectory(prefix="sbnn_bundle_") as tmp, \
            staged_folder(out, remove=stale) as stage:
        _render(cfg, model, out, stage, Path(tmp))
    return {role: out / rel for role, rel in roles.items()}


def _render(cfg: SbnnConfig, model: QuantizedModel | None, out: Path, stage: Path,
            scratch: Path) -> None:
    """Generate every bundle file under ``stage`` (reusing ``out``'s Verilog if current;
    emit_all runs in ``scratch``, whose files are not part of the bundle)."""
    rtl = scratch / "_rtl"
    rtl.mkdir()
    for name, role in _EMITTED.items():
        if (out / BUNDLE_FILES[role]).is_file():
            shutil.copyfile(out / BUNDLE_FILES[role], rtl / name)
    if (out / _STAMP).is_file():
        shutil.copyfile(out / _STAMP, rtl / ".rtl_digest")
    emitted = emit_all(cfg, rtl)
    for name, role in _EMITTED.items():
        _put(stage, BUNDLE_FILES[role], (rtl / name).read_text())
    _put(stage, _STAMP, (rtl / ".rtl_digest").read_text())

    controller = (rtl / f"{CONTROLLER_TOP}.v").read_text()
    ports = verilog_ports(controller, CONTROLLER_TOP)
    _put(stage, BUNDLE_FILES["sdc"], sdc_text(cfg, ports))
    _put(stage, BUNDLE_FILES["macro_lef"], lef_text(cfg))
    _put(stage, BUNDLE_FILES["macro_lib"], lib_text(cfg))
    for spec in sram_macros(cfg):
        _put(stage, f"macro/{spec.module}.lef", sram_lef_text(spec))
        _put(stage, f"macro/{spec.module}.lib", sram_lib_text(cfg, spec))
    _put(stage, BUNDLE_FILES["config"], emitted["config"].read_text())
    _put(stage, BUNDLE_FILES["flow_config"], json.dumps(flow_config(cfg), indent=2) + "\n")
    if model is not None:
        image = build_image(model)
        (stage / "image").mkdir()
        image.write_readmemh(stage / "image")
        _put(stage, IMAGE_FILES["program"], image.program_text())

    man = manifest(cfg)
    # Paths in the bundle's manifest are the bundle's own.
    for top, role in ((SIM_TOP, "sim_top"), (CONTROLLER_TOP, "controller")):
        man["tops"][top]["file"] = BUNDLE_FILES[role]
    man["tops"][CONTROLLER_TOP]["verilog_ports"] = [
        {"name": n, "direction": d, "width": w} for n, d, w in ports]
    man["macro"]["stub"] = BUNDLE_FILES["macro_stub"]
    instances = macro_instances(controller)
    if cfg.num_macros > 1:
        if sorted(instances) != sorted(man["macro"]["instances"]):
            raise ValueError(f"the controller Verilog has macro instances {instances}, the "
                             f"config {man['macro']['instances']}")
    else:
        man["macro"]["instance"] = instances[0]
    srams = sram_files(cfg)
    for entry in man["sram_macros"]:
        entry["stub"] = BUNDLE_FILES["macro_stub"]
        entry["lef"] = srams[f"sram_lef_{entry['store']}"]
        entry["lib"] = srams[f"sram_lib_{entry['store']}"]
        entry["instance"] = sram_instance(entry["store"], controller, entry["submodule"])
    man["bundle"] = {
        "files": {**BUNDLE_FILES, **srams, **(IMAGE_FILES if model is not None else {})},
        "placeholders": [BUNDLE_FILES["macro_lef"], BUNDLE_FILES["macro_lib"],
                         *srams.values()],
        "clock": {"port": CLOCK_PORT, "period_ns": round(1000.0 / cfg.clock_mhz, 3)},
        "reset": {"port": RESET_PORT, "kind": "synchronous, active high"},
        "image": model is not None,
    }
    man["image_layout"] = image_layout(cfg)
    _put(stage, BUNDLE_FILES["manifest"], json.dumps(man, indent=2) + "\n")
    _put(stage, BUNDLE_FILES["readme"], _readme(cfg, man))


def image_layout(cfg: SbnnConfig) -> dict:
    """How the image's thresholds are laid out: the THRESHOLD op's address fields and the
    words of thresholds.hex (one threshold per pass, column block and neuron slot; the
    memory they fill is the manifest's ``memories.thresholds``)."""
    sz = Sizes(cfg)
    return {"thresholds": {
        "prog_addr": "(pass << cb_bits | col_block) << nt_bits | neuron",
        "prog_addr_fields": {"neuron": [0, sz.nt_bits], "col_block": [sz.nt_bits, sz.cb_bits],
                             "pass": [sz.nt_bits + sz.cb_bits, sz.pass_bits]},
        "hex_words": cfg.planes * cfg.total_col_blocks,
        "hex_word_order": "pass-major: line p * total_col_blocks + col_block",
        "hex_word_layout": "neuron slot 0 in the low bits, threshold_bits each"}}


def _put(stage: Path, rel: str, text: str) -> None:
    path = stage / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _readme(cfg: SbnnConfig, man: dict) -> str:
    files = man["bundle"]["files"]
    instances = man["macro"].get("instances") or [man["macro"]["instance"]]
    inst = ", ".join(f"`{i}`" for i in instances)
    pitch = macro_width_um(cfg) + 20.0  # placeholder spacing of several macros' locations
    lines = [
        f"# {CONTROLLER_TOP} tapeout bundle",
        "",
        f"Generated by sbnn {__version__} from `config.json` (layers {list(cfg.layers)}, "
        f"K={cfg.num_supports}, {cfg.clock_mhz:g} MHz). Regenerate with "
        "`sbnn gen --bundle DIR --config config.json [--model M]`; same inputs, same bytes.",
        "",
        "| file | what |",
        "| --- | --- |",
        f"| `{files['controller']}` | controller, top `{CONTROLLER_TOP}`, macro "
        f"instance{'s' if len(instances) > 1 else ''} {inst} of black box `{MACRO_MODULE}` |",
        f"| `{files['macro_stub']}` | `{MACRO_MODULE}` ports only, `(* blackbox *)` |",
        f"| `{files['sdc']}` | clock `{CLOCK_PORT}` at {cfg.clock_mhz:g} MHz, I/O delays |",
        f"| `{files['macro_lef']}` | **PLACEHOLDER** LEF abstract: real pins, invented "
        "geometry |",
        f"| `{files['macro_lib']}` | **PLACEHOLDER** Liberty model: real pins, assumed "
        "timing |",
        *[f"| `{e['lef']}`, `{e['lib']}` | **PLACEHOLDER** views of SRAM macro `{e['module']}` "
          f"(the {e['store']} store, {e['words']} x {e['word_bits']} bits, instance "
          f"`{e['instance']}`) |" for e in man["sram_macros"]],
        f"| `{files['sim_top']}` | simulation top and behavioral macro, SystemVerilog; compile "
        f"with `{files['controller']}` (not for the flow) |",
        f"| `{files['manifest']}` | every parameter, derived size and port |",
        f"| `{files['config']}` | the sbnn design config |",
        f"| `{files['flow_config']}` | LibreLane flow config naming the files above |",
    ]
    if man["bundle"]["image"]:
        lines += [f"| `{files[r]}` | hardware image (`$readmemh`) |"
                  for r in ("bitcells", "col_enables", "thresholds")]
        lines.append(f"| `{files['program']}` | the same image as `prog` stream commands |")
    else:
        lines.append("| (no `image/`) | no model was given: pass `--model` for the hardware "
                     "image |")
    lines += [
        "",
        "## Running a flow",
        "",
        f"LibreLane: `librelane {files['flow_config']} --pdk <pdk>` (run it in this folder). "
        "The PDK and floorplan settings are yours to add.",
        "OpenROAD-flow-scripts: `VERILOG_FILES` = the controller, `VERILOG_FILES_BLACKBOX` = "
        "the stub, `SDC_FILE`, `ADDITIONAL_LEFS`, `ADDITIONAL_LIBS` = the macro views.",
        "",
        "## The macro views are placeholders",
        "",
        "The analog macro is not generated here. Its LEF and Liberty files in `macro/` have the "
        "true pin names, directions and widths (listed in each file's header and in "
        "`manifest.json`) but invented geometry, no power pins and assumed timing. Before "
        "tapeout replace them with the macro's real views and give the flow its GDS: in "
        "LibreLane, a `MACROS` entry in place of `EXTRA_LEFS` / `EXTRA_LIBS`, e.g.",
        "",
        "```json",
        json.dumps({"MACROS": {MACRO_MODULE: {
            # one entry per instance (num_macros), placeholder locations side by side
            "instances": {name: {"location": [round(pitch * j, 3), 0], "orientation": "N"}
                          for j, name in enumerate(instances)},
            "gds": [f"dir::macro/{MACRO_MODULE}.gds"], "lef": [f"dir::macro/{MACRO_MODULE}.lef"],
            "lib": {"*": [f"dir::macro/{MACRO_MODULE}.lib"]}}}}, indent=2),
        "```",
        "",
        "and the macro's power pins in its Verilog header (`VERILOG_POWER_DEFINE`).",
        "",
    ]
    if man["sram_macros"]:
        lines += [
            "## SRAM macros",
            "",
            f"`sram_min_bits` = {cfg.sram_min_bits}: "
            + ", ".join(f"the {e['store']} store ({e['bits']} bits)"
                        for e in man["sram_macros"])
            + ": each a black-box SRAM macro (ports-only in the stub file, behavioral model in "
            "the simulation top), not flip-flops. Each is 1R1W with a registered, read-first "
            "read (`manifest.json` `sram_macros`: geometry, write lanes, ports). Generate the "
            "real macros with a memory compiler (e.g. OpenRAM) for these geometries and "
            "replace the placeholder views (`macro/sbnn_sram_*`: invented geometry, assumed "
            "area and timing) with theirs, as for the analog macro.",
            "",
        ]
    return "\n".join(lines)
