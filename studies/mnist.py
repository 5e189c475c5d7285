"""MNIST loader for the four standard IDX files, verified against their published md5s.

The data folder is resolved in this order (first match wins):

1. the ``data_dir`` argument (``--data-dir`` on the command line);
2. the environment variable ``SBNN_MNIST_DIR``;
3. ``../shared/data/mnist`` next to the repository root (the folder holding pyproject.toml),
   if that folder exists;
4. ``../shared/data/mnist`` relative to the current working directory, if it exists;
5. a cache folder, ``$XDG_CACHE_HOME/sbnn/mnist`` or ``~/.cache/sbnn/mnist``.

A file may be present gzipped (as published; its md5 is checked) or already unpacked (without
``.gz``; only its IDX header and length are checked). A missing file is downloaded into the
resolved folder when ``download=True``, from the mirrors tried in order; a download is written
to a temporary file beside its target and renamed only once its md5 matches, so an interrupted
or corrupt transfer never leaves a file that a later run could mistake for the real one.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "DEFAULT_MIRRORS",
    "FILES",
    "MnistError",
    "check_image_file",
    "load_mnist",
    "read_idx",
    "resolve_data_dir",
]


class MnistError(RuntimeError):
    """An MNIST file is missing, corrupt, or could not be downloaded (message is one line)."""


#: ``"<split>-<kind>"`` -> (published file name, md5 of that .gz file).
FILES: dict[str, tuple[str, str]] = {
    "train-images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test-images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test-labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}

#: ``train`` and ``test`` are the published files; ``fit`` and ``val`` cut the training file
#: into a fitting part and a fixed validation split (its last :data:`VALIDATION_IMAGES`
#: digits), on which every choice is made: checkpoint, recipe variant, pruning count,
#: threshold re-fit, exit margins. The test split is read only by the final evaluation.
SPLITS = ("train", "fit", "val", "test")
#: Digits of the validation split: the last ones of the 60,000 training digits.
VALIDATION_IMAGES = 10000

DEFAULT_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

ENV_DIR = "SBNN_MNIST_DIR"
ENV_MIRRORS = "SBNN_MNIST_MIRRORS"
FIX_HINT = "set --data-dir or SBNN_MNIST_DIR to a folder holding the four MNIST IDX files"

# Short, so that an offline machine fails within seconds rather than hanging on each mirror.
_TIMEOUT_S = 10.0
# Module-level so tests can point it elsewhere; parents[1] is the repository root in a checkout.
_REPO_ROOT = Path(__file__).resolve().parents[1]
# IDX magic -> number of dimensions; both MNIST types store unsigned bytes (type code 0x08).
_IDX_NDIM = {2051: 3, 2049: 1}


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "sbnn" / "mnist"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder MNIST is read from (see the module docstring for the order).

    The explicit argument and the environment variable are returned even if the folder does not
    exist yet (a download creates it); the two ``shared`` candidates only if they exist.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser().absolute()
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser().absolute()
    # A non-editable install puts this file in site-packages, where there is no pyproject.toml;
    # checking for it keeps that case from picking up an unrelated ../shared folder.
    if (_REPO_ROOT / "pyproject.toml").is_file():
        shared = (_REPO_ROOT.parent / "shared" / "data" / "mnist").resolve()
        if shared.is_dir():
            return shared
    shared = (Path.cwd().parent / "shared" / "data" / "mnist").resolve()
    if shared.is_dir():
        return shared
    return _cache_dir()


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse one MNIST IDX file (gzipped if its name ends in ``.gz``) into a uint8 array.

    Images (magic 2051) come back as (N, 28, 28), labels (magic 2049) as (N,). A bad magic
    number, wrong image size, or a payload shorter or longer than the header promises raises
    :class:`MnistError` naming the file.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        # gzip reports a truncated stream as EOFError and a damaged one as OSError/zlib.error.
        raise MnistError(f"{path}: cannot read: {_one_line(exc)}") from exc

    if len(data) < 4:
        raise MnistError(f"{path}: truncated IDX header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _IDX_NDIM:
        raise MnistError(
            f"{path}: bad IDX magic {magic} (0x{magic:08x}), "
            "expected 2051 (images) or 2049 (labels)"
        )
    ndim = _IDX_NDIM[magic]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise MnistError(f"{path}: truncated IDX header ({len(data)} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and dims[1:] != (28, 28):
        raise MnistError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    expected = int(np.prod(dims))
    got = len(data) - offset
    if got != expected:
        what = "truncated payload" if got < expected else "trailing bytes after payload"
        raise MnistError(f"{path}: {what}: header {dims} needs {expected} bytes, found {got}")
    # Copy out of the immutable bytes so callers (and torch.from_numpy) get a writable array.
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims).copy()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _mirror_list(mirrors: Sequence[str] | str | None) -> list[str]:
    if mirrors is None:
        env = os.environ.get(ENV_MIRRORS)
        mirrors = env if env else DEFAULT_MIRRORS
    if isinstance(mirrors, str):
        mirrors = mirrors.split(",")
    return [m.strip() for m in mirrors if m.strip()]


def _is_writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def _download(name: str, md5: str, folder: Path, mirrors: list[str]) -> Path:
    """Fetch ``name`` into ``folder`` from the first mirror that serves it with the right md5."""
    target = folder / name
    if not _is_writable(folder):
        raise MnistError(
            f"MNIST file {name} is missing from {folder}, which is not writable; {FIX_HINT}"
        )
    errors: list[str] = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        # The temp file lives in the target folder so that os.replace is an atomic rename.
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.md5(usedforsecurity=False)
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r:
                while chunk := r.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
            if digest.hexdigest() != md5:
                errors.append(f"{url}: md5 mismatch (got {digest.hexdigest()}, expected {md5})")
                continue
            # mkstemp creates 0600; a cache or data folder may be shared, so make it readable.
            tmp.chmod(0o644)
            os.replace(tmp, target)
            return target
        except (OSError, ValueError) as exc:
            # URLError, HTTPError and socket timeouts are OSErrors; ValueError is a malformed URL.
            errors.append(f"{url}: {_one_line(exc)}")
        finally:
            tmp.unlink(missing_ok=True)
    tried = "; ".join(errors) if errors else "no mirrors configured"
    raise MnistError(
        f"MNIST file {name} is missing from {folder} and could not be downloaded ({tried}); "
        f"{FIX_HINT}"
    )


def _locate(key: str, folder: Path, download: bool, mirrors: Sequence[str] | str | None) -> Path:
    """Return the path of one file in ``folder``, verifying or downloading it as needed."""
    name, md5 = FILES[key]
    gz = folder / name
    if gz.is_file():
        got = _md5(gz)
        if got != md5:
            raise MnistError(f"{gz}: md5 mismatch (got {got}, expected {md5}); file is corrupt")
        return gz
    unpacked = folder / name.removesuffix(".gz")
    if unpacked.is_file():
        return unpacked  # no published md5 for the unpacked form; read_idx checks its structure
    if not download:
        raise MnistError(
            f"MNIST file {name} (or {unpacked.name}) is missing from {folder} and download=False; "
            f"{FIX_HINT}"
        )
    return _download(name, md5, folder, _mirror_list(mirrors))


def load_mnist(
    split: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    mirrors: Sequence[str] | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one MNIST split as (images uint8 (N, 28, 28), labels uint8 (N,)).

    Args:
        split: ``"train"`` (60,000 digits), ``"fit"`` (its first 50,000), ``"val"`` (its
            last :data:`VALIDATION_IMAGES`: the validation split) or ``"test"`` (10,000).
        data_dir: folder holding the IDX files; ``None`` resolves it (see the module docstring).
        download: fetch missing files from ``mirrors`` into the data folder.
        mirrors: base URLs tried in order; defaults to ``$SBNN_MNIST_MIRRORS`` (comma-separated)
            or :data:`DEFAULT_MIRRORS`.

    Raises:
        ValueError: ``split`` is not one of :data:`SPLITS`.
        MnistError: a file is missing and cannot be downloaded, or is corrupt.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    folder = resolve_data_dir(data_dir)
    if split in ("fit", "val"):
        images, labels = load_mnist("train", folder, download=download, mirrors=mirrors)
        if len(labels) <= VALIDATION_IMAGES:
            raise MnistError(f"{folder}: the training file holds {len(labels)} digits, too "
                             f"few for a {VALIDATION_IMAGES}-digit validation split")
        cut = len(labels) - VALIDATION_IMAGES
        return (images[:cut], labels[:cut]) if split == "fit" else (images[cut:], labels[cut:])
    images = read_idx(_locate(f"{split}-images", folder, download, mirrors))
    labels_path = _locate(f"{split}-labels", folder, download, mirrors)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise MnistError(f"{folder}: {split} image and label files are swapped or mislabelled")
    if len(images) != len(labels):
        raise MnistError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in the {split} split"
        )
    if labels.size and int(labels.max()) > 9:
        raise MnistError(f"{labels_path}: label {int(labels.max())} is outside 0..9")
    return images, labels


def check_image_file(path: str | os.PathLike[str], pixels: int, classes: int,
                     option: str = "--images") -> int:
    """Check an image ``.npz`` (``images`` uint8 (N, ...) with ``pixels`` values each,
    ``labels`` integers (N,) in 0..classes-1) before any expensive work; returns N.

    Every problem is one :class:`MnistError` line naming ``option`` and the fix.
    """
    path = Path(path)
    fix = "make one with 'sbnn sample-data --out FILE.npz'"
    if not path.is_file():
        raise MnistError(f"{option} {str(path)!r} does not exist; {fix}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with data:
            images, labels = data["images"], data["labels"]
    except Exception as exc:  # noqa: BLE001 - zip, zlib, npy header, missing key: one line
        raise MnistError(f"{option} {str(path)!r} is not an .npz with images and labels "
                         f"({_one_line(exc)}); {fix}") from None
    where = f"{option} {str(path)!r}"
    if images.dtype != np.uint8:
        raise MnistError(f"{where}: images must be uint8 pixels 0..255, got {images.dtype}; "
                         f"convert them with .astype(np.uint8)")
    if images.ndim < 2 or len(images) == 0 or int(np.prod(images.shape[1:])) != pixels:
        raise MnistError(f"{where}: images have shape {images.shape}, the model needs "
                         f"(N >= 1, {pixels} pixels per image)")
    if labels.dtype.kind not in "iu" or labels.shape != (len(images),):
        raise MnistError(f"{where}: labels are {labels.dtype} {labels.shape}, need integers "
                         f"({len(images)},), one per image")
    if int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise MnistError(f"{where}: labels must be in 0..{classes - 1} (the model's "
                         f"classes), got {int(labels.min())}..{int(labels.max())}")
    return len(images)
