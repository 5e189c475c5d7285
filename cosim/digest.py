"""Per-image transaction digests: the fast engine's compact log, both sides of it.

Logging every macro transaction as text cost ~98 KB per image (1 GB for the MNIST test set),
and decoding it was a third of the run. Instead the harness (cosim/harness.py) folds every
transaction of an image into two 64-bit signatures as the simulation runs, the way built-in
self-test compacts responses into a MISR, and writes one short line per image:

    v_start = mix(sum_j w_j * K_j)   over the start's fields: cycle (relative to the image's
              compute start), layer, plane, pass, tile, gain, each column-enable bit, each
              row DAC code (sign-extended)
    v_done  = mix(sum_j w_j * K'_j)  over the done's cycle (relative) and each ADC code
    D <- mix(D xor v)                for every start (resp. done) in issue order

with ``mix`` the splitmix64 finalizer, arithmetic mod 2^64 and odd constants ``K``. One wrong
field changes ``v`` (a single lane error d * K_j is nonzero mod 2^64 for any |d| < 2^63), and
``mix`` is a bijection, so it changes ``D``; several errors cancel with probability about
2^-64. Order is part of the signature. The record also carries the start and done counts and
the result payload, which is compared field by field.

The golden side (:func:`expected_block`) computes the same signatures from the reference
model (golden/hwpath.py), vectorized over images: one numpy step per evaluation of the
schedule. When an image's signature differs, cosim/fast.py reruns that image alone with the
full transaction log (cosim/bulk.py) to name the first differing transaction and field.

Both halves live in this module so the SystemVerilog and the numpy arithmetic cannot drift;
tests/test_digest.py runs them against each other.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sbnn.config import SbnnConfig
from sbnn.golden import hwpath
from sbnn.golden.qmodel import QuantizedModel
from sbnn.rtl.interfaces import Sizes

__all__ = ["Constants", "constants", "fold_order", "mix64", "expected_block",
           "expected_block_cached",
           "ExpectedDigests",
           "sv_functions", "SEED"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
#: Initial value of both signatures of every image.
SEED = 0x243F6A8885A308D3
#: Scalar fields of a start, in the order of their constants.
START_FIELDS = ("cycle", "layer", "plane", "pass", "tile", "gain")


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on a uint64 array (wrapping arithmetic; arrays only, since numpy
    scalars warn on overflow)."""
    z = np.asarray(z, dtype=np.uint64)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _odd_constants(tag: int, count: int) -> np.ndarray:
    idx = np.arange(count, dtype=np.uint64) + np.uint64(tag << 32)
    return mix64(idx * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1)) | np.uint64(1)


@dataclass(frozen=True)
class Constants:
    start_fields: np.ndarray  # (6,) for START_FIELDS
    col_en: np.ndarray  # (macro_cols,)
    row_x: np.ndarray  # (active_rows,)
    done_cycle: np.ndarray  # (1,)
    adc: np.ndarray  # (macro_cols,)
    #: (1,) each: the macro of a start and of a done (several macros; 0 adds nothing, so
    #: one macro's signatures are those of before)
    start_macro: np.ndarray = field(default_factory=lambda: _odd_constants(6, 1))
    done_macro: np.ndarray = field(default_factory=lambda: _odd_constants(7, 1))


def constants(cfg: SbnnConfig) -> Constants:
    return Constants(start_fields=_odd_constants(1, len(START_FIELDS)),
                     col_en=_odd_constants(2, cfg.macro_cols),
                     row_x=_odd_constants(3, cfg.active_rows),
                     done_cycle=_odd_constants(4, 1), adc=_odd_constants(5, cfg.macro_cols))


def fold_order(sched: hwpath.Schedule) -> list[int]:
    """Indices of ``sched``'s evaluations in the order the harness folds them: issue order
    with one macro; with several, (start cycle, macro), the order in which the harness sees
    the macros' probes (the dones, ``macro_latency`` after their starts, follow the same
    order). An image's evaluations are a prefix of the issue order and of this order both,
    since a later pass starts after every step of the earlier ones."""
    if sched.config.num_macros == 1:
        return list(range(len(sched.evals)))
    return sorted(range(len(sched.evals)),
                  key=lambda t: (sched.evals[t].cycle, sched.evals[t].macro))


