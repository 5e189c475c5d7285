"""Fuzzing damaged model files: every defect is refused on load with one line.

Structured defects (an array dropped, added, of another dtype or shape, out-of-range values,
padding bits, a damaged embedded config or format version) go through ``sbnn gen --model``:
exit status 2, one ``sbnn: error:`` line naming the file, no traceback, no warning, nothing
written. Raw byte damage (truncation, flipped bytes) goes through ``QuantizedModel.load``:
either a :class:`ModelFileError` or, where the damage missed everything that matters (a
zip timestamp), exactly the original model: never a different model.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbnn.cli import main
from sbnn.config import SbnnConfig
from sbnn.golden.qmodel import FORMAT_VERSION, ModelFileError, QuantizedModel

FUZZ = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
# 12 inputs: packed planes have 4 padding bits per row.
CFG = SbnnConfig(layers=(12, 8, 4), active_rows=4, macro_cols=8, macro_rows=64)
# Thresholds drawn per pass: a file that lost or mixed up the pass rows is another model.
MODEL = QuantizedModel.random(CFG, np.random.default_rng(1), per_pass=True)


def _arrays() -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        path = MODEL.save(Path(tmp) / "m.npz")
        with np.load(path) as d:
            return {k: d[k] for k in d.files}


ARRAYS = _arrays()
DTYPES = [np.int8, np.int16, np.int32, np.uint16, np.float32, np.float64, np.bool_]


@st.composite
def damaged(draw) -> dict[str, np.ndarray]:
    arrays = dict(ARRAYS)
    key = draw(st.sampled_from(sorted(arrays)))
    a = arrays[key]
    kind = draw(st.sampled_from(["drop", "extra", "dtype", "shape", "values", "config",
                                 "version"]))
    if kind == "drop" and key != "format_version":  # without it: version 1, still valid
        del arrays[key]
    elif kind == "drop":
        arrays[key] = np.array(0)
    elif kind == "extra":
        arrays[draw(st.sampled_from(["planes2", "thresholds2", "mask9", "weights",
                                     "config"]))] = a
    elif kind == "dtype":
        dtype = draw(st.sampled_from([d for d in DTYPES if d != a.dtype]))
        if key.startswith("mask") and dtype == np.bool_:
            dtype = np.float32  # bool masks are accepted (same meaning)
        if key.startswith("thresholds") and np.dtype(dtype).kind in "iu":
            dtype = np.float32  # another integer width is the same thresholds
        arrays[key] = a.astype(dtype) if a.ndim else np.array(a, dtype=np.float64)
    elif kind == "shape":
        if a.ndim == 0:
            arrays[key] = np.array([int(a), int(a)])
        else:
            axis = draw(st.integers(0, a.ndim - 1))
            cut = draw(st.integers(0, a.shape[axis] - 1)) if a.shape[axis] > 1 else 0
            grow = draw(st.booleans())
            arrays[key] = np.concatenate([a, a], axis=axis) if grow else \
                np.take(a, range(cut), axis=axis)
    elif kind == "values":
        key = draw(st.sampled_from(["planes0", "thresholds0", "thresholds1", "mask0",
                                    "mask1"]))
        a = arrays[key].copy()
        flat = a.reshape(-1)
        i = draw(st.integers(0, flat.size - 1))
        if key == "planes0":  # a padding bit of layer 0's packed rows (12 inputs)
            flat[i - i % 2 + 1] |= np.uint8(1 << draw(st.integers(0, 3)))
        elif key.startswith("thresholds"):
            lim = 1 << (CFG.threshold_bits - 1)
            flat[i] = draw(st.one_of(st.integers(lim, 2**62), st.integers(-2**62, -lim - 1)))
        else:
            flat[i] = draw(st.integers(2, 255))
        arrays[key] = a
    elif kind == "config":
        text = draw(st.one_of(
            # 2 or more: the text ends in "}\n", and without only the newline it is the same
            st.just(bytes(ARRAYS["config_json"])[:-draw(st.integers(2, 40))].decode()),
            st.just('{"layers": [12, 8, 4], "layers": [12, 8, 4]}'),
            st.just(CFG.replace(adc_bits=6).to_json()),  # another design than the arrays
            st.just('{"adc_bits": 99}'), st.just("[]"), st.text(max_size=8)))
        arrays["config_json"] = np.frombuffer(text.encode(), np.uint8)
    else:
        arrays["format_version"] = np.array(draw(st.one_of(
            st.integers(FORMAT_VERSION + 1, 2**40), st.integers(-2**40, 0))))
    return arrays


@FUZZ
@given(arrays=damaged())
def test_damaged_model_arrays_are_refused(arrays, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "m.npz", **arrays)
        cfg = CFG.write_snapshot(tmp / "c.json")
        before = sorted(p.name for p in tmp.iterdir())
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            status = main(["gen", "--config", str(cfg), "--model", str(tmp / "m.npz"),
                           "--out", str(tmp / "out")])
        out, err = capsys.readouterr()
        assert sorted(p.name for p in tmp.iterdir()) == before
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in out + err, err
    assert lines[0].startswith("sbnn: error:") and "m.npz" in lines[0], err


def _same(a: QuantizedModel, b: QuantizedModel) -> bool:
    return a.config == b.config and all(
        np.array_equal(x, y) for xs, ys in ((a.planes, b.planes),
                                            (a.thresholds, b.thresholds),
                                            (a.support_mask, b.support_mask))
        for x, y in zip(xs, ys))


@FUZZ
@given(data=st.data())
def test_damaged_model_bytes_never_load_as_another_model(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = MODEL.save(Path(tmp) / "m.npz")
        blob = bytearray(path.read_bytes())
        if data.draw(st.booleans(), label="truncate"):
            blob = blob[:data.draw(st.integers(0, len(blob) - 1), label="cut")]
        else:
            for _ in range(data.draw(st.integers(1, 4), label="flips")):
                i = data.draw(st.integers(0, len(blob) - 1), label="at")
                blob[i] ^= data.draw(st.integers(1, 255), label="xor")
        path.write_bytes(bytes(blob))
        try:
            loaded = QuantizedModel.load(path)
        except ModelFileError as exc:
            assert "\n" not in str(exc)
            return
    assert _same(loaded, MODEL)


def test_committed_models_load_as_version_1():
    """Models written before the version number existed validate and load (version 1);
    the committed ones written after it (the seeded runs) load with a row per pass."""
    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "models").rglob("*.npz")) + [root / "golden/assets/default_model.npz"]
    old = []
    for path in files:
        with np.load(path) as d:
            if "format_version" in d.files:
                assert int(d["format_version"]) == FORMAT_VERSION
                model = QuantizedModel.load(path)  # one threshold row per pass, stored
                assert [t.shape[0] for t in model.thresholds] == \
                    [model.config.planes] * model.config.num_layers
                continue
        old.append(path)
    assert len(old) >= 2 and len(files) > len(old)  # both kinds are committed
    for path in old:
        with np.load(path) as d:
            stored = [d[f"thresholds{i}"] for i in range(len(d.files)) if
                      f"thresholds{i}" in d.files]
        model = QuantizedModel.load(path)
        assert model.config.num_layers >= 2 and not model.per_pass_thresholds
        # version 1: the one stored row is every pass's row
        assert [t.shape for t in model.thresholds] == [(model.config.planes, len(s))
                                                      for s in stored]
        reach = model.config.threshold_reach
        for i, (t, s) in enumerate(zip(model.thresholds, stored)):
            # hidden thresholds beyond the accumulator's range are kept at its ends
            want = np.clip(s, -reach, reach) if i < model.config.num_layers - 1 else s
            assert all(np.array_equal(row, want) for row in t)


def test_saved_model_has_version_and_round_trips(tmp_path):
    assert FORMAT_VERSION == 2 and MODEL.per_pass_thresholds
    path = MODEL.save(tmp_path / "m.npz")
    with np.load(path) as d:
        assert int(d["format_version"]) == FORMAT_VERSION
    assert _same(QuantizedModel.load(path, CFG), MODEL)
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary left
    with np.load(path) as d:  # K = 1: two rows (passes) of 8 and of 4 neurons
        assert d["thresholds0"].shape == (2, 8) and d["thresholds1"].shape == (2, 4)


def _with_thresholds(tmp: Path, version: int | None, **thresholds) -> Path:
    """MODEL's file with thresholds arrays replaced and the version set (None: left out)."""
    arrays = dict(_arrays_of(MODEL, tmp))
    arrays.update(thresholds)
    if version is None:
        del arrays["format_version"]
    else:
        arrays["format_version"] = np.array(version)
    np.savez(tmp / "t.npz", **arrays)
    return tmp / "t.npz"


