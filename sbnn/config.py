"""The one configuration object that drives the golden model, the RTL, the tiler and the cosim.

Every generated artifact gets a JSON snapshot of the :class:`SbnnConfig` it was made from, so a
Verilog file, a hardware image and a cosim run can always be traced back to the exact design.

Mapping rules that follow from the fields (documented in docs/architecture.md):

* Each layer of ``n`` inputs and ``m`` neurons is cut into row blocks of ``active_rows`` inputs
  and column blocks of ``neurons_per_tile`` neurons. A (row block, column block) pair is a
  *tile*; tiles are numbered layer by layer, column block by column block, row block by row
  block, and tile ``t`` is stored in word-line group ``t`` (rows ``t*active_rows`` ..) of the
  macro.
* Inside a tile, column ``k * neurons_per_tile + i`` holds plane ``k`` (0 = base, 1..K =
  supports) of neuron ``i`` of the column block.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sbnn.tiling import Tiling

__all__ = ["ConfigError", "SbnnConfig", "load_config", "load_train_table",
           "read_record_file", "MAX_WIRE_BITS"]

PIXEL_BITS = 8  # MNIST pixels arrive as 8-bit unsigned values on the input stream
#: The widest wire Amaranth converts (amaranth.back.rtlil refuses more than 2**16 bits).
MAX_WIRE_BITS = 1 << 16

#: Largest ADC step (a shift of up to 16 bits).
_MAX_ADC_STEP = 1 << 16
#: Integer fields: (lowest, highest) allowed value. Each is checked on its own, first.
_INT_FIELDS: dict[str, tuple[int, int]] = {
    "num_supports": (0, 7), "active_rows": (1, 1024), "macro_cols": (1, 1024),
    "macro_rows": (1, 1 << 20), "dac_bits": (1, PIXEL_BITS), "gain_bits": (1, 8),
    "adc_bits": (2, 16), "macro_latency": (2, 64), "input_lanes": (1, 256),
}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what is allowed."""

    def __init__(self, field_name: str, message: str):
        self.field_name = field_name
        super().__init__(f"config field '{field_name}': {message}")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class JsonRecord:
    """JSON I/O of the frozen parameter records (this config, golden.variability's
    Variation): snapshot next to every artifact, and strict loading (see :meth:`load_file`)."""

    #: Raised as ``error(field, message)`` for a key that is not a field.
    _field_error: type[ConfigError] = ConfigError
    #: Tables a file may hold beside the record's own table (e.g. ``[train]``).
    _sibling_tables: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def write_snapshot(self, path: str | Path) -> Path:
        """Write the JSON snapshot that accompanies a generated artifact (atomically)."""
        from sbnn.fileio import atomic_write_text

        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise cls._field_error(key, f"unknown field; allowed fields are "
                                            f"{', '.join(sorted(known))}")
        return cls(**data)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    @classmethod
    def load_file(cls, path: str | Path, option: str, table: str):
        """From a TOML or JSON file, fields at top level or under ``[table]``; every problem
        is one error naming ``option`` (the command-line option that gave the file) or the
        field. See :func:`read_record_file` for what makes a file strict."""
        fields, _ = read_record_file(path, option, table, cls._sibling_tables,
                                     cls._field_error)
        return cls.from_dict(fields)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a key given twice is an error, not "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} (give each field once)")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a config may hold")