def _u64(x: np.ndarray) -> np.ndarray:
    """Signed integers -> their two's complement mod 2^64."""
    return np.asarray(x, dtype=np.int64).view(np.uint64)


@dataclass
class ExpectedDigests:
    """What the harness must report for each image of a block (arrays of length B)."""

    n_start: np.ndarray
    start: np.ndarray  # uint64 signatures
    done: np.ndarray
    cls: np.ndarray
    logits: np.ndarray  # (B, classes)
    cycles: np.ndarray
    exit_plane: np.ndarray
    macro_evals: np.ndarray
    column_evals: np.ndarray
    dac_conversions: np.ndarray
    adc_conversions: np.ndarray

    @staticmethod
    def concat(parts: list[ExpectedDigests]) -> ExpectedDigests:
        names = ExpectedDigests.__dataclass_fields__
        return ExpectedDigests(**{k: np.concatenate([getattr(p, k) for p in parts])
                                  for k in names})


def expected_block(model: QuantizedModel, pixels: np.ndarray, budget: int,
                   exit_margin: int | None) -> ExpectedDigests:
    """Signatures and results of images run back to back under one programmed state,
    from the reference integer path and the timing contract (never from the RTL)."""
    cfg = model.config
    k = constants(cfg)
    sched = hwpath.schedule(model, budget)
    hw = hwpath.run_hw(model, pixels, budget, exit_margin, keep_adc=True)
    b = len(pixels)
    per_pass = {p: (sched.total_cycles(p), sched.column_evals(p)) for p in sched.passes}
    exit_pass = hw.exit_pass.astype(np.int64)
    n_evals = sched.issued(exit_pass)
    d_start = np.full(b, SEED, dtype=np.uint64)
    d_done = np.full(b, SEED, dtype=np.uint64)
    dac = np.zeros(b, dtype=np.int64)
    parallel = cfg.num_macros > 1
    for t in fold_order(sched):
        ev = sched.evals[t]
        active = t < n_evals
        if not active.any():
            break
        # (B, active_rows) row codes, (B, macro_cols) ADC codes (0 on disabled columns)
        row_x, adc = hwpath.evaluation_codes(model, ev, hw)
        dac += np.where(active, hwpath.dac_conversions(row_x), 0)
        # (1,)-shaped, not scalars: numpy scalars warn on the intended wrap-around
        fixed = _u64([[ev.cycle, ev.layer, ev.plane, ev.pass_, ev.tile, ev.gain]]) @ \
            k.start_fields
        if parallel:
            fixed = fixed + _u64([[ev.macro]]) @ k.start_macro
        bits = hwpath.column_bits([ev.col_en], cfg.macro_cols).astype(np.uint64)
        v = mix64(fixed + bits @ k.col_en + _u64(row_x) @ k.row_x)
        d_start = np.where(active, mix64(d_start ^ v), d_start)
        done_fixed = _u64([[ev.cycle + cfg.macro_latency]]) @ k.done_cycle
        if parallel:
            done_fixed = done_fixed + _u64([[ev.macro]]) @ k.done_macro
        v = mix64(done_fixed + _u64(adc) @ k.adc)
        d_done = np.where(active, mix64(d_done ^ v), d_done)
    cycles = np.array([per_pass[int(p)][0] for p in exit_pass], dtype=np.int64)
    col_evals = np.array([per_pass[int(p)][1] for p in exit_pass], dtype=np.int64)
    return ExpectedDigests(n_start=n_evals, start=d_start, done=d_done,
                           cls=hw.classes.astype(np.int64), logits=hw.logits.astype(np.int64),
                           cycles=cycles, exit_plane=exit_pass, macro_evals=n_evals,
                           column_evals=col_evals, dac_conversions=dac,
                           adc_conversions=col_evals)


