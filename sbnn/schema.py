"""The JSON schemas of sbnn's parameter files, for editors (committed under docs/schema/).

Generated from the records themselves (sbnn/params.py), so an editor pointed at them checks
a config or variation file against the same types, ranges and descriptions ``sbnn`` itself
validates (the rules between fields are checked only when ``sbnn`` reads the file).
``python -m sbnn.schema`` rewrites them; tests/test_config.py fails while they are stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sbnn.config import SbnnConfig
from sbnn.params import Record, file_schema

__all__ = ["SCHEMA_DIR", "schemas", "schema_texts", "write_schemas"]

#: Where the schemas are committed (docs/schema/ of the repository).
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schema"


def _train_table() -> dict[str, Any]:
    """The ``[train]`` table: the training recipe's schema once it is a Record."""
    try:
        from sbnn.studies.recipe import TrainSettings  # torch-free
    except ImportError:  # a tree from before the recipe became a record
        TrainSettings = None  # noqa: N806 - the class, when there is one
    if isinstance(TrainSettings, type) and issubclass(TrainSettings, Record):
        return TrainSettings.json_schema() | {
            "description": "The training recipe (read by sbnn train)."}
    return {"type": "object",
            "description": "The training recipe (read by sbnn train, which checks it)."}


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema of every parameter file sbnn reads."""
    from sbnn.golden.variability import Variation

    return {
        "sbnn-config.schema.json": file_schema(
            SbnnConfig, "sbnn", "sbnn design config (--config)",
            "A Supported-BinaryNet design: its fields at top level or under [sbnn], and "
            "optionally the training recipe under [train]. Rules between fields (tiles "
            "fit macro_rows, one gain per plane, ...) are checked when sbnn reads the file.",
            {"train": _train_table()}),
        "sbnn-variation.schema.json": file_schema(
            Variation, "variation", "sbnn process-variation parameters (--variation)",
            "The mismatch model's sigmas and seed: fields at top level or under "
            "[variation]; all sigmas 0 is the ideal macro."),
    }


def schema_texts() -> dict[str, str]:
    """File name -> the committed text of each schema (indent 2, trailing newline)."""
    return {name: json.dumps(schema, indent=2) + "\n" for name, schema in schemas().items()}


def write_schemas(directory: str | Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema into ``directory`` (atomically); the paths written."""
    from sbnn.fileio import atomic_write_text

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(directory / name, text) for name, text in schema_texts().items()]


if __name__ == "__main__":
    for path in write_schemas():
        print(path)