@pytest.mark.parametrize("version", [None, 1, 2])
def test_one_row_of_thresholds_is_every_passes_row(tmp_path, version):
    """Version 1 files (with or without the number) hold (m,): loaded, every pass uses it."""
    row0, row1 = np.arange(-4, 4), np.array([7, -7, 0, 3])
    model = QuantizedModel.load(_with_thresholds(tmp_path, version, thresholds0=row0,
                                                 thresholds1=row1))
    assert model.thresholds[0].tolist() == [list(range(-4, 4))] * 2
    assert model.thresholds[1].tolist() == [[7, -7, 0, 3]] * 2
    assert model.thresholds[0].dtype == np.int64 and not model.per_pass_thresholds


@pytest.mark.parametrize("version, shape, needs", [
    (1, (2, 8), "version 1 file with this config needs integers (8,);"),
    (None, (2, 8), "version 1 file with this config needs integers (8,);"),
    (2, (1, 8), "version 2 file with this config needs integers (2, 8) or (8,);"),
    (2, (3, 8), "version 2 file with this config needs integers (2, 8) or (8,);"),
    (2, (2, 9), "version 2 file with this config needs integers (2, 8) or (8,);"),
    (2, (2, 8, 1), "version 2 file with this config needs integers (2, 8) or (8,);"),
    (2, (8, 2), "version 2 file with this config needs integers (2, 8) or (8,);"),
])
def test_threshold_shapes_outside_the_version_are_refused(tmp_path, version, shape, needs):
    path = _with_thresholds(tmp_path, version, thresholds0=np.zeros(shape, np.int64))
    with pytest.raises(ModelFileError) as info:
        QuantizedModel.load(path)
    assert f"layer 0: thresholds0 is int64 {shape}, a {needs}" in str(info.value)
    assert "\n" not in str(info.value)


