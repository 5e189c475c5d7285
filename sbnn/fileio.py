"""Atomic outputs: a failed or interrupted command leaves every target as it was.

Every file a command writes is first written under a temporary name beside its target (same
folder, hence same file system) and renamed into place only once complete; a folder of
outputs (``sbnn gen --out``, ``--bundle``, ``sweep --out``) is staged whole in a hidden
temporary folder and committed at the end:

* a target folder that does not exist yet appears with one rename, complete;
* into an existing folder each staged file is renamed over its target, unchanged files are
  left alone (same bytes, same timestamps: simulator builds stay cached), other files in the
  folder are kept; the renames take milliseconds and run with SIGINT/SIGTERM held back, so an
  interrupt lands before or after them, never between two of them.

Missing parent folders are created only at commit time, so an error leaves no empty folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file", "atomic_write_text", "atomic_write_bytes", "staged_folder",
           "check_output_path", "OutputPathError"]

_STAGE_PREFIX = ".sbnn-stage-"
_DEFERRED = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                              getattr(signal, "SIGHUP", None)) if s is not None)


class OutputPathError(ValueError):
    """An output path cannot be written (a file where a folder is needed, or the reverse)."""


def check_output_path(path: str | Path, option: str, folder: bool) -> Path:
    """Raise :class:`OutputPathError` (one line naming ``option``) unless ``path`` can become
    a folder (``folder=True``) or a file: nothing in the way, no file among its parents."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {str(path)!r} exists and is not a folder; name a "
                              f"folder (new or existing)")
    if not folder and path.is_dir():
        raise OutputPathError(f"{option} {str(path)!r} is a folder; name a file")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{option} {str(path)!r}: {str(parent)!r} is a file, "
                                      f"not a folder")
            break
    return path


def _existing_ancestor(path: Path) -> Path:
    """The nearest existing folder at or above ``path`` (absolute)."""
    path = path.absolute()
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return candidate
    raise OutputPathError(f"no existing folder above {str(path)!r}")  # pragma: no cover


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold back interrupts during a commit; they are delivered right after it."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    except (AttributeError, ValueError, OSError):  # not POSIX: commit unprotected
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; renamed to ``path`` when the block ends normally,
    deleted otherwise. The temporary name keeps ``path``'s suffix (numpy and matplotlib pick
    the format from it)."""
    path = Path(path)
    base = path.parent if path.parent.is_dir() else _existing_ancestor(path.parent)
    fd, name = tempfile.mkstemp(dir=base, prefix=f".{path.name}.", suffix=path.suffix or None)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with _signals_deferred():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.chmod(0o644)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def _same_bytes(a: Path, b: Path) -> bool:
    return b.is_file() and a.stat().st_size == b.stat().st_size and \
        a.read_bytes() == b.read_bytes()


@contextmanager
def staged_folder(target: str | Path, reuse: Iterable[str] = (),
                  remove: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a staging folder that becomes ``target`` when the block ends normally.

    ``reuse``: paths (relative to ``target``) copied from an existing target into the stage
    first, timestamps kept, e.g. a generator's cache stamp and the files it describes.
    ``remove``: paths deleted from the target at commit unless the stage wrote them (stale
    outputs of an earlier run). On an exception nothing in ``target`` changes.
    """
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"{str(target)!r} exists and is not a folder")
    base = _existing_ancestor(target.parent)
    scratch = Path(tempfile.mkdtemp(dir=base, prefix=_STAGE_PREFIX))
    try:
        # New target: stage the whole missing chain below ``base``; one rename commits it.
        stage = scratch / target.relative_to(base) if not target.exists() else scratch / "s"
        stage.mkdir(parents=True)
        if target.is_dir():
            for rel in reuse:
                if (target / rel).is_file():
                    (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(target / rel, stage / rel)
        yield stage
        with _signals_deferred():
            if not target.exists():
                top = target.relative_to(base).parts[0]
                os.replace(scratch / top, base / top)
            else:
                _merge(stage, target, remove)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _merge(stage: Path, target: Path, remove: Iterable[str]) -> None:
    """Rename every staged file over its target unless the target already holds it."""
    written = set()
    for src in sorted(p for p in stage.rglob("*") if p.is_file()):
        rel = src.relative_to(stage)
        written.add(rel.as_posix())
        dst = target / rel
        if _same_bytes(src, dst):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    for rel in remove:
        if Path(rel).as_posix() not in written:
            (target / rel).unlink(missing_ok=True)
