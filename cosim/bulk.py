"""Bulk checking: decode the harness logs with numpy and compare them with the golden model.

The golden side is built per *block* of images that share the programmed state (model with
its mask, budget, exit margin): :func:`expected_block` turns ``hwpath.run_hw`` and the
schedule into flat arrays, one row per macro transaction in the order the hardware must issue
them, computed independently of the RTL from the spec (golden/hwpath.py). :func:`compare`
then checks every field of every transaction and result, and reports the first difference
as a :class:`~sbnn.cosim.scoreboard.Mismatch` (image, evaluation, cycle, field, expected,
actual), the same report the per-cycle bench gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbnn import timing
from sbnn.config import SbnnConfig
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import Sizes

from .codec import Codec
from .digest import fold_order
from .harness import HarnessLayout
from .scoreboard import Mismatch

__all__ = ["Log", "Expected", "read_logs", "expected_block", "concat", "compare", "CheckReport"]

_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def _fields(path: Path, fields: list[tuple[str, int]]) -> dict[str, np.ndarray]:
    """Fixed-width hex lines -> one (N, digits) nibble array per field."""
    width = sum(w for _, w in fields) + len(fields)  # separators and the newline
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % width:
        raise ValueError(f"{path}: {raw.size} bytes is not a whole number of {width}-byte "
                         f"records (truncated log?)")
    rows = _HEX[raw.reshape(-1, width)]
    out, pos = {}, 0
    for name, w in fields:
        nib = rows[:, pos:pos + w]
        if (nib == 255).any():
            bad = int(np.argwhere((nib == 255).any(axis=1))[0, 0])
            raise ValueError(f"{path}: record {bad} field '{name}' is not hex (X or Z from "
                             f"the design?)")
        out[name] = nib
        pos += w + 1
    return out


def _int(nib: np.ndarray) -> np.ndarray:
    """Nibbles, most significant first -> int64 (fields up to 60 bits)."""
    if nib.shape[1] > 15:
        raise ValueError("field too wide for int64")
    out = np.zeros(len(nib), dtype=np.int64)
    for i in range(nib.shape[1]):
        out = out << 4 | nib[:, i]
    return out


def _bits(nib: np.ndarray, count: int) -> np.ndarray:
    """Hex digits, most significant first -> (N, count) bits, bit 0 first (any width)."""
    msb_first = (nib[:, :, None] >> np.array([3, 2, 1, 0], dtype=np.uint8)) & 1
    return msb_first.reshape(len(nib), -1)[:, ::-1][:, :count].astype(np.uint8)


def _lanes(nib: np.ndarray, lane_bits: int) -> np.ndarray:
    """Hex of sign-extended lanes, lane N-1 first -> (N, lanes) signed, lane 0 first."""
    byte = (nib[:, 0::2] << 4 | nib[:, 1::2]).astype(np.uint8)
    if lane_bits == 8:
        return byte[:, ::-1].view(np.int8).astype(np.int16)
    return np.ascontiguousarray(byte).view(">i2")[:, ::-1].astype(np.int16)


@dataclass
class Log:
    """Everything the harness saw, decoded. Cycles are absolute (harness cycle counter)."""

    start_cycle: np.ndarray
    layer: np.ndarray
    plane: np.ndarray
    pass_: np.ndarray
    tile: np.ndarray
    gain: np.ndarray
    col_en: np.ndarray  # (T, macro_cols) bits: columns can outnumber an int64
    row_x: np.ndarray  # (T, active_rows)
    done_cycle: np.ndarray
    adc: np.ndarray  # (T_done, macro_cols)
    image_cycle: np.ndarray  # edge at which each image's last beat was taken
    result_cycle: np.ndarray
    results: list[dict]
    #: the macro of each start and of each done (all 0 with one macro)
    macro: np.ndarray | None = None
    done_macro: np.ndarray | None = None


def read_logs(cfg: SbnnConfig, prefix: str | Path) -> Log:
    h = HarnessLayout.of(cfg)
    prefix = str(prefix)
    s = _fields(Path(prefix + ".start"), h.start_fields())
    d = _fields(Path(prefix + ".done"), h.done_fields())
    r = _fields(Path(prefix + ".result"), h.result_fields())
    img = _fields(Path(prefix + ".image"), [("cycle", 8)])
    sz = Sizes(cfg)
    trace = _int(s["trace"])
    codec = Codec(cfg)
    payload = r["payload"]
    results = [codec.result(int("".join("0123456789abcdef"[v] for v in row), 16))
               for row in payload]
    return Log(
        start_cycle=_int(s["cycle"]),
        layer=trace & ((1 << sz.layer_bits) - 1),
        plane=(trace >> sz.layer_bits) & ((1 << sz.plane_bits) - 1),
        pass_=(trace >> (sz.layer_bits + sz.plane_bits)) & ((1 << sz.plane_bits) - 1),
        tile=_int(s["group"]), gain=_int(s["gain"]),
        col_en=_bits(s["col_en"], cfg.macro_cols),
        row_x=_lanes(s["row_x"], h.x_lane), done_cycle=_int(d["cycle"]),
        adc=_lanes(d["adc"], h.adc_lane), image_cycle=_int(img["cycle"]),
        result_cycle=_int(r["cycle"]), results=results,
        macro=_int(s["macro"]) if "macro" in s else np.zeros(len(s["cycle"]), np.int64),
        done_macro=_int(d["macro"]) if "macro" in d else np.zeros(len(d["cycle"]), np.int64))


@dataclass
class Expected:
    """Golden transactions of a run of images, flat in issue order, plus per-image results."""

    images: np.ndarray  # (I,) image index (for reports)
    n_evals: np.ndarray  # (I,)
    cycle: np.ndarray  # (T,) relative to the image's compute start
    layer: np.ndarray
    plane: np.ndarray
    pass_: np.ndarray
    tile: np.ndarray
    gain: np.ndarray
    col_en: np.ndarray  # (T, macro_cols) bits
    row_x: np.ndarray  # (T, active_rows)
    adc: np.ndarray  # (T, macro_cols)
    results: list[dict] = field(default_factory=list)
    macro: np.ndarray | None = None  # (T,) the macro of each evaluation


def expected_block(model: QuantizedModel, pixels: np.ndarray, budget: int,
                   exit_margin: int | None, images: np.ndarray) -> Expected:
    """Golden transactions for images run back to back under one programmed state
    (``hwpath.expected_transactions``, flattened to each image's prefix in issue order)."""
    sched = hwpath.schedule(model, budget)
    hw = hwpath.run_hw(model, pixels, budget, exit_margin, keep_adc=True)
    tx = hwpath.expected_transactions(model, sched, hw)
    # The harness logs several macros' transactions in (cycle, macro) order; an image's
    # evaluations are a prefix of that order too (cosim/digest.py fold_order).
    order = np.array(fold_order(sched), dtype=np.int64)
    keep = tx.issued_mask[:, order]  # (B, E): each image's prefix
    count, evals = keep.shape

    def per_eval(name: str) -> np.ndarray:
        return np.broadcast_to(tx.per_evaluation(name)[order], keep.shape)[keep]

    col_en = np.broadcast_to(tx.col_en[order][None],
                             (count, evals, model.config.macro_cols))[keep]
    dac = tx.dac_conversions
    results = []
    for i in range(count):
        res = hwpath.expected_result(sched, hw, i)
        res["dac_conversions"] = int(dac[i])
        results.append(res)
    return Expected(images=np.asarray(images), n_evals=tx.issued, cycle=per_eval("cycle"),
                    layer=per_eval("layer"), plane=per_eval("plane"), pass_=per_eval("pass_"),
                    tile=per_eval("tile"), gain=per_eval("gain"), col_en=col_en,
                    row_x=tx.row_x[:, order][keep], adc=tx.adc[:, order][keep],
                    results=results, macro=per_eval("macro"))


def concat(blocks: list[Expected]) -> Expected:
    cat = np.concatenate
    return Expected(
        images=cat([x.images for x in blocks]), n_evals=cat([x.n_evals for x in blocks]),
        **{k: cat([getattr(x, k) for x in blocks]) for k in
           ("cycle", "layer", "plane", "pass_", "tile", "gain", "col_en", "row_x", "adc",
            "macro")},
        results=[r for x in blocks for r in x.results])


@dataclass
class CheckReport:
    images: int
    transactions: int
    results: int
    mismatches: int
    first: Mismatch | None
    result_list: list[dict]
    bad: np.ndarray  # (images,) True where anything of that image differed


_TRACE = (("cycle", "cycle"), ("macro", "macro"), ("pass", "pass_"), ("layer", "layer"),
          ("tile", "tile"), ("plane", "plane"), ("gain", "gain"), ("col_en", "col_en"),
          ("row_x", "row_x"), ("adc", "adc"), ("done_cycle", "done_cycle"),
          ("done_macro", "done_macro"))
_RESULT = ("cls", "logits", "cycles", "exit_plane", "macro_evals", "column_evals",
           "dac_conversions", "adc_conversions", "result_cycle")


def compare(cfg: SbnnConfig, log: Log, exp: Expected) -> CheckReport:
    """Every transaction and result of ``log`` against ``exp``; counts images whose every
    check passed, reports the first difference in issue order."""
    n_img = len(exp.n_evals)
    bad = np.zeros(len(exp.n_evals), dtype=bool)  # by position in the run, not image id
    first: tuple[int, Mismatch] | None = None  # (transaction order key, mismatch)

    def note(order: int, mm: Mismatch, pos: int | None) -> None:
        nonlocal first
        if pos is None:
            bad[:] = True
        else:
            bad[pos] = True
        if first is None or order < first[0]:
            first = (order, mm)

    starts = log.image_cycle + timing.COMPUTE_START_DELAY
    if len(log.image_cycle) != n_img or len(log.results) != n_img:
        note(-1, Mismatch(-1, "run", None, "images/results",
                          f"{n_img} images and results",
                          f"{len(log.image_cycle)} images taken, {len(log.results)} results"),
             None)
        n_img = min(n_img, len(log.image_cycle), len(log.results))

    # Which image each transaction belongs to: the last image taken before it started.
    # Starts and images are both in cycle order, so image i owns starts
    # act_offsets[i] .. act_offsets[i+1]-1.
    owner = np.searchsorted(log.image_cycle, log.start_cycle, side="left") - 1
    if len(owner) and owner[0] < 0:
        note(-1, Mismatch(-1, "run", None, "presence", "no macro start before the first image",
                          f"a start at cycle {int(log.start_cycle[0])}"), None)
    act_offsets = np.searchsorted(owner, np.arange(n_img + 1), side="left")
    act_count = np.diff(act_offsets)
    exp_offsets = np.concatenate([[0], np.cumsum(exp.n_evals)])
    ok_count = act_count == exp.n_evals[:n_img]
    for i in np.flatnonzero(~ok_count):
        k = int(min(act_count[i], exp.n_evals[i]))
        cyc = int(exp.cycle[exp_offsets[i] + k]) if k < exp.n_evals[i] else None
        note(int(exp_offsets[i] + k), Mismatch(
            int(exp.images[i]), f"eval {k}", cyc, "presence",
            f"{int(exp.n_evals[i])} transactions", f"{int(act_count[i])} transactions"),
             int(i))

    # Transactions of the images whose counts agree, aligned one to one.
    sel_e = np.concatenate([np.arange(exp_offsets[i], exp_offsets[i + 1])
                            for i in np.flatnonzero(ok_count)] or [np.zeros(0, np.int64)])
    sel_a = np.concatenate([np.arange(act_offsets[i], act_offsets[i + 1])
                            for i in np.flatnonzero(ok_count)] or [np.zeros(0, np.int64)])
    img_of = np.repeat(np.arange(len(exp.n_evals)), exp.n_evals)[sel_e]
    if len(log.done_cycle) != len(log.start_cycle):
        note(int(exp_offsets[-1]), Mismatch(-1, "run", None, "done pulses",
                                            f"{len(log.start_cycle)} (one per start)",
                                            len(log.done_cycle)), None)
    n_done = len(log.done_cycle)
    starts_macro = log.macro if log.macro is not None else np.zeros(len(log.start_cycle),
                                                                    np.int64)
    dones_macro = log.done_macro if log.done_macro is not None else np.zeros(n_done, np.int64)
    exp_macro = exp.macro if exp.macro is not None else np.zeros(len(exp.cycle), np.int64)
    actual = {
        "cycle": log.start_cycle[sel_a] - starts[np.minimum(img_of, len(starts) - 1)],
        "pass_": log.pass_[sel_a], "layer": log.layer[sel_a], "tile": log.tile[sel_a],
        "plane": log.plane[sel_a], "gain": log.gain[sel_a], "col_en": log.col_en[sel_a],
        "row_x": log.row_x[sel_a],
        "adc": log.adc[np.minimum(sel_a, n_done - 1)] if n_done else
        np.zeros((len(sel_a), cfg.macro_cols), np.int16),
        "done_cycle": (log.done_cycle[np.minimum(sel_a, n_done - 1)] - log.start_cycle[sel_a])
        if n_done else np.full(len(sel_a), -1),
        "macro": starts_macro[sel_a],
        # the done paired with a start (both in (cycle, macro) order) is of its macro
        "done_macro": dones_macro[np.minimum(sel_a, n_done - 1)] if n_done else
        np.full(len(sel_a), -1),
    }
    expected = {k: getattr(exp, k)[sel_e] for _, k in _TRACE
                if k not in ("done_cycle", "done_macro", "macro")}
    expected["macro"] = exp_macro[sel_e]
    expected["done_cycle"] = np.full(len(sel_e), cfg.macro_latency)
    expected["done_macro"] = expected["macro"]
    for name, key in _TRACE:
        a, e = actual[key], expected[key]
        diff = (a != e) if a.ndim == 1 else (a != e).any(axis=1)
        if key in ("adc", "done_cycle", "done_macro"):
            diff = diff | (sel_a >= n_done)
        hits = np.flatnonzero(diff)
        if hits.size:
            t = int(hits[0])
            i = int(img_of[t])
            lane = ""
            av, ev = a[t], e[t]
            if a.ndim == 2:
                lane = f"[{int(np.flatnonzero(av != ev)[0])}]" if (av != ev).any() else ""
                av, ev = tuple(int(v) for v in av), tuple(int(v) for v in ev)
            else:
                av, ev = int(av), int(ev)
            note(int(sel_e[t]), Mismatch(int(exp.images[i]),
                                         f"eval {int(sel_e[t] - exp_offsets[i])}",
                                         int(exp.cycle[sel_e[t]]), name + lane, ev, av), i)
            bad[img_of[hits]] = True  # every image with a bad transaction disagrees

    # Results: every field, plus the cycle at which it was offered.
    for i in range(n_img):
        act = dict(log.results[i])
        act["result_cycle"] = int(log.result_cycle[i] - starts[i])
        exp_r = dict(exp.results[i])
        exp_r["result_cycle"] = exp_r["cycles"]
        for f in _RESULT:
            if exp_r[f] != act[f]:
                note(int(exp_offsets[i + 1]) - 1, Mismatch(
                    int(exp.images[i]), "result", act["cycles"], f, exp_r[f], act[f]), i)
                break
    bad[n_img:] = True  # images that never produced a result
    return CheckReport(images=len(exp.n_evals), transactions=int(len(sel_a)), results=n_img,
                       mismatches=int(bad.sum()), first=first[1] if first else None,
                       result_list=log.results[:n_img], bad=bad)