def test_constructor_takes_rows_per_pass_or_one_row():
    thr = [np.arange(16).reshape(2, 8), np.array([1, 2, 3, 4])]
    model = QuantizedModel(CFG, MODEL.planes, tuple(thr), MODEL.support_mask)
    assert model.thresholds[0].tolist() == [list(range(8)), list(range(8, 16))]
    assert model.thresholds[1].tolist() == [[1, 2, 3, 4], [1, 2, 3, 4]]
    assert model.per_pass_thresholds
    for bad in (np.zeros((3, 8), np.int64), np.zeros((2, 4), np.int64),
                np.zeros((1, 8), np.int64)):
        with pytest.raises(ModelFileError, match=r"layer 0: thresholds have shape .*needs "
                           r"\(2, 8\) \(passes, neurons\) or \(8,\)"):
            QuantizedModel(CFG, MODEL.planes, (bad, thr[1]), MODEL.support_mask)


@pytest.mark.parametrize("short", [1, 7])
def test_short_packed_planes_are_refused_not_padded(tmp_path, short):
    """Issue 19: planes shorter than the layer used to load as weights of -1."""
    cfg = SbnnConfig(layers=(16, 8, 4), active_rows=4, macro_cols=8, macro_rows=64)
    arrays = dict(_arrays_of(QuantizedModel.random(cfg, np.random.default_rng(0)), tmp_path))
    arrays["planes0"] = arrays["planes0"][..., :1] if short == 1 else \
        np.zeros((2, 8, 1), np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match=r"planes0 is uint8 \(2, 8, 1\)"):
        QuantizedModel.load(tmp_path / "bad.npz")


def _arrays_of(model: QuantizedModel, tmp: Path) -> dict[str, np.ndarray]:
    path = model.save(tmp / "src.npz")
    with np.load(path) as d:
        return {k: d[k] for k in d.files}