def parse_record_text(text: str, toml: bool) -> Any:
    """Parse TOML (``toml=True``) or strict JSON: no duplicate keys, no NaN/Infinity."""
    if toml:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        return tomllib.loads(text)  # TOML itself forbids duplicate keys
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def read_record_file(path: str | Path, option: str, table: str,
                     siblings: tuple[str, ...] = (),
                     error: type[ConfigError] = ConfigError
                     ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(fields, sibling tables) of a strict TOML/JSON record file.

    The fields sit either at top level or under ``[table]``, not both: a top-level field
    beside a ``[table]`` would be silently hidden by it, so it is an error. Besides, only
    the tables named in ``siblings`` may appear (each must be a table). A file with no
    fields at all (an empty TOML file, ``{}``) gives the record's defaults.
    """
    path = Path(path)
    if not path.is_file():
        raise error(option, f"file {str(path)!r} does not exist")
    try:
        data = parse_record_text(path.read_text(), path.suffix.lower() == ".toml")
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one clear line
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(option, f"cannot parse {str(path)!r}: {msg}") from None
    if not isinstance(data, dict):
        raise error(option, f"{str(path)!r} must hold a table/object of fields")
    allowed = ", ".join(f"[{t}]" for t in (table, *siblings))
    others: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in (table, *siblings):
            if not isinstance(value, dict):
                raise error(key, f"in {str(path)!r} must be a table of fields, "
                                 f"got {value!r}")
            if key != table:
                others[key] = value
        elif isinstance(value, dict):
            raise error(key, f"unknown table [{key}] in {str(path)!r}; allowed tables are "
                             f"{allowed}")
        elif table in data:
            raise error(key, f"given at top level of {str(path)!r} beside a [{table}] "
                             f"table, which would hide it; move it into [{table}]")
    fields = data[table] if table in data else \
        {k: v for k, v in data.items() if k not in siblings}
    return fields, others


@dataclass(frozen=True)
class SbnnConfig(JsonRecord):
    """A Supported-BinaryNet design: network shape, analog macro and controller parameters.

    All fields are validated at construction; an invalid value raises :class:`ConfigError`
    naming the field.
    """

    #: Layer widths, inputs first: ``(784, 256, 10)`` is 784 pixels -> 256 hidden -> 10 classes.
    layers: tuple[int, ...] = (784, 256, 10)
    #: Number of support planes K per weight (0 = plain BNN).
    num_supports: int = 1
    #: Total bitcell rows of the macro (word-line groups x ``active_rows``).
    macro_rows: int = 16384
    #: Rows driven together in one evaluation (one word-line group).
    active_rows: int = 64
    #: Bitcell columns of the macro; each has its own ADC.
    macro_cols: int = 32
    #: Resolution of the first layer's row DAC input code: pixel >> (8 - dac_bits).
    dac_bits: int = 4
    #: Width of the row DAC gain code.
    gain_bits: int = 3
    #: DAC gain code per plane (base first); support scale a_k = gain[k] / gain[0].
    #: Omitted: powers of two, 2**K .. 1, so a_k = 2**-k.
    plane_gains: tuple[int, ...] | None = None
    #: ADC resolution (signed two's complement codes).
    adc_bits: int = 8
    #: ADC step per weight layer, a power of two: code = clamp(floor(sum / step)).
    #: Omitted: the smallest step whose range covers a quarter of the first layer's full
    #: scale and half of a hidden layer's (see docs/architecture.md).
    adc_steps: tuple[int, ...] | None = None
    #: Cycles from an evaluation's start to its ADC codes.
    macro_latency: int = 4
    #: Controller clock in MHz (for the SDC file and time-per-inference figures).
    clock_mhz: float = 100.0
    #: Pixels per beat on the input stream.
    input_lanes: int = 16

    #: A file may carry the training recipe beside the design (read by ``sbnn train``).
    _sibling_tables = ("train",)

    def __post_init__(self) -> None:
        for name in ("layers", "plane_gains", "adc_steps"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        # Every field is checked on its own before anything is derived from it, so a bad
        # value always ends in its own field-named error, never in a derivation's traceback.
        self._check_fields()
        if self.plane_gains is None:
            object.__setattr__(self, "plane_gains",
                               tuple(1 << (self.num_supports - k) for k in range(self.planes)))
        if self.adc_steps is None:
            steps = self._default_adc_steps()
            # A derived value obeys the same range as a given one: the snapshot of this
            # config (in every model file) must load again.
            if max(steps) > _MAX_ADC_STEP:
                raise ConfigError("adc_steps", f"the default steps {list(steps)} (derived "
                                               f"from active_rows, plane_gains[0], dac_bits "
                                               f"and adc_bits) exceed {_MAX_ADC_STEP}; give "
                                               f"adc_steps or raise adc_bits")
            object.__setattr__(self, "adc_steps", steps)
        self._check_design()

    def _default_adc_steps(self) -> tuple[int, ...]:
        g0 = self.plane_gains[0]
        x_max = (1 << self.dac_bits) - 1
        spans = [self.active_rows * g0 * x_max / 4] + \
                [self.active_rows * g0 / 2] * (self.num_layers - 1)
        adc_max = (1 << (self.adc_bits - 1)) - 1
        return tuple(1 << max(0, math.ceil(math.log2(span / adc_max))) for span in spans)

    # ---------------------------------------------------------------- validation

    def _int_tuple(self, name: str, length: int, lo: int, hi: int, what: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, tuple) or len(value) != length:
            raise ConfigError(name, f"must be a list of {length} integers ({what}), "
                                    f"got {value!r}")
        for i, v in enumerate(value):
            if not _is_int(v) or not lo <= v <= hi:
                raise ConfigError(name, f"entry {i} must be an integer in {lo}..{hi}, "
                                        f"got {v!r}")

    def _check_fields(self) -> None:
        """Each field's own type and range (the ones defaults are derived from included)."""
        layers = self.layers
        if not isinstance(layers, tuple) or len(layers) < 2:
            raise ConfigError("layers", f"must list at least 2 widths (inputs, outputs), "
                                        f"got {layers!r}")
        for i, width in enumerate(layers):
            if not _is_int(width) or not 1 <= width <= 65536:
                raise ConfigError("layers", f"entry {i} must be an integer in 1..65536, "
                                            f"got {width!r}")
        if layers[-1] < 2:
            raise ConfigError("layers", "the output layer needs at least 2 classes")
        for name, (lo, hi) in _INT_FIELDS.items():
            value = getattr(self, name)
            if not _is_int(value) or not lo <= value <= hi:
                raise ConfigError(name, f"must be an integer in {lo}..{hi}, got {value!r}")
        if not isinstance(self.clock_mhz, (int, float)) or isinstance(self.clock_mhz, bool) \
                or not 0 < self.clock_mhz <= 5000:
            raise ConfigError("clock_mhz", f"must be a number in (0, 5000], "
                                           f"got {self.clock_mhz!r}")
        if self.plane_gains is None:
            if self.num_supports >= self.gain_bits:
                raise ConfigError("gain_bits", f"default gains 2**K..1 need gain_bits > K="
                                               f"{self.num_supports}; raise gain_bits or set "
                                               f"plane_gains")
        else:
            self._int_tuple("plane_gains", self.planes, 1, (1 << self.gain_bits) - 1,
                            f"one DAC gain code per plane, K+1 = {self.planes}")
        if self.adc_steps is not None:
            self._int_tuple("adc_steps", self.num_layers, 1, _MAX_ADC_STEP,
                            f"one ADC step per weight layer, {self.num_layers}")
            for i, step in enumerate(self.adc_steps):
                if step & (step - 1):
                    raise ConfigError("adc_steps", f"entry {i} must be a power of two "
                                                   f"(the ADC step is a shift), got {step}")

    def _check_design(self) -> None:
        """Rules between fields, and what the generated RTL can hold."""
        if self.macro_rows % self.active_rows:
            raise ConfigError("macro_rows", f"must be a multiple of active_rows "
                                            f"({self.active_rows}), got {self.macro_rows}")
        if self.macro_cols < self.planes:
            raise ConfigError("num_supports", f"K={self.num_supports} needs {self.planes} "
                                              f"columns per neuron but macro_cols is "
                                              f"{self.macro_cols}; lower K or add columns")
        if self.total_tiles > self.wordline_groups:
            raise ConfigError("macro_rows", f"the layers need {self.total_tiles} tiles of "
                                            f"{self.active_rows} rows = "
                                            f"{self.total_tiles * self.active_rows} rows, "
                                            f"but macro_rows is {self.macro_rows}; raise "
                                            f"macro_rows or shrink the layers")
        if self.acc_bits > 30:
            raise ConfigError("adc_bits", f"accumulators would need {self.acc_bits} bits "
                                          f"(> 30); lower adc_bits or active_rows")
        self._check_wires()

    def _check_wires(self) -> None:
        """The widest signals of the generated RTL must fit one Amaranth wire."""
        wires = (
            ("layers", self.pixel_buffer_rows * self.x_bits,
             "the first layer's activation buffer (inputs rounded up to whole row blocks "
             "and input beats, x_bits each)", "fewer inputs or a smaller dac_bits"),
            ("layers", self.hidden_buffer_rows * self.x_bits,
             "a hidden layer's activation buffer (width rounded up to whole row and column "
             "blocks, x_bits each)", "narrower hidden layers"),
            ("layers", self.num_classes * self.threshold_bits,
             "the result's logits (classes x threshold_bits)", "fewer classes"),
            ("macro_cols", self.active_rows * self.macro_cols,
             "the behavioral macro's bitcell word (active_rows x macro_cols)",
             "fewer active_rows or macro_cols"),
        )
        for name, bits, what, fix in wires:
            if bits > MAX_WIRE_BITS:
                raise ConfigError(name, f"{what} would be {bits} bits, more than the "
                                        f"{MAX_WIRE_BITS} bits one generated wire can hold; "
                                        f"choose {fix}")

    # ---------------------------------------------------------------- derived sizes

    @property
    def planes(self) -> int:
        """Weight planes per neuron: the base plane plus K supports."""
        return self.num_supports + 1

    @property
    def num_layers(self) -> int:
        """Number of weight layers."""
        return len(self.layers) - 1

    @property
    def num_classes(self) -> int:
        return self.layers[-1]

    @property
    def tiling(self) -> Tiling:
        """Where each weight lives in the macro: tiles, blocks, columns (sbnn/tiling.py)."""
        return Tiling.of(self)

    @property
    def neurons_per_tile(self) -> int:
        """Neurons of one column block: each takes one column per plane."""
        return self.tiling.neurons_per_tile

    @property
    def wordline_groups(self) -> int:
        return self.macro_rows // self.active_rows

    @property
    def x_bits(self) -> int:
        """Signed width of a row DAC input code (pixel codes and +-1 activations)."""
        return self.dac_bits + 1

    @property
    def adc_min(self) -> int:
        return -(1 << (self.adc_bits - 1))

    @property
    def adc_max(self) -> int:
        return (1 << (self.adc_bits - 1)) - 1

    def row_blocks(self, layer: int) -> int:
        """Row blocks of ``layer`` (:meth:`Tiling.row_blocks`)."""
        return self.tiling.row_blocks(layer)

    def col_blocks(self, layer: int) -> int:
        """Column blocks of ``layer`` (:meth:`Tiling.col_blocks`)."""
        return self.tiling.col_blocks(layer)

    @property
    def total_tiles(self) -> int:
        """Tiles of every layer (:attr:`Tiling.total_tiles`)."""
        return self.tiling.total_tiles

    @property
    def total_col_blocks(self) -> int:
        """Column blocks of every layer (:attr:`Tiling.total_col_blocks`)."""
        return self.tiling.total_col_blocks

    @property
    def acc_bits(self) -> int:
        """Signed accumulator width: the sum of every ADC code a neuron can receive."""
        most = max(self.row_blocks(i) for i in range(self.num_layers)) * self.planes
        return self.adc_bits + max(1, math.ceil(math.log2(most))) + 1

    @property
    def threshold_bits(self) -> int:
        """Signed width of thresholds and logits (one more than the accumulator)."""
        return self.acc_bits + 1

    @property
    def input_beats(self) -> int:
        return _ceil_div(self.layers[0], self.input_lanes)

    @property
    def pixel_buffer_rows(self) -> int:
        """Entries of the first layer's activation buffer: enough for every row block read
        (``active_rows`` wide) and every input beat written (``input_lanes`` wide)."""
        n = self.layers[0]
        return max(_ceil_div(n, self.active_rows) * self.active_rows,
                   self.input_beats * self.input_lanes)

    @property
    def hidden_buffer_rows(self) -> int:
        """Entries of each hidden activation buffer: enough for every row block read and
        every column block (``neurons_per_tile`` wide) written, of the widest hidden layer
        (a network without hidden layers still gets a one-block buffer)."""
        a, nt = self.active_rows, self.neurons_per_tile
        return max(max(_ceil_div(w, a) * a, _ceil_div(w, nt) * nt)
                   for w in (*self.layers[1:-1], 1))

    # I/O (to_dict, to_json, write_snapshot, from_dict, replace): JsonRecord


def load_config(path: str | Path | None) -> SbnnConfig:
    """Load a config from a TOML or JSON file (field names as in :class:`SbnnConfig`).

    ``None`` gives the default design. A file holds the fields either at top level or
    under a ``[sbnn]`` table, optionally with a ``[train]`` table (the recipe, read by
    :func:`load_train_table`); duplicate keys, other tables, and fields beside ``[sbnn]``
    are errors. A file with no fields is the default design.
    """
    if path is None:
        return SbnnConfig()
    return SbnnConfig.load_file(path, "--config", "sbnn")


def load_train_table(path: str | Path | None) -> dict[str, Any]:
    """The ``[train]`` table of a config file ({} without a file or table), read as
    strictly as the design."""
    if path is None:
        return {}
    _, tables = read_record_file(path, "--config", "sbnn", SbnnConfig._sibling_tables)
    return dict(tables.get("train", {}))
