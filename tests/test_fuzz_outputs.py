"""Atomic outputs: a failure or an interrupt leaves every target as it was (sbnn/fileio.py).

A Hypothesis fuzzer stages random file trees over random existing folders and fails at a
random point: the target must be unchanged, or on success hold exactly the old files
updated by the staged ones, unchanged files with their old timestamps. Then the commands:
an interrupted ``sbnn gen`` and a failing model save.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bad_input import SMALL, _tree, _write

from sbnn.cli import main
from sbnn.fileio import staged_folder

NAMES = st.sampled_from(["a.v", "b.hex", "manifest.json", "sub/c.txt", "sub/deep/d.v"])
TREES = st.dictionaries(NAMES, st.sampled_from(["", "x", "old", "new", "y" * 50]),
                        max_size=5)


class _Stop(Exception):
    pass


@settings(max_examples=60, deadline=None, database=None)
@given(old=st.one_of(st.none(), TREES), new=TREES, fail_after=st.one_of(
    st.none(), st.integers(0, 5)), nested=st.booleans())
def test_staged_folder_is_all_or_nothing(old, new, fail_after, nested):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        target = root / "p" / "out" if nested else root / "out"
        if old is not None:
            for rel, text in old.items():
                _write(_mk(target / rel), text)
        before = _state(root)
        try:
            with staged_folder(target) as stage:
                for n, (rel, text) in enumerate(new.items()):
                    if n == fail_after:
                        raise _Stop
                    _write(_mk(stage / rel), text)
                if fail_after is not None and fail_after >= len(new):
                    raise _Stop
        except _Stop:
            assert _state(root) == before  # untouched, no staging folder left
            return
        after = _state(root)
        files = {str(p.relative_to(target)): p.read_text()
                 for p in target.rglob("*") if p.is_file()}
        assert files == {**(old or {}), **new}
        prefix = str(target.relative_to(root))
        for rel, text in (old or {}).items():  # unchanged bytes keep their timestamps
            if new.get(rel, text) == text:
                assert after[f"{prefix}/{rel}"] == before[f"{prefix}/{rel}"]
        assert not [p for p in root.rglob(".sbnn-stage-*")]


def _state(root: Path) -> dict[str, tuple[int, int] | None]:
    """Files with size and mtime, folders by name only (a staging folder beside the
    target is created and removed: the parent's own mtime may change)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            if p.is_file() else None for p in root.rglob("*")}


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_staged_folder_new_target_appears_whole_or_not_at_all(tmp_path):
    from sbnn.fileio import staged_folder

    target = tmp_path / "a" / "b"
    with pytest.raises(KeyboardInterrupt), staged_folder(target) as stage:
        (stage / "one.v").write_text("1")
        raise KeyboardInterrupt  # an interrupt half way: nothing appears
    assert list(tmp_path.iterdir()) == []
    with staged_folder(target) as stage:
        (stage / "one.v").write_text("1")
        (stage / "sub").mkdir()
        (stage / "sub" / "two.hex").write_text("2")
        assert not target.exists()  # not before the block ends
    assert (target / "one.v").read_text() == "1" and (target / "sub/two.hex").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no staging folder left


def test_staged_folder_existing_target_keeps_unchanged_files(tmp_path):
    from sbnn.fileio import staged_folder

    for name, text in (("same.v", "s"), ("old.v", "o"), ("user.txt", "u"), ("stale.hex", "x")):
        _write(tmp_path / name, text)
    before = _tree(tmp_path)
    with pytest.raises(RuntimeError), staged_folder(tmp_path, reuse=["same.v"]) as stage:
        (stage / "old.v").write_text("new")
        raise RuntimeError("generation failed")
    assert _tree(tmp_path) == before
    with staged_folder(tmp_path, reuse=["same.v"], remove=["stale.hex"]) as stage:
        assert (stage / "same.v").read_text() == "s"  # seeded from the target
        (stage / "old.v").write_text("new")
    after = _tree(tmp_path)
    assert after["same.v"] == before["same.v"]  # same bytes: not rewritten (same mtime)
    assert (tmp_path / "old.v").read_text() == "new"
    assert (tmp_path / "user.txt").read_text() == "u"  # not ours: kept
    assert "stale.hex" not in after


def test_gen_interrupted_leaves_out_as_it_was(tmp_path, monkeypatch, capsys):
    """Issue 19: files used to be written one by one into --out."""
    import sbnn.gen.verilog as verilog

    out = tmp_path / "rtl"
    out.mkdir()
    _write(out / "sbnn_sim_top.v", "// an earlier design\n")
    before = _tree(tmp_path)

    def half_then_interrupt(cfg, out_dir):
        (Path(out_dir) / "sbnn_sim_top.v").write_text("// half written\n")
        raise KeyboardInterrupt

    monkeypatch.setattr(verilog, "emit_all", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        main(["gen", "--out", str(out)])
    assert _tree(tmp_path) == before
    with pytest.raises(KeyboardInterrupt):
        main(["gen", "--out", str(tmp_path / "new")])
    assert _tree(tmp_path) == before


def test_model_save_failure_leaves_no_file(tmp_path, monkeypatch):
    from sbnn.golden.qmodel import QuantizedModel

    model = QuantizedModel.random(SMALL, np.random.default_rng(0))
    model.save(tmp_path / "m.npz")
    before = _tree(tmp_path)

    def broken(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    with pytest.raises(OSError):
        model.save(tmp_path / "m.npz")
    with pytest.raises(OSError):
        model.save(tmp_path / "n.npz")
    assert _tree(tmp_path) == before
