"""Bad input on the command line: one clear ``error:`` line, no traceback, nothing written.

Each case builds its bad files in a temp folder and returns the argv for ``sbnn.cli.main``;
the command must end with a non-zero status and a single error line naming the problem,
and the output it was pointed at (``out/``) must not exist afterwards.
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


# ----------------------------------------------------------------- command-line values

def _images(tmp: Path, **arrays) -> Path:
    path = tmp / "imgs.npz"
    np.savez(path, **arrays)
    return path


def _sim_images(make):
    def build(tmp: Path) -> list[str]:
        return ["sim", "--images", str(make(tmp)), "--budgets", "0", "--count", "1",
                "--build", str(tmp / "out")]
    return build


def _sim(*extra):
    return lambda tmp: ["sim", *extra, "--build", str(tmp / "out")]


def _mnist_cmd(*argv):
    return lambda tmp: [a.replace("{tmp}", str(tmp)) for a in argv]


needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="no shared MNIST folder")
GOOD = np.zeros((3, 28, 28), np.uint8)
ARG_CASES = [
    ("sim-count-negative", _sim("--count", "-5", "--budgets", "0"), "--count"),
    ("sim-count-zero", _sim("--count", "0", "--budgets", "0"), "--count"),
    ("sim-count-too-large", _sim("--count", "100000"), "holds 300 images"),
    ("sim-budget-outside", _sim("--budgets", "0,5"), "--budgets: 5 is outside"),
    ("sim-images-not-npz", _sim_images(lambda tmp: _write(tmp / "i.npz", "text\n")), "--images"),
    ("sim-images-no-labels", _sim_images(lambda tmp: _images(tmp, images=GOOD)), "labels"),
    ("sim-images-missing", _sim_images(lambda tmp: tmp / "nope.npz"), "does not exist"),
    ("sim-image-outside", _sim("--count", "10", "--image", "10", "--budgets", "0"),
     "--image 10 is outside 0..9"),
    ("sim-image-cycle-engine", _sim("--count", "10", "--image", "2", "--engine", "cycle",
                                    "--budgets", "0"), "needs --engine fast"),
    ("sim-workers-zero", _sim("--workers", "0", "--budgets", "0"), "--workers"),
    ("sim-mnist-test-zero", _sim("--mnist-test", "0"), "--mnist-test must be in 1..10000"),
    ("sim-mnist-test-and-images", _sim("--mnist-test", "5", "--images", "x.npz"),
     "either --images or --mnist-test"),
    ("equiv-case-malformed", lambda tmp: ["equiv", "--case", "12", "--build",
                                          str(tmp / "out")], "CONFIG_SEED:INDEX"),
    ("equiv-configs-zero", lambda tmp: ["equiv", "--configs", "0", "--build",
                                        str(tmp / "out")], "--configs must be at least 1"),
    ("equiv-cases-negative", lambda tmp: ["equiv", "--cases", "-4", "--build",
                                          str(tmp / "out")], "--cases must be at least 1"),
    ("gen-out-and-bundle", lambda tmp: ["gen", "--out", str(tmp / "out"), "--bundle",
                                        str(tmp / "out2")], "either --out"),
    ("gen-bundle-is-file", lambda tmp: ["gen", "--bundle", str(_write(tmp / "b", "x"))],
     "is not a folder"),
    ("sweep-energy-bad", lambda tmp: ["sweep", "--energy", str(_write(tmp / "e.json", "{x")),
                                      "--out", str(tmp / "out")], "cannot parse energy"),
    ("sweep-energy-unknown", lambda tmp: ["sweep", "--energy",
                                          str(_write(tmp / "e.json", {"zap_pj": 1})),
                                          "--out", str(tmp / "out")], "zap_pj"),
    pytest.param("sweep-count-negative",
                 _mnist_cmd("sweep", "--data-dir", str(SHARED_MNIST), "--count", "-1",
                            "--out", "{tmp}/out"), "--count must be in 1..10000",
                 marks=needs_mnist),
    pytest.param("sweep-count-too-large",
                 _mnist_cmd("sweep", "--data-dir", str(SHARED_MNIST), "--count", "20000",
                            "--out", "{tmp}/out"), "--count must be in 1..10000",
                 marks=needs_mnist),
    pytest.param("sample-data-count-negative",
                 _mnist_cmd("sample-data", "--data-dir", str(SHARED_MNIST), "--count", "-3",
                            "--out", "{tmp}/out/s.npz"), "--count must be in 1..10000",
                 marks=needs_mnist),
]


def _blocker(tmp: Path) -> str:
    """A plain file where a command wants a folder."""
    return str(_write(tmp / "blocker", "x"))


def _folder(tmp: Path, name: str = "adir") -> str:
    (tmp / name).mkdir()
    return str(tmp / name)


def _energy(content):
    return lambda tmp: ["sweep", "--energy", str(_write(tmp / "e.json", content)),
                        "--out", str(tmp / "out")]


DEFAULT_MODEL = str(Path(__file__).resolve().parents[1] / "golden/assets/default_model.npz")
# The default design's EXIT_MARGIN register: threshold_bits + 1 = 16 bits.
MARGIN_MAX = "65535"

# Runtime controls and outputs, checked against the design and its registers (issue 19).
RANGE_CASES = [
    ("sim-exit-margin-too-wide", _sim("--exit-margin", "65536", "--budgets", "0"),
     f"--exit-margin must be in 0..{MARGIN_MAX}"),
    ("sim-exit-margin-negative", _sim("--exit-margin", "-1", "--budgets", "0"),
     "--exit-margin must be in 0.."),
    ("sim-random-seed-negative", _sim("--random-seed", "-3", "--budgets", "0"),
     "--random-seed must be in 0..4294967295"),
    ("sim-random-seed-huge", _sim("--random-seed", str(2**70), "--budgets", "0"),
     "--random-seed must be in 0..4294967295"),
    ("sim-workers-huge", _sim("--workers", "100000", "--budgets", "0"),
     "--workers must be in 1..256"),
    ("sim-images-float", _sim_images(lambda tmp: _images(tmp, images=GOOD.astype(np.float32),
                                                         labels=np.zeros(3, np.uint8))),
     "must be uint8"),
    ("sim-images-27x27", _sim_images(lambda tmp: _images(tmp, images=GOOD[:, 1:, 1:],
                                                         labels=np.zeros(3, np.uint8))),
     "784 pixels per image"),
    ("sim-images-empty", _sim_images(lambda tmp: _images(tmp, images=GOOD[:0],
                                                         labels=np.zeros(0, np.uint8))),
     "N >= 1"),
    ("sim-labels-range", _sim_images(lambda tmp: _images(tmp, images=GOOD,
                                                         labels=np.array([0, 12, 1]))),
     "labels must be in 0..9"),
    ("sim-labels-count", _sim_images(lambda tmp: _images(tmp, images=GOOD,
                                                         labels=np.zeros(2, np.uint8))),
     "one per image"),
    ("sim-labels-float", _sim_images(lambda tmp: _images(tmp, images=GOOD,
                                                         labels=np.zeros(3, np.float32))),
     "need integers"),
    ("sim-build-is-file", lambda tmp: ["sim", "--budgets", "0", "--build", _blocker(tmp)],
     "--build"),
    ("sim-report-is-folder", lambda tmp: ["sim", "--budgets", "0", "--report", _folder(tmp),
                                          "--build", str(tmp / "out")], "is a folder"),
    ("sweep-keeps-above-1", lambda tmp: ["sweep", "--keeps", "1.5", "--out", str(tmp / "out")],
     "--keeps values must be fractions in [0, 1], got 1.5"),
    ("sweep-keeps-nan", lambda tmp: ["sweep", "--keeps", "nan", "--out", str(tmp / "out")],
     "--keeps"),
    ("sweep-margins-too-wide", lambda tmp: ["sweep", "--margins", "10,70000",
                                            "--out", str(tmp / "out")],
     f"--margins must be in 0..{MARGIN_MAX}"),
    ("sweep-margins-negative", lambda tmp: ["sweep", "--margins", "-5",
                                            "--out", str(tmp / "out")], "--margins"),
    ("sweep-confirm-too-many", lambda tmp: ["sweep", "--confirm", "500",
                                            "--out", str(tmp / "out")],
     "--confirm must be in 0..300"),
    ("sweep-count-zero", lambda tmp: ["sweep", "--count", "0", "--out", str(tmp / "out")],
     "--count must be in 1..10000"),
    ("sweep-out-is-file", lambda tmp: ["sweep", "--out", _blocker(tmp)], "is not a folder"),
    ("sweep-energy-nan", _energy('{"cycle_pj": NaN}'), "cannot parse energy"),
    ("sweep-energy-duplicate", _energy('{"cycle_pj": 1, "cycle_pj": 2}'), "duplicate key"),
    ("sweep-energy-array", _energy("[1, 2]"), "must hold a JSON object"),
    ("sweep-energy-string", _energy({"cycle_pj": "x"}), "'cycle_pj' must be a finite number"),
    ("sweep-energy-not-utf8", _energy(b"\xff\xfe"), "cannot parse energy"),
    ("equiv-seed-negative", lambda tmp: ["equiv", "--seed", "-1", "--build", str(tmp / "out")],
     "--seed must be in 0.."),
    ("equiv-seed-span", lambda tmp: ["equiv", "--seed", str(2**32 - 2), "--configs", "5",
                                     "--build", str(tmp / "out")], "--seed must be in 0.."),
    ("equiv-case-negative-seed", lambda tmp: ["equiv", "--case=-1:0",
                                              "--build", str(tmp / "out")],
     "--case CONFIG_SEED must be in 0.."),
    ("equiv-workers-huge", lambda tmp: ["equiv", "--workers", "999",
                                        "--build", str(tmp / "out")], "--workers"),
    ("gen-out-is-file", lambda tmp: ["gen", "--out", _blocker(tmp)], "is not a folder"),
    ("gen-out-under-file", lambda tmp: ["gen", "--out", _blocker(tmp) + "/rtl"], "is a file"),
    ("lint-out-is-file", lambda tmp: ["lint", "--out", _blocker(tmp)], "is not a folder"),
    ("train-layers-inputs", lambda tmp: ["train", "--layers", "100,10", "--out",
                                         str(tmp / "out")], "must start with 784 inputs"),
    ("train-layers-outputs", lambda tmp: ["train", "--layers", "784,64,5", "--out",
                                          str(tmp / "out")], "at least 10 outputs"),
    ("train-config-inputs", lambda tmp: ["train", "--config", str(_write(
        tmp / "c.json", {"layers": [16, 8, 10], "macro_rows": 1024})), "--out",
        str(tmp / "out")], "must start with 784 inputs"),
    ("train-seed-huge", lambda tmp: ["train", "--seed", str(2**40), "--out", str(tmp / "out")],
     "--seed (or [train] seed) must be in 0..4294967295"),
    ("train-out-is-file", lambda tmp: ["train", "--out", _blocker(tmp)], "is not a folder"),
    ("train-table-unknown", lambda tmp: ["train", "--config", str(_write(
        tmp / "c.toml", "[sbnn]\n[train]\nbase_epoch = 3\n")), "--out", str(tmp / "out")],
     "base_epoch"),
    ("train-table-duplicate", lambda tmp: ["train", "--config", str(_write(
        tmp / "c.json", '{"train": {"lr": 0.1, "lr": 0.2}}')), "--out", str(tmp / "out")],
     "duplicate key 'lr'"),
    ("eval-json-is-folder", lambda tmp: ["eval", "--json", _folder(tmp)], "is a folder"),
    ("eval-table-out-is-file", lambda tmp: ["eval", "--baseline", DEFAULT_MODEL,
                                            "--out", _blocker(tmp)], "is not a folder"),
    ("prune-out-is-folder", lambda tmp: ["prune", "--model", DEFAULT_MODEL,
                                         "--out", _folder(tmp, "p.npz")], "is a folder"),
    ("prune-seed-negative", lambda tmp: ["prune", "--model", DEFAULT_MODEL, "--seed", "-2",
                                         "--out", str(tmp / "out" / "p.npz")], "--seed"),
    ("sample-data-not-npz", lambda tmp: ["sample-data", "--out", str(tmp / "out" / "s.txt")],
     "must name a .npz file"),
    ("sample-data-out-is-folder", lambda tmp: ["sample-data", "--out", _folder(tmp, "s.npz")],
     "is a folder"),
    ("sample-data-count-huge", lambda tmp: ["sample-data", "--count", "20000",
                                            "--out", str(tmp / "out" / "s.npz")],
     "--count must be in 1..10000"),
]

ALL = CONFIG_CASES + DATA_CASES + MODEL_CASES + ARG_CASES + RANGE_CASES


def _ids(cases):
    return [c.values[0] if hasattr(c, "values") else c[0] for c in cases]


@pytest.fixture
def quiet_env(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # default outputs (out/rtl, docs, ...) would land here
    monkeypatch.setenv("SBNN_MNIST_MIRRORS", "http://127.0.0.1:9/")  # never download
    return work


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


@pytest.mark.parametrize("name, build, words", ALL, ids=_ids(ALL))
@pytest.mark.filterwarnings("error::RuntimeWarning")  # e.g. numpy's NaN cast warning
def test_bad_input_one_clear_line(name, build, words, quiet_env, capsys):
    argv = build(quiet_env)
    before = _tree(quiet_env)
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, out + err
    assert _tree(quiet_env) == before  # nothing written, nothing touched
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sbnn: error:"), err
    assert words in lines[0], err
    assert not (quiet_env / "out").exists()
    assert not any(p.name == "out" for p in quiet_env.iterdir())
    assert not (quiet_env / "docs").exists()


# ----------------------------------------------------------------- argparse errors (exit 2)

ARGPARSE_CASES = [
    ("unknown-subcommand", ["frobnicate"], "invalid choice: 'frobnicate'", "sbnn: error:"),
    ("no-subcommand", [], "command", "sbnn: error:"),
    ("unknown-option", ["gen", "--frob"], "unrecognized arguments: --frob", "sbnn: error:"),
    ("count-not-int", ["sim", "--count", "ten"], "argument --count", "sbnn sim: error:"),
    ("budgets-not-int", ["sim", "--budgets", "1,x"], "--budgets must be comma-separated",
     "sbnn sim: error:"),
    ("budgets-empty", ["sim", "--budgets", ""], "--budgets", "sbnn sim: error:"),
    ("margins-float", ["sweep", "--margins", "1.5"], "--margins", "sbnn sweep: error:"),
    ("keeps-not-float", ["sweep", "--keeps", "half"], "argument --keeps", "sbnn sweep: error:"),
    ("sample-data-no-out", ["sample-data"], "--out", "sbnn sample-data: error:"),
    ("exit-margin-not-int", ["sim", "--exit-margin", "1e3"], "argument --exit-margin",
     "sbnn sim: error:"),
    ("sim-engine-unknown", ["sim", "--engine", "warp"], "argument --engine",
     "sbnn sim: error:"),
    ("equiv-seed-not-int", ["equiv", "--seed", "x"], "argument --seed", "sbnn equiv: error:"),
]


@pytest.mark.parametrize("name, argv, words, prefix", ARGPARSE_CASES,
                         ids=[c[0] for c in ARGPARSE_CASES])
def test_bad_arguments_exit_2_with_usage(name, argv, words, prefix, quiet_env, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith(prefix) and words in last, err
    assert err.strip().splitlines()[0].startswith("usage:")
    assert not any(quiet_env.iterdir())


# ----------------------------------------------------------------- atomic outputs

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
