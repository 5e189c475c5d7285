"""The package's size rules (issue 14): a newcomer finds a concept in a module named for it,
and reads any function in one screen.

* no package module over 450 lines;
* no function over 120 lines (tests and benchmarks aside).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The folders that make up the installed package (pyproject's package-dir mapping).
PACKAGE_DIRS = ("sbnn", "rtl", "gen", "cosim", "golden", "studies")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 120


def _modules() -> list[Path]:
    return sorted(p for d in PACKAGE_DIRS if (ROOT / d).is_dir()
                  for p in (ROOT / d).rglob("*.py"))


def test_the_package_has_modules():
    # the rules below must look at something: a moved folder would make them pass vacuously
    assert len(_modules()) > 40


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_and_function_sizes(path: Path):
    text = path.read_text()
    lines = text.count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.name}: {lines} lines (> {MAX_MODULE_LINES})"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"