def _cache_key(model: QuantizedModel, pixels: np.ndarray, budget: int,
               exit_margin: int | None) -> str:
    """Everything the expected signatures depend on, this module's code included."""
    h = hashlib.sha256(model.config.to_json().encode())
    h.update(repr((budget, exit_margin, pixels.shape, str(pixels.dtype))).encode())
    for arrays in (model.planes, model.thresholds, model.support_mask):
        for arr in arrays:
            h.update(np.ascontiguousarray(arr).tobytes())
    h.update(np.ascontiguousarray(pixels).tobytes())
    for source in (__file__, hwpath.__file__):  # a changed reference invalidates the cache
        h.update(Path(source).read_bytes())
    return h.hexdigest()[:24]


def expected_block_cached(model: QuantizedModel, pixels: np.ndarray, budget: int,
                          exit_margin: int | None, cache: Path | None) -> ExpectedDigests:
    """:func:`expected_block`, kept in ``cache`` (a folder; None: not cached). The record is
    about 100 bytes per image, keyed by the model's arrays, the images, the controls and
    the source of this module and the reference path, so rerunning a regression on the
    same model and images skips the golden computation, and any change recomputes it."""
    if cache is None:
        return expected_block(model, pixels, budget, exit_margin)
    path = Path(cache) / f"{_cache_key(model, pixels, budget, exit_margin)}.npz"
    try:
        with np.load(path) as data:
            return ExpectedDigests(**{k: data[k] for k in ExpectedDigests.__dataclass_fields__})
    except (OSError, KeyError, ValueError):
        pass
    exp = expected_block(model, pixels, budget, exit_margin)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        np.savez(tmp, **{k: getattr(exp, k) for k in ExpectedDigests.__dataclass_fields__})
        tmp.replace(path)
    except OSError:
        pass  # a read-only or full cache only costs the next computation
    return exp


def _sv_array(name: str, values: np.ndarray) -> str:
    items = ", ".join(f"64'h{int(v):016x}" for v in values)
    return f"  localparam logic [63:0] {name} [{len(values)}] = '{{{items}}};"


def sv_functions(cfg: SbnnConfig) -> str:
    """SystemVerilog declarations (inside the harness module) computing the same
    signatures: constants, ``mix64``, ``start_sig(...)`` and ``done_sig(...)``."""
    k = constants(cfg)
    sz = Sizes(cfg)
    xb, ab, c, r = cfg.x_bits, cfg.adc_bits, cfg.macro_cols, cfg.active_rows
    # Several macros: each start and done also names its macro (an extra argument).
    parallel = cfg.num_macros > 1
    macro_arg = ",\n      input logic [7:0] macro" if parallel else ""
    start_macro = " + 64'(macro) * K_START_MACRO[0]" if parallel else ""
    done_macro = " + 64'(macro) * K_DONE_MACRO[0]" if parallel else ""
    macro_constants = (f"{_sv_array('K_START_MACRO', k.start_macro)}\n"
                       f"{_sv_array('K_DONE_MACRO', k.done_macro)}\n") if parallel else ""
    return f"""  // Transaction signatures (cosim/digest.py has the numpy twin).
{_sv_array("K_START", k.start_fields)}
{_sv_array("K_COL_EN", k.col_en)}
{_sv_array("K_ROW_X", k.row_x)}
{_sv_array("K_DONE", k.done_cycle)}
{_sv_array("K_ADC", k.adc)}
{macro_constants}  function automatic logic [63:0] mix64(input logic [63:0] z0);
    logic [63:0] z;
    z = (z0 ^ (z0 >> 30)) * 64'hbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 64'h94d049bb133111eb;
    return z ^ (z >> 31);
  endfunction
  function automatic logic [63:0] start_sig(input logic [31:0] rel,
      input logic [{sz.layer_bits - 1}:0] layer, input logic [{sz.plane_bits - 1}:0] plane,
      input logic [{sz.plane_bits - 1}:0] pass_, input logic [{sz.group_bits - 1}:0] tile,
      input logic [{cfg.gain_bits - 1}:0] gain, input logic [{c - 1}:0] col_en,
      input logic [{r * xb - 1}:0] row_x{macro_arg});
    logic [63:0] acc;
    acc = 64'(rel) * K_START[0] + 64'(layer) * K_START[1] + 64'(plane) * K_START[2]
          + 64'(pass_) * K_START[3] + 64'(tile) * K_START[4] + 64'(gain) * K_START[5]{start_macro};
    for (int i = 0; i < {c}; i++) if (col_en[i]) acc = acc + K_COL_EN[i];
    for (int i = 0; i < {r}; i++)
      acc = acc + 64'($signed(row_x[i * {xb} +: {xb}])) * K_ROW_X[i];
    return mix64(acc);
  endfunction
  function automatic logic [63:0] done_sig(input logic [31:0] rel,
      input logic [{c * ab - 1}:0] adc{macro_arg});
    logic [63:0] acc;
    acc = 64'(rel) * K_DONE[0]{done_macro};
    for (int i = 0; i < {c}; i++)
      acc = acc + 64'($signed(adc[i * {ab} +: {ab}])) * K_ADC[i];
    return mix64(acc);
  endfunction
"""


