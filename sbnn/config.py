"""The one configuration object that drives the golden model, the RTL, the tiler and the cosim.

Every generated artifact gets a JSON snapshot of the :class:`SbnnConfig` it was made from, so a
Verilog file, a hardware image and a cosim run can always be traced back to the exact design.
The fields are declared on the parameter-record mechanism (sbnn/params.py): types, ranges and
descriptions in one place, from which the validation, the errors, the snapshot and the JSON
schema of config files (docs/schema/sbnn-config.schema.json) all follow.

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

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, ValidationError, field_validator, model_validator

from sbnn.params import ParamError, Record, parse_record_text, read_record_file
from sbnn.tiling import Tiling

__all__ = ["ConfigError", "SbnnConfig", "load_config", "load_train_table",
           "read_record_file", "parse_record_text", "MAX_WIRE_BITS", "PIXEL_BITS"]

PIXEL_BITS = 8  # MNIST pixels arrive as 8-bit unsigned values on the input stream
#: The widest wire Amaranth converts (amaranth.back.rtlil refuses more than 2**16 bits).
MAX_WIRE_BITS = 1 << 16

#: Largest ADC step (a shift of up to 16 bits).
_MAX_ADC_STEP = 1 << 16
#: Widest layer.
_MAX_WIDTH = 1 << 16
#: Largest SRAM threshold (a store larger than any design's: every store stays registers).
_MAX_SRAM_MIN_BITS = 1 << 30


class ConfigError(ParamError):
    """A configuration value is invalid; the message names the field and what is allowed."""

    prefix = "config field"


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


_Width = Annotated[int, Field(ge=1, le=_MAX_WIDTH)]
#: A gain code's range is the design's own (1 .. 2**gain_bits - 1): checked between fields,
#: after the count of codes; the schema states the lower end.
_Gain = Annotated[int, Field(json_schema_extra={"minimum": 1})]
_Step = Annotated[int, Field(ge=1, le=_MAX_ADC_STEP)]


class SbnnConfig(Record):
    """A Supported-BinaryNet design: network shape, analog macro and controller parameters.

    All fields are validated at construction; an invalid value raises :class:`ConfigError`
    naming the field. Each field is checked on its own first (its type and range), then the
    rules between fields; the omitted ``plane_gains`` and ``adc_steps`` are derived between.
    """

    _record_name: ClassVar[str] = "config field"
    _error: ClassVar[type[ParamError]] = ConfigError
    #: A file may carry the training recipe beside the design (read by ``sbnn train``).
    _sibling_tables: ClassVar[tuple[str, ...]] = ("train",)
    #: Which field a config with several wrong fields names (as before the declarations).
    _check_order: ClassVar[tuple[str, ...]] = (
        "layers", "num_supports", "active_rows", "macro_cols", "macro_rows", "dac_bits",
        "gain_bits", "adc_bits", "macro_latency", "input_lanes", "clock_mhz", "plane_gains",
        "adc_steps", "sram_min_bits", "num_macros", "macro_interval")
    #: Absent from the snapshot while None, so every earlier model file, cache key and run
    #: folder keeps its bytes (sbnn/params.py).
    _omit_none: ClassVar[tuple[str, ...]] = ("sram_min_bits", "macro_interval")
    #: Absent while at the default (one macro), for the same reason.
    _omit_default: ClassVar[tuple[str, ...]] = ("num_macros",)
    #: How the controller is built, not what it computes: which stores are SRAM macros and
    #: how many macros run at which interval. A model trained under one arrangement is the
    #: same network under another (golden/qmodel.py QuantizedModel.load takes it there).
    IMPLEMENTATION_FIELDS: ClassVar[tuple[str, ...]] = ("sram_min_bits", "num_macros",
                                                        "macro_interval")

    layers: tuple[_Width, ...] = Field(
        (784, 256, 10), min_length=2,
        description="Layer widths, inputs first: [784, 256, 10] is 784 pixels -> 256 hidden "
                    "-> 10 classes.")
    num_supports: int = Field(
        1, ge=0, le=7, description="Number of support planes K per weight (0 = plain BNN).")
    macro_rows: int = Field(
        16384, ge=1, le=1 << 20,
        description="Total bitcell rows of the macro (word-line groups x active_rows).")
    active_rows: int = Field(
        64, ge=1, le=1024,
        description="Rows driven together in one evaluation (one word-line group).")
    macro_cols: int = Field(
        32, ge=1, le=1024, description="Bitcell columns of the macro; each has its own ADC.")
    dac_bits: int = Field(
        4, ge=1, le=PIXEL_BITS,
        description="Resolution of the first layer's row DAC input code: "
                    "pixel >> (8 - dac_bits).")
    gain_bits: int = Field(3, ge=1, le=8, description="Width of the row DAC gain code.")
    plane_gains: tuple[_Gain, ...] | None = Field(
        None,
        description="DAC gain code per plane (base first); support scale a_k = gain[k] / "
                    "gain[0]. Omitted: powers of two, 2**K .. 1, so a_k = 2**-k.")
    adc_bits: int = Field(
        8, ge=2, le=16, description="ADC resolution (signed two's complement codes).")
    adc_steps: tuple[_Step, ...] | None = Field(
        None,
        description="ADC step per weight layer, a power of two: code = clamp(floor(sum / "
                    "step)). Omitted: the smallest step whose range covers a quarter of the "
                    "first layer's full scale and half of a hidden layer's.")
    macro_latency: int = Field(
        4, ge=2, le=64, description="Cycles from an evaluation's start to its ADC codes.")
    clock_mhz: float = Field(
        100.0, gt=0, le=5000,
        description="Controller clock in MHz (for the SDC file and time-per-inference "
                    "figures).")
    input_lanes: int = Field(
        16, ge=1, le=256, description="Pixels per beat on the input stream.")
    sram_min_bits: int | None = Field(
        None, ge=1, le=_MAX_SRAM_MIN_BITS,
        description="A controller store with a registered read (thresholds, the first "
                    "layer's kept sums) of at least this many bits is emitted as an SRAM "
                    "macro instance (a black box in the tapeout Verilog, a behavioral model "
                    "for simulation). Omitted or null: every store stays flip-flops.")
    num_macros: int = Field(
        1, ge=1, le=64,
        description="Identical macros (each holds every tile) evaluating at once: the "
                    "evaluations of a layer and pass go to them round-robin in issue order "
                    "(docs/architecture.md, timing contract).")
    macro_interval: int | None = Field(
        None, ge=1, le=64,
        description="Cycles between two starts on one macro (pipelined when less than "
                    "macro_latency: up to ceil(macro_latency / macro_interval) evaluations "
                    "in flight per macro), 1 .. macro_latency. Omitted or null: "
                    "macro_latency (one evaluation in flight per macro).")

    @field_validator("layers")
    @classmethod
    def _two_classes(cls, layers: tuple[int, ...]) -> tuple[int, ...]:
        if layers[-1] < 2:
            raise ConfigError("layers", "the output layer needs at least 2 classes")
        return layers

    @model_validator(mode="after")
    def _derive_and_check(self) -> SbnnConfig:
        # Every field has passed its own check, so a bad value always ends in its own
        # field-named error, never in a derivation's traceback.
        self._check_gains()
        self._check_steps()
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
        return self

    def _default_adc_steps(self) -> tuple[int, ...]:
        g0 = self.plane_gains[0]
        x_max = (1 << self.dac_bits) - 1
        spans = [self.active_rows * g0 * x_max / 4] + \
                [self.active_rows * g0 / 2] * (self.num_layers - 1)
        adc_max = (1 << (self.adc_bits - 1)) - 1
        return tuple(1 << max(0, math.ceil(math.log2(span / adc_max))) for span in spans)

    # ---------------------------------------------------------------- validation

    def _check_length(self, name: str, length: int, what: str) -> None:
        value = getattr(self, name)
        if len(value) != length:
            raise ConfigError(name, f"must be a list of {length} integers ({what}), "
                                    f"got {value!r}")

    @classmethod
    def _to_param_error(cls, exc: ValidationError, data: dict[str, Any]) -> ParamError:
        error = super()._to_param_error(exc, data)
        if {str(e["loc"][0]) for e in exc.errors() if e["loc"]} == {"adc_steps"}:
            # the gains have always been checked before the steps: their error comes first
            try:
                cls.model_construct(**(data | {"adc_steps": None}))._check_gains()
            except ConfigError as gains_error:
                return gains_error
        return error

    def _check_gains(self) -> None:
        """The gains against K and gain_bits: one code per plane, each gain_bits wide (or,
        derived, 2**K must fit)."""
        if self.plane_gains is None:
            if self.num_supports >= self.gain_bits:
                raise ConfigError("gain_bits", f"default gains 2**K..1 need gain_bits > K="
                                               f"{self.num_supports}; raise gain_bits or set "
                                               f"plane_gains")
        else:
            self._check_length("plane_gains", self.planes,
                               f"one DAC gain code per plane, K+1 = {self.planes}")
            top = (1 << self.gain_bits) - 1
            for i, gain in enumerate(self.plane_gains):
                if not 1 <= gain <= top:
                    raise ConfigError("plane_gains", f"entry {i} must be an integer in "
                                                     f"1..{top}, got {gain!r}")

    def _check_steps(self) -> None:
        """Given ADC steps: one per weight layer, each a power of two."""
        if self.adc_steps is not None:
            self._check_length("adc_steps", self.num_layers,
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
        if self.macro_interval is not None and self.macro_interval > self.macro_latency:
            raise ConfigError("macro_interval", f"must be in 1..macro_latency "
                                                f"({self.macro_latency}), got "
                                                f"{self.macro_interval}")
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
    def interval(self) -> int:
        """Cycles between two starts on one macro (``macro_interval``, default the
        latency)."""
        return self.macro_latency if self.macro_interval is None else self.macro_interval

    @property
    def in_flight_per_macro(self) -> int:
        """Evaluations one macro may have in flight: ceil(latency / interval)."""
        return _ceil_div(self.macro_latency, self.interval)

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
    def threshold_reach(self) -> int:
        """Thresholds lie in ``-reach..reach`` (``2**(acc_bits-1)``): every sum a neuron can
        reach is inside, so a threshold beyond decides as the end does, and ``acc - theta``
        fits ``threshold_bits`` (the RTL's comparison and logits)."""
        return 1 << (self.acc_bits - 1)

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

    # I/O (to_dict, to_json, write_snapshot, from_dict, replace, load_file): Record


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
    _, tables = read_record_file(path, "--config", "sbnn", SbnnConfig._sibling_tables,
                                 ConfigError)
    return dict(tables.get("train", {}))
