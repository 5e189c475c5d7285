"""Bad input files: one clear ``error:`` line, exit status 2, no traceback, nothing written.

Each case builds its bad files (configs, MNIST data, model files) in a temp folder and
returns the argv for ``sbnn.cli.main``; the command must end with status 2 and a single error
line naming the problem, leave every file in the folder as it was, and warn nothing.
Command-line values are in test_bad_options.py, atomic outputs in test_fuzz_outputs.py.
"""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_MNIST

from sbnn.cli import main
from sbnn.config import SbnnConfig

HAVE_MNIST = SHARED_MNIST.is_dir()
SMALL = SbnnConfig(layers=(16, 8, 4), active_rows=4, macro_cols=8, macro_rows=64)


def _write(path: Path, text) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text if isinstance(text, str) else json.dumps(text))
    return path


# ----------------------------------------------------------------- config files (gen --out)

def _gen_config(name, content):
    def build(tmp: Path) -> list[str]:
        cfg = _write(tmp / name, content)
        return ["gen", "--config", str(cfg), "--out", str(tmp / "out")]
    return build


CONFIG_CASES = [
    ("toml-syntax", _gen_config("c.toml", "layers = [784, 10\n"), "cannot parse"),
    ("json-syntax", _gen_config("c.json", '{"layers": [784, 10],}'), "cannot parse"),
    ("string-for-int", _gen_config("c.json", {"active_rows": "64"}), "'active_rows'"),
    ("layers-strings", _gen_config("c.json", {"layers": ["784", "10"]}), "'layers'"),
    ("layers-not-list", _gen_config("c.json", {"layers": 784}), "'layers'"),
    ("layers-float", _gen_config("c.json", {"layers": [784, 10.5]}), "'layers'"),
    ("negative-cols", _gen_config("c.json", {"macro_cols": -4}), "'macro_cols'"),
    ("negative-rows", _gen_config("c.toml", "macro_rows = -64\n"), "'macro_rows'"),
    ("k-too-large", _gen_config("c.json", {"num_supports": 2, "macro_cols": 2}),
     "'num_supports'"),
    ("layers-exceed-rows", _gen_config("c.json", {"macro_rows": 128}), "'macro_rows'"),
    ("unknown-field", _gen_config("c.json", {"layerz": [1, 2]}), "'layerz'"),
    ("adc-step-not-pow2", _gen_config("c.toml", "adc_steps = [3, 1]\n"), "'adc_steps'"),
    ("empty-json", _gen_config("c.json", ""), "cannot parse"),
    ("json-array", _gen_config("c.json", [{"layers": [784, 10]}]), "table/object"),
    ("sbnn-not-table", _gen_config("c.toml", 'sbnn = "x"\n'), "'sbnn'"),
    ("clock-string", _gen_config("c.json", {"clock_mhz": "fast"}), "'clock_mhz'"),
    ("gains-wrong-len", _gen_config("c.json", {"plane_gains": [1]}), "'plane_gains'"),
    ("not-utf8", _gen_config("c.json", b"\xff\xfe{}"), "utf-8"),
    ("config-missing", lambda tmp: ["gen", "--config", str(tmp / "nope.toml"),
                                    "--out", str(tmp / "out")], "does not exist"),
    # strict files (issue 19)
    ("json-duplicate-key", _gen_config("c.json", '{"adc_bits": 6, "adc_bits": 7}'),
     "duplicate key 'adc_bits'"),
    ("json-duplicate-nested", _gen_config("c.json", '{"sbnn": {"dac_bits": 3, "dac_bits": 4}}'),
     "duplicate key 'dac_bits'"),
    ("toml-duplicate-key", _gen_config("c.toml", "adc_bits = 6\nadc_bits = 7\n"),
     "cannot parse"),
    ("json-nan", _gen_config("c.json", '{"clock_mhz": NaN}'), "NaN is not a number"),
    ("json-infinity", _gen_config("c.json", '{"clock_mhz": -Infinity}'), "-Infinity"),
    ("field-beside-sbnn", _gen_config("c.toml", "adc_bits = 6\n[sbnn]\nlayers = [784, 10]\n"),
     "'adc_bits': given at top level"),
    ("unknown-table", _gen_config("c.toml", "[sbnnn]\nlayers = [784, 10]\n"),
     "unknown table [sbnnn]"),
    ("unknown-table-beside-sbnn", _gen_config("c.toml", "[sbnn]\n[trian]\nlr = 0.1\n"),
     "unknown table [trian]"),
    ("train-not-table", _gen_config("c.json", {"train": 5}), "'train'"),
    # fields used to derive defaults: checked first
    ("gains-empty", _gen_config("c.json", {"plane_gains": []}), "'plane_gains'"),
    ("gains-zero", _gen_config("c.json", {"plane_gains": [0, 0]}), "'plane_gains'"),
    ("gains-negative", _gen_config("c.json", {"plane_gains": [-2, 1]}), "'plane_gains'"),
    ("gains-string", _gen_config("c.json", {"plane_gains": "42"}), "'plane_gains'"),
    ("gains-int", _gen_config("c.json", {"plane_gains": 4}), "'plane_gains'"),
    ("steps-string", _gen_config("c.json", {"adc_steps": "4"}), "'adc_steps'"),
    ("dac-bits-string", _gen_config("c.json", {"dac_bits": "4"}), "'dac_bits'"),
    ("adc-bits-float", _gen_config("c.json", {"adc_bits": 8.0}), "'adc_bits'"),
    ("active-rows-zero", _gen_config("c.json", {"active_rows": 0}), "'active_rows'"),
    ("supports-bool", _gen_config("c.json", {"num_supports": True}), "'num_supports'"),
    # what the generated RTL could not hold
    ("buffer-too-wide", _gen_config("c.json", {"layers": [65536, 10], "macro_rows": 65536}),
     "activation buffer"),
    ("macro-word-too-wide", _gen_config("c.json", {"active_rows": 1024, "macro_cols": 128,
                                                   "macro_rows": 8192}), "'macro_cols'"),
]


