"""In-order comparison of observed macro transactions and results against the golden trace."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Mismatch", "Scoreboard"]

TRACE_FIELDS = ("cycle", "pass", "layer", "tile", "plane", "gain", "col_en", "row_x", "adc")
RESULT_FIELDS = ("cls", "logits", "cycles", "exit_plane", "macro_evals", "column_evals",
                 "dac_conversions", "adc_conversions")


@dataclass
class Mismatch:
    image: int
    what: str  # "eval 12" or "result"
    cycle: int | None
    field: str
    expected: object
    actual: object

    def __str__(self) -> str:
        at = f" at cycle {self.cycle}" if self.cycle is not None else ""
        return (f"image {self.image}, {self.what}{at}: field '{self.field}' expected "
                f"{_short(self.expected)}, got {_short(self.actual)}")


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 200 else text[:200] + "..."


def _first_diff(a: object, b: object) -> str:
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return f"[{i}]"
    return ""


@dataclass
class Scoreboard:
    """Collects every mismatch; ``first`` is what a failing test reports."""

    mismatches: list[Mismatch] = field(default_factory=list)
    transactions: int = 0
    results: int = 0

    def check_image(self, image: int, expected_trace: list[dict], actual_trace: list[dict],
                    expected_result: dict, actual_result: dict) -> bool:
        before = len(self.mismatches)
        for i in range(max(len(expected_trace), len(actual_trace))):
            if i >= len(expected_trace) or i >= len(actual_trace):
                exp = expected_trace[i] if i < len(expected_trace) else None
                act = actual_trace[i] if i < len(actual_trace) else None
                cyc = (exp or act)["cycle"]
                self.mismatches.append(Mismatch(image, f"eval {i}", cyc, "presence",
                                                "a transaction" if exp else "none",
                                                "none" if exp else "a transaction"))
                break
            exp, act = expected_trace[i], actual_trace[i]
            self.transactions += 1
            # Several macros: the macro is checked too (both traces carry it).
            fields = TRACE_FIELDS + tuple(f for f in ("macro", "done") if f in exp)
            bad = [f for f in fields if exp[f] != act.get(f)]
            if bad:
                f = bad[0]
                self.mismatches.append(Mismatch(image, f"eval {i}", exp["cycle"],
                                                f + _first_diff(exp[f], act[f]), exp[f],
                                                act[f]))
                break
        self.results += 1
        for f in RESULT_FIELDS:
            if expected_result[f] != actual_result[f]:
                self.mismatches.append(Mismatch(image, "result", actual_result.get("cycles"),
                                                f + _first_diff(expected_result[f],
                                                                actual_result[f]),
                                                expected_result[f], actual_result[f]))
                break
        return len(self.mismatches) == before

    @property
    def first(self) -> Mismatch | None:
        return self.mismatches[0] if self.mismatches else None
