"""``sbnn gen``: emit the Verilog, macro stub and manifest (and a hardware image or a
tapeout bundle)."""

from __future__ import annotations

import argparse
from contextlib import AbstractContextManager
from pathlib import Path

from sbnn.config import SbnnConfig
from sbnn.fileio import check_output_path, staged_folder

from .arguments import add_command, add_config_option
from .errors import CliError
from .loaders import design_config, load_model

__all__ = ["add_parser", "run", "staged_rtl", "print_files"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sbnn gen``."""
    sp = add_command(subparsers, "gen", run,
                     "emit Verilog, macro stub, manifest (and hardware image)",
                     add_config_option)
    sp.add_argument("--model", type=Path, help="also export this model's hardware image")
    sp.add_argument("--out", type=Path, default=None, help="Verilog folder (default out/rtl)")
    sp.add_argument("--bundle", type=Path, default=None,
                    help="write a tapeout bundle (Verilog, SDC, macro views, image, "
                         "LibreLane config) into this folder instead")
    return sp


def staged_rtl(out: Path) -> AbstractContextManager[Path]:
    """A staging folder for emit_all into ``out``, seeded with ``out``'s Verilog and cache
    stamp so that an unchanged design is not converted again (and keeps its timestamps)."""
    reuse = [p.name for p in (*out.glob("*.v"), *out.glob("*.sv"))] + [".rtl_digest"] \
        if out.is_dir() else []
    return staged_folder(out, reuse=reuse)


def print_files(files: dict[str, Path]) -> None:
    """One line per written file: its role and path."""
    for key, path in files.items():
        print(f"{key:12s} {path}")


def run(args: argparse.Namespace) -> int:
    """Write the Verilog folder (or the bundle); every file appears at once, or none."""
    from sbnn.gen.image import build_image
    from sbnn.gen.verilog import emit_all

    cfg = design_config(args)
    if args.bundle is not None and args.out is not None:
        raise CliError("give either --out (Verilog folder) or --bundle (tapeout bundle)")
    # checked before anything is written
    model = load_model(args.model, cfg) if args.model else None
    if args.bundle is not None:
        return _write_bundle(args, cfg, model)
    out = check_output_path(args.out or "out/rtl", "--out", folder=True)
    with staged_rtl(out) as stage:  # every file appears at once, or none
        files = emit_all(cfg, stage)
        if model is not None:
            image = build_image(model)
            files.update({p.stem: p for p in image.write_readmemh(stage)})
            prog = stage / "program.txt"
            prog.write_text(image.program_text())
            files["program"] = prog
        files = {key: out / path.relative_to(stage) for key, path in files.items()}
    print_files(files)
    return 0


def _write_bundle(args: argparse.Namespace, cfg: SbnnConfig, model) -> int:
    """``--bundle``: the tapeout bundle, with the hardware image where a model fits."""
    from sbnn.gen.bundle import write_bundle

    check_output_path(args.bundle, "--bundle", folder=True)
    if model is None and cfg == SbnnConfig():
        model = load_model(None, cfg)
        print("no --model: the image is the embedded default model's")
    elif model is None:
        print("no --model: the bundle has no hardware image (the embedded model fits "
              "the default config only)")
    print_files(write_bundle(cfg, args.bundle, model))
    return 0