@dataclass
class DigestLog:
    """The harness's per-image records, in result order."""

    base: np.ndarray  # cycle at which each image's compute started (absolute)
    result_cycle: np.ndarray  # relative to base
    n_start: np.ndarray
    n_done: np.ndarray
    start: np.ndarray  # uint64
    done: np.ndarray
    results: list[dict]
    totals: tuple[int, int, int, int]  # starts, dones, images sent, results


def read_log(cfg: SbnnConfig, prefix: str) -> DigestLog:
    from .codec import Codec  # (codec imports amaranth layouts; keep module import light)

    codec = Codec(cfg)
    with open(prefix + ".digest") as f:
        rows = [line.split() for line in f if line.strip()]
    with open(prefix + ".totals") as f:
        totals = tuple(int(v) for v in f.read().split())
    if any(len(r) != 7 for r in rows) or len(totals) != 4:
        raise ValueError(f"{prefix}.digest/.totals: malformed record (truncated log?)")

    def col(i: int, dtype=np.int64) -> np.ndarray:
        return np.array([int(r[i], 16) for r in rows], dtype=dtype)

    return DigestLog(base=col(0), result_cycle=col(1), n_start=col(2), n_done=col(3),
                     start=col(4, np.uint64), done=col(5, np.uint64),
                     results=[codec.result(int(r[6], 16)) for r in rows], totals=totals)


#: Result fields compared one by one (besides the signatures), in report order.
RESULT_FIELDS = ("cls", "logits", "cycles", "exit_plane", "macro_evals", "column_evals",
                 "dac_conversions", "adc_conversions")


@dataclass
class DigestCheck:
    images: int
    transactions: int  # starts whose signatures matched (each also has its done)
    results: int
    bad: np.ndarray  # (images,) True where anything of that image differed
    first: str | None  # the first difference, in words (image position, what differed)


def compare(log: DigestLog, exp: ExpectedDigests) -> DigestCheck:
    """Every image's counts, signatures and result fields against the golden model's."""
    n = len(exp.n_start)
    got = len(log.results)
    bad = np.ones(n, dtype=bool)
    k = min(n, got)
    ok = (log.n_start[:k] == exp.n_start[:k]) & (log.n_done[:k] == exp.n_start[:k]) \
        & (log.start[:k] == exp.start[:k]) & (log.done[:k] == exp.done[:k]) \
        & (log.result_cycle[:k] == exp.cycles[:k])
    why = {}
    for i in np.flatnonzero(~ok):
        why[int(i)] = "transactions (signature, count or result cycle)"
    for i in range(k):
        res = log.results[i]
        for name in RESULT_FIELDS:
            want = getattr(exp, name)[i]
            want = tuple(int(v) for v in want) if name == "logits" else int(want)
            if res[name] != want:
                ok[i] = False
                why.setdefault(i, f"result field {name}: expected {want}, got {res[name]}")
                break
    bad[:k] = ~ok
    first = None
    if got != n:
        first = f"{n} images sent, {got} results"
    elif log.totals[:2] != (int(log.n_start.sum()), int(log.n_done.sum())):
        first = (f"{log.totals[0]} starts and {log.totals[1]} dones in all, "
                 f"{int(log.n_start.sum())} and {int(log.n_done.sum())} within images")
        bad[:] = True
    if why:
        i = min(why)
        first = first or f"image position {i}: {why[i]}"
    return DigestCheck(images=n, transactions=int(log.n_start[:k][ok[:k]].sum()),
                       results=k, bad=bad, first=first)