# ----------------------------------------------------------------- MNIST data (eval --data-dir)

def _idx(magic: int, dims: tuple[int, ...], payload: int | None = None) -> bytes:
    head = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    size = int(np.prod(dims)) if payload is None else payload
    return head + bytes(size)


def _mnist_dir(images: bytes | None, labels: bytes | None, gz: bool = False):
    def build(tmp: Path) -> list[str]:
        data = tmp / "mnist"
        data.mkdir()
        suffix = ".gz" if gz else ""
        for name, blob in (("t10k-images-idx3-ubyte", images), ("t10k-labels-idx1-ubyte", labels)):
            if blob is not None:
                (data / (name + suffix)).write_bytes(gzip.compress(blob) if gz else blob)
        return ["eval", "--data-dir", str(data), "--json", str(tmp / "out" / "e.json")]
    return build


def _truncated_real_gz(tmp: Path) -> list[str]:
    data = tmp / "mnist"
    data.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(SHARED_MNIST / name, data / name)
    blob = (data / "t10k-images-idx3-ubyte.gz").read_bytes()
    (data / "t10k-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 3])
    return ["eval", "--data-dir", str(data), "--json", str(tmp / "out" / "e.json")]


def _data_dir_is_file(tmp: Path) -> list[str]:
    f = _write(tmp / "mnist", "not a folder")
    return ["eval", "--data-dir", str(f), "--json", str(tmp / "out" / "e.json")]


LABELS5 = _idx(2049, (5,))
DATA_CASES = [
    ("idx-wrong-magic", _mnist_dir(_idx(1234, (5, 28, 28)), LABELS5), "bad IDX magic"),
    ("idx-truncated-payload", _mnist_dir(_idx(2051, (5, 28, 28), 1000), LABELS5),
     "truncated payload"),
    ("idx-empty", _mnist_dir(b"", LABELS5), "truncated IDX header"),
    ("idx-wrong-size", _mnist_dir(_idx(2051, (5, 27, 27)), LABELS5), "expected 28x28"),
    ("idx-swapped", _mnist_dir(LABELS5, _idx(2051, (5, 28, 28))), "swapped"),
    ("idx-count-mismatch", _mnist_dir(_idx(2051, (5, 28, 28)), _idx(2049, (4,))),
     "4 labels for 5 images"),
    ("idx-label-range", _mnist_dir(_idx(2051, (1, 28, 28)),
                                   _idx(2049, (1,), 0) + bytes([12])), "outside 0..9"),
    ("gz-wrong-md5", _mnist_dir(_idx(2051, (5, 28, 28)), LABELS5, gz=True), "md5 mismatch"),
    ("data-dir-is-file", _data_dir_is_file, "not writable"),
    pytest.param("gz-truncated-real", _truncated_real_gz, "md5 mismatch",
                 marks=pytest.mark.skipif(not HAVE_MNIST, reason="no shared MNIST folder")),
]


# ----------------------------------------------------------------- model files

def _model_npz(**overrides):
    """A .npz of SMALL's model with arrays replaced (None = left out)."""
    def build(tmp: Path) -> list[str]:
        model = tmp / "m.npz"
        from sbnn.golden.qmodel import QuantizedModel

        QuantizedModel.random(SMALL, np.random.default_rng(0)).save(model)
        with np.load(model) as d:
            arrays = dict(d)
        for key, value in overrides.items():
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value
        np.savez(model, **arrays)
        cfg = SMALL.write_snapshot(tmp / "c.json")
        return ["gen", "--config", str(cfg), "--model", str(model), "--out", str(tmp / "out")]
    return build


def _model_other_config(tmp: Path) -> list[str]:
    from sbnn.golden.qmodel import QuantizedModel

    model = QuantizedModel.random(SMALL, np.random.default_rng(0)).save(tmp / "m.npz")
    cfg = SMALL.replace(adc_bits=6).write_snapshot(tmp / "c.json")
    return ["gen", "--config", str(cfg), "--model", str(model), "--out", str(tmp / "out")]


def _model_raw(content):
    def build(tmp: Path) -> list[str]:
        model = _write(tmp / "m.npz", content)
        return ["eval", "--model", str(model), "--json", str(tmp / "out" / "e.json")]
    return build


def _cfg_bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def _model_padded(tmp: Path) -> list[str]:
    """A 12-input layer: its packed planes have 4 padding bits per row, set here."""
    from sbnn.golden.qmodel import QuantizedModel

    cfg = SbnnConfig(layers=(12, 8, 4), active_rows=4, macro_cols=8, macro_rows=64)
    model = QuantizedModel.random(cfg, np.random.default_rng(0)).save(tmp / "m.npz")
    with np.load(model) as d:
        arrays = dict(d)
    arrays["planes0"] = arrays["planes0"] | np.uint8(1)
    np.savez(model, **arrays)
    return ["gen", "--model", str(model), "--config", str(cfg.write_snapshot(tmp / "c.json")),
            "--out", str(tmp / "out")]


def _model_npy(tmp: Path) -> list[str]:
    with open(tmp / "m.npz", "wb") as f:
        np.save(f, np.zeros(3))
    return ["eval", "--model", str(tmp / "m.npz"), "--json", str(tmp / "out" / "e.json")]


def _thr(value, dtype=np.float64) -> np.ndarray:
    return np.full(8, value, dtype)


MODEL_CASES = [
    ("model-other-config", _model_other_config, "different config (fields differ: adc_bits)"),
    ("model-missing-planes", _model_npz(planes1=None), "planes1"),
    ("model-missing-config", _model_npz(config_json=None), "config_json"),
    ("model-planes-shape", _model_npz(planes0=np.zeros((1, 8, 2), np.uint8)),
     "layer 0: planes0 is uint8 (1, 8, 2)"),
    ("model-planes-dtype", _model_npz(planes0=np.zeros((2, 8, 2), np.float64)),
     "not a valid sbnn model file"),
    ("model-thresholds-shape", _model_npz(thresholds1=np.zeros(3, np.int64)),
     "layer 1: thresholds"),
    ("model-thresholds-range", _model_npz(thresholds0=np.full(8, 1 << 40, np.int64)),
     "signed range"),
    ("model-mask-shape", _model_npz(mask0=np.zeros((8, 3), np.uint8)), "support_mask"),
    ("model-config-not-json", _model_npz(config_json=_cfg_bytes("{oops")),
     "not a valid sbnn model file"),
    ("model-config-array", _model_npz(config_json=_cfg_bytes("[]")), "not a JSON object"),
    ("model-config-invalid", _model_npz(config_json=_cfg_bytes('{"adc_bits": 99}')),
     "embedded config is invalid"),
    ("model-not-zip", _model_raw("just some text\n"), "not a valid sbnn model file"),
    ("model-corrupt-zip", _model_raw(b"PK\x03\x04 not really a zip"),
     "not a valid sbnn model file"),
    ("model-empty", _model_raw(b""), "not a valid sbnn model file"),
    ("model-missing", lambda tmp: ["eval", "--model", str(tmp / "nope.npz")], "does not exist"),
    # validated in full (issue 19)
    ("model-planes-short", _model_npz(planes0=np.zeros((2, 8, 1), np.uint8)),
     "planes0 is uint8 (2, 8, 1), the config needs uint8 (2, 8, 2)"),
    ("model-planes-long", _model_npz(planes1=np.zeros((2, 4, 2), np.uint8)),
     "planes1 is uint8 (2, 4, 2)"),
    ("model-planes-int16", _model_npz(planes0=np.zeros((2, 8, 2), np.int16)), "planes0 is int16"),
    ("model-padding-bits", _model_padded, "bits set past the layer's 12 inputs"),
    ("model-thresholds-nan", _model_npz(thresholds0=_thr(np.nan)), "NaN or infinite"),
    ("model-thresholds-inf", _model_npz(thresholds0=_thr(-np.inf)), "NaN or infinite"),
    ("model-thresholds-float", _model_npz(thresholds0=_thr(1.5)), "needs integers"),
    ("model-thresholds-uint64", _model_npz(thresholds0=_thr(2**63 + 5, np.uint64)),
     "signed range"),
    ("model-mask-values", _model_npz(mask0=np.full((8, 1), 2, np.uint8)), "only 0/1"),
    ("model-mask-float", _model_npz(mask1=np.ones((4, 1), np.float32)), "mask1 is float32"),
    ("model-extra-array", _model_npz(planes2=np.zeros((2, 4, 1), np.uint8)),
     "unexpected array(s) planes2"),
    ("model-version-future", _model_npz(format_version=np.array(99)), "format version 99"),
    ("model-version-zero", _model_npz(format_version=np.array(0)), "format version 0"),
    ("model-version-list", _model_npz(format_version=np.array([1, 1])), "one integer"),
    ("model-version-text", _model_npz(format_version=np.array("1")), "one integer"),
    ("model-config-duplicate", _model_npz(config_json=_cfg_bytes('{"adc_bits": 8, '
                                                                 '"adc_bits": 6}')),
     "duplicate key"),
    ("model-config-not-utf8", _model_npz(config_json=np.frombuffer(b"\xff{}", np.uint8)),
     "config_json is not JSON"),
    ("model-config-int16", _model_npz(config_json=np.zeros(4, np.int16)), "1-D uint8"),
    ("model-object-array", _model_npz(planes0=np.array([None, 1], dtype=object)),
     "cannot read it"),
    ("model-npy", _model_npy, "single .npy array"),
]


ALL = CONFIG_CASES + DATA_CASES + MODEL_CASES


def _ids(cases):
    return [c.values[0] if hasattr(c, "values") else c[0] for c in cases]


def make_quiet_env(tmp_path: Path, monkeypatch) -> Path:
    """An empty working folder as cwd (default outputs would land there), no downloads."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default outputs (out/rtl, docs, ...) would land here
    monkeypatch.setenv("SBNN_MNIST_MIRRORS", "http://127.0.0.1:9/")  # never download
    return work


@pytest.fixture
def quiet_env(tmp_path, monkeypatch):
    return make_quiet_env(tmp_path, monkeypatch)


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def check_one_clear_line(build, words: str, env: Path, capsys) -> None:
    """Run the case's command: exit status 2, one ``sbnn: error:`` line holding ``words``,
    no traceback, and nothing under ``env`` written or touched."""
    argv = build(env)
    before = _tree(env)
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, out + err
    assert _tree(env) == before  # nothing written, nothing touched
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sbnn: error:"), err
    assert words in lines[0], err


@pytest.mark.parametrize("name, build, words", ALL, ids=_ids(ALL))
@pytest.mark.filterwarnings("error::RuntimeWarning")  # e.g. numpy's NaN cast warning
def test_bad_input_one_clear_line(name, build, words, quiet_env, capsys):
    check_one_clear_line(build, words, quiet_env, capsys)
