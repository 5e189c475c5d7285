"""MNIST IDX loader: real files from the shared folder, downloads from a local HTTP mirror."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sbnn.studies import mnist
from sbnn.studies.mnist import FILES, MnistError, load_mnist, read_idx, resolve_data_dir

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "mnist"
TEST_FILES = [FILES["test-images"][0], FILES["test-labels"][0]]

pytestmark = pytest.mark.skipif(
    not all((SHARED / name).is_file() for name, _ in FILES.values()),
    reason=f"MNIST IDX files not found in {SHARED}",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own settings must not change which folder or mirror a test uses.
    monkeypatch.delenv("SBNN_MNIST_DIR", raising=False)
    monkeypatch.delenv("SBNN_MNIST_MIRRORS", raising=False)


@pytest.fixture(scope="module")
def shared_test() -> tuple[np.ndarray, np.ndarray]:
    return load_mnist("test", SHARED, download=False)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(folder: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval keeps shutdown() (and so each test's teardown) fast.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[str]:
    """A local mirror serving the two (intact) t10k files."""
    root = tmp_path / "mirror"
    root.mkdir()
    for name in TEST_FILES:
        shutil.copy(SHARED / name, root / name)
    yield from _serve(root)


@pytest.fixture
def bad_mirror(tmp_path: Path) -> Iterator[str]:
    """A local mirror whose t10k images file has one byte flipped."""
    root = tmp_path / "bad-mirror"
    root.mkdir()
    for name in TEST_FILES:
        shutil.copy(SHARED / name, root / name)
    blob = bytearray((root / TEST_FILES[0]).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (root / TEST_FILES[0]).write_bytes(bytes(blob))
    yield from _serve(root)


@pytest.fixture
def closed_port_url() -> str:
    # Bind then close: nothing listens on the port afterwards, so connections are refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _check_test_split(images: np.ndarray, labels: np.ndarray) -> None:
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    hist = np.bincount(labels, minlength=10)
    assert hist.shape == (10,) and hist.sum() == 10000 and hist.min() > 0
    assert int(labels.min()) >= 0 and int(labels.max()) <= 9


# -- real data --------------------------------------------------------------------------------


def test_md5s_match_shared_md5sums() -> None:
    published = dict(
        reversed(line.split()) for line in (SHARED / "MD5SUMS").read_text().splitlines() if line
    )
    assert {name: md5 for name, md5 in FILES.values()} == published


def test_load_test_split_explicit_dir(shared_test: tuple[np.ndarray, np.ndarray]) -> None:
    _check_test_split(*shared_test)
    assert shared_test[0].flags.writeable


def test_load_test_split_env_var(
    monkeypatch: pytest.MonkeyPatch, shared_test: tuple[np.ndarray, np.ndarray]
) -> None:
    monkeypatch.setenv("SBNN_MNIST_DIR", str(SHARED))
    assert resolve_data_dir() == SHARED.absolute()
    images, labels = load_mnist("test", download=False)
    _check_test_split(images, labels)
    np.testing.assert_array_equal(images, shared_test[0])
    np.testing.assert_array_equal(labels, shared_test[1])


def test_load_train_split() -> None:
    images, labels = load_mnist("train", SHARED, download=False)
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert images.dtype == labels.dtype == np.uint8
    assert np.bincount(labels, minlength=10).sum() == 60000


def test_validation_split_is_the_last_10000_training_digits() -> None:
    train_x, train_y = load_mnist("train", SHARED, download=False)
    fit_x, fit_y = load_mnist("fit", SHARED, download=False)
    val_x, val_y = load_mnist("val", SHARED, download=False)
    assert len(fit_y) == 50000 and len(val_y) == 10000
    # disjoint and together the whole training file, in order
    np.testing.assert_array_equal(np.concatenate([fit_x, val_x]), train_x)
    np.testing.assert_array_equal(np.concatenate([fit_y, val_y]), train_y)
    np.testing.assert_array_equal(val_y, train_y[50000:])
    # every class is present in the validation split (MNIST's training file is shuffled)
    assert np.bincount(val_y, minlength=10).min() > 800


def test_validation_split_needs_enough_digits(tmp_path: Path) -> None:
    # a "training" file of only 10,000 digits (the test file, unpacked under the training
    # names) leaves nothing to fit on
    for kind in ("images-idx3", "labels-idx1"):
        with gzip.open(SHARED / f"t10k-{kind}-ubyte.gz") as f:
            (tmp_path / f"train-{kind}-ubyte").write_bytes(f.read())
    assert len(load_mnist("train", tmp_path, download=False)[1]) == 10000
    with pytest.raises(MnistError, match="too few for a 10000-digit validation split"):
        load_mnist("val", tmp_path, download=False)


def test_unpacked_files(tmp_path: Path, shared_test: tuple[np.ndarray, np.ndarray]) -> None:
    for name in TEST_FILES:
        with gzip.open(SHARED / name) as f:
            (tmp_path / name.removesuffix(".gz")).write_bytes(f.read())
    images, labels = load_mnist("test", tmp_path, download=False)
    np.testing.assert_array_equal(images, shared_test[0])
    np.testing.assert_array_equal(labels, shared_test[1])


# -- folder resolution ------------------------------------------------------------------------


def test_resolution_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    # Default: the shared folder next to this checkout's root.
    assert resolve_data_dir() == SHARED.resolve()
    monkeypatch.setenv("SBNN_MNIST_DIR", str(env))
    assert resolve_data_dir() == env
    assert resolve_data_dir(explicit) == explicit
    assert resolve_data_dir(str(explicit)) == explicit
    monkeypatch.delenv("SBNN_MNIST_DIR")

    # Without a repository root: ../shared/data/mnist relative to the working directory.
    monkeypatch.setattr(mnist, "_REPO_ROOT", tmp_path / "no-repo")
    work = tmp_path / "proj" / "work"
    work.mkdir(parents=True)
    (tmp_path / "proj" / "shared" / "data" / "mnist").mkdir(parents=True)
    monkeypatch.chdir(work)
    assert resolve_data_dir() == (tmp_path / "proj" / "shared" / "data" / "mnist").resolve()

    # Neither exists: the XDG cache folder.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "cache" / "sbnn" / "mnist"


# -- downloads --------------------------------------------------------------------------------


def _assert_downloaded(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(TEST_FILES)
    for key in ("test-images", "test-labels"):
        name, md5 = FILES[key]
        assert mnist._md5(folder / name) == md5


def test_download_with_mirrors_argument(
    tmp_path: Path, mirror: str, shared_test: tuple[np.ndarray, np.ndarray]
) -> None:
    data = tmp_path / "data"  # does not exist yet: the download creates it
    images, labels = load_mnist("test", data, mirrors=[mirror])
    _assert_downloaded(data)
    np.testing.assert_array_equal(images, shared_test[0])
    np.testing.assert_array_equal(labels, shared_test[1])


def test_download_with_env_mirrors_after_dead_one(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    mirror: str,
    closed_port_url: str,
    shared_test: tuple[np.ndarray, np.ndarray],
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # The first mirror is unreachable; the loader must fall through to the second.
    monkeypatch.setenv("SBNN_MNIST_MIRRORS", f"{closed_port_url}, {mirror}")
    monkeypatch.setenv("SBNN_MNIST_DIR", str(data))
    images, labels = load_mnist("test")
    _assert_downloaded(data)
    np.testing.assert_array_equal(images, shared_test[0])
    np.testing.assert_array_equal(labels, shared_test[1])


def test_corrupt_download_is_rejected(tmp_path: Path, bad_mirror: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(MnistError, match="md5") as info:
        load_mnist("test", data, mirrors=[bad_mirror])
    assert TEST_FILES[0] in str(info.value)
    assert list(data.iterdir()) == []  # neither the bad file nor a temp file is left behind


def test_offline_error_is_one_actionable_line(tmp_path: Path, closed_port_url: str) -> None:
    data = tmp_path / "data"
    with pytest.raises(MnistError) as info:
        load_mnist("test", data, mirrors=[closed_port_url])
    msg = str(info.value)
    assert "\n" not in msg
    assert TEST_FILES[0] in msg and str(data) in msg and "SBNN_MNIST_DIR" in msg
    assert not data.exists() or list(data.iterdir()) == []


def test_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(MnistError, match="SBNN_MNIST_DIR") as info:
        load_mnist("test", tmp_path, download=False)
    assert TEST_FILES[0] in str(info.value) and "\n" not in str(info.value)


# -- corrupt files ----------------------------------------------------------------------------


def test_corrupt_gz_md5(tmp_path: Path) -> None:
    for name in TEST_FILES:
        shutil.copy(SHARED / name, tmp_path / name)
    path = tmp_path / TEST_FILES[1]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(MnistError, match="md5") as info:
        load_mnist("test", tmp_path, download=False)
    assert str(path) in str(info.value)


def _raw(name: str) -> bytes:
    with gzip.open(SHARED / name) as f:
        return f.read()


def test_truncated_unpacked_file(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(_raw(TEST_FILES[0])[:-1])
    with pytest.raises(MnistError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    shutil.copy(SHARED / TEST_FILES[1], tmp_path / TEST_FILES[1])
    with pytest.raises(MnistError, match="truncated"):
        load_mnist("test", tmp_path, download=False)


def test_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / TEST_FILES[1]
    path.write_bytes((SHARED / TEST_FILES[1]).read_bytes()[:1000])
    with pytest.raises(MnistError) as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("header", [b"\x00\x00\x08\x02", b"\x00\x00\x0d\x03", b"PK\x03\x04"])
def test_bad_magic(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(header + _raw(TEST_FILES[1])[4:])
    with pytest.raises(MnistError, match="magic") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_wrong_image_size(tmp_path: Path) -> None:
    raw = bytearray(_raw(TEST_FILES[0]))
    raw[8:12] = (27).to_bytes(4, "big")
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(bytes(raw))
    with pytest.raises(MnistError, match="28x28"):
        read_idx(path)


def test_bad_split() -> None:
    with pytest.raises(ValueError, match="'train', 'fit', 'val', 'test'"):
        load_mnist("validation", SHARED)
