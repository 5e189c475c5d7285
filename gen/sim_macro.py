"""Simulation-grade SystemVerilog of the behavioral macro, and the simulation top around the
tapeout controller Verilog.

Why: Yosys turns ``rtl/macro.py: BehavioralMacro`` into a combinational adder tree per
column that Verilator re-evaluates on every clock edge (most of the cosim's time). The
module written here computes the same codes once per evaluation, in a clocked block with
loops over the active rows and the enabled columns only.

* :func:`macro_sv`: module ``sbnn_macro`` with the ports of ``macro_port_list(cfg)``,
  bit- and cycle-exact with ``BehavioralMacro`` (with or without a mismatch table).
* :func:`write_mismatch_files`: one :class:`MismatchTable` as the ``$readmemh`` files the
  module reads at time 0 when the plusarg ``+sbnn_mismatch=PREFIX`` is given.
* :func:`sim_top_sv`: module ``sbnn_sim_top`` with the ports of ``SimTop`` (as Amaranth's
  Verilog backend names them) around ``sbnn_controller`` (``TapeoutTop``'s Verilog), so the
  cosim simulates the very netlist text that goes to tapeout.

Mismatch tables come from a plusarg rather than a module parameter: a parameter is fixed
when Verilator builds, so every Monte Carlo draw would need a new build; a plusarg is read
by the built binary at run time (cocotb's runner passes plusargs to Verilator binaries).
"""

from __future__ import annotations

from pathlib import Path

from sbnn import __version__
from sbnn.config import SbnnConfig
from sbnn.rtl.macro import MismatchTable
from sbnn.rtl.top import (
    MACRO_MODULE,
    SimTop,
    macro_instance_names,
    macro_port_list,
    signature_ports,
)

__all__ = ["MISMATCH_PLUSARG", "MISMATCH_SUFFIXES", "FACTOR_WIDTH", "OFFSET_WIDTH",
           "macro_sv", "mismatch_prefix", "write_mismatch_files", "sim_top_ports",
           "sim_top_sv", "SIM_TOP_MODULE"]

#: Plusarg naming the mismatch file prefix: ``+sbnn_mismatch=PREFIX``.
MISMATCH_PLUSARG = "sbnn_mismatch"
#: Files of one table, ``PREFIX + suffix``, in the order :func:`write_mismatch_files` returns.
MISMATCH_SUFFIXES = (".params.hex", ".cell.hex", ".row_gain.hex", ".adc_offset.hex")
#: Storage width of a cell or DAC gain factor in the data files (F + 2 <= 16: F <= 14).
FACTOR_WIDTH = 16
#: Storage width of an ADC offset (two's complement).
OFFSET_WIDTH = 32
#: Module name of the simulation top.
SIM_TOP_MODULE = "sbnn_sim_top"


def _decl(direction: str, width: int, name: str) -> str:
    rng = f"[{width - 1}:0] " if width > 1 else ""
    return f"  {direction} wire {rng}{name}"


def _bits(n: int) -> int:
    """Width of an unsigned value 0..n (at least 1)."""
    return max(1, n.bit_length())


def macro_sv(cfg: SbnnConfig, module: str = MACRO_MODULE,
             plusarg: str = MISMATCH_PLUSARG) -> str:
    """SystemVerilog of the behavioral macro of ``cfg``: module ``module`` (``sbnn_macro``)
    with exactly the ports of ``macro_port_list(cfg)``; array members are flat vectors,
    element i at bits ``[i*w +: w]``.

    Cycle-exact with ``BehavioralMacro`` (L = ``macro_latency``), all in ``posedge clk``:

    * every cycle: ``wr_en`` writes ``wr_data`` to row ``wr_row`` of group ``wr_group``
      (rows past ``active_rows`` write nothing, as the one-hot enable drops them); reset
      does not touch the bitcells;
    * cycle I with ``start``: the group's rows are read (before a write in the same cycle:
      the Amaranth read port is not transparent) and ``row_x``, ``gain``, ``col_en``,
      ``adc_shift`` latched; the counter loads L;
    * cycle I+1 (counter == L): the codes are computed once, from those latched values,
      and registered (visible from I+2); disabled columns get 0;
    * cycle I+L (counter == 1): ``done``. A ``start`` in that cycle is a new evaluation.
    * ``rst`` (synchronous, active high) returns the counter, the codes and the latched
      inputs to 0, as Amaranth's sync domain does; the read-out rows (a memory port) and
      the bitcells keep their values.
    * a group past the memory (only when ``wordline_groups`` is not a power of two) reads
      bitcells and cell factors 0 and is not written, as in Amaranth's simulator.

    Codes: ideal ``clamp((gain * sum_r +-x_r) >>> shift)``. With ``+<plusarg>=PREFIX``
    (default ``+sbnn_mismatch=PREFIX``; another name lets several macros in one simulation
    take different draws) the tables of :func:`write_mismatch_files` are loaded at time 0
    (``$fatal`` if they are for another geometry) and the codes are
    ``clamp((gain * sum_r +-(x_r * G_r * C_Rc) + O_c * 2^(F+shift)) >>> (2F+shift))``,
    computed exactly as ``floor((floor(gain * sum / 2^(F+shift)) + O_c) / 2^F)`` (the same
    integer, without the wide left shift). Sums fit a longint for every valid config
    (|x| <= 2^8, factors < 2^16, 2^10 rows, gain < 2^8: < 2^58).
    """
    text = _macro_header(cfg, module, plusarg) + _MACRO_LOGIC + _macro_init(module, plusarg)
    return _pipelined(cfg, text) if cfg.interval < cfg.macro_latency else text


#: (one-evaluation text, pipelined text) of :func:`macro_sv` with ``macro_interval`` <
#: ``macro_latency``: a start may come every cycle; the inputs latched at a start are used in
#: the next cycle only (the codes are computed there, as before), and the codes go down a
#: delay line of L - 1 registers (``codes_p``) to ``adc`` in cycle I+L; ``vld[k]``: an
#: evaluation started k+1 cycles ago (``rtl/macro.py`` ``BehavioralMacro._pipelined``).
_PIPELINED = (
    ("  logic [CW-1:0] cnt;  // L in cycle I+1 (codes computed), 1 in cycle I+L (done)\n"
     "  logic [C*AB-1:0] codes;\n",
     "  localparam int L = {latency};  // pipelined: a start every macro_interval cycles\n"
     "  logic [L-1:0] vld;  // vld[k]: an evaluation started k+1 cycles ago\n"
     "  logic [C*AB-1:0] codes_p [L-1];  // codes_p[k]: its codes k+2 cycles after start\n"),
    ("  assign done = cnt == CW'(1);\n  assign adc = codes;\n",
     "  assign done = vld[L-1];\n  assign adc = codes_p[L-2];\n"),
    ("      cnt <= '0;\n      codes <= '0;\n",
     "      vld <= '0;\n      for (int k = 0; k < L-1; k++) codes_p[k] <= '0;\n"),
    ("        cnt <= LAT;\n      end else if (cnt != '0) begin\n        cnt <= cnt - CW'(1);\n"
     "      end\n      if (cnt == LAT) codes <= eval_codes();\n",
     "      end\n      vld <= {{vld[L-2:0], start}};\n"
     "      if (vld[0]) codes_p[0] <= eval_codes();\n"
     "      for (int k = 1; k < L-1; k++) codes_p[k] <= codes_p[k-1];\n"),
    ("    cnt = '0;\n    codes = '0;\n",
     "    vld = '0;\n    for (int k = 0; k < L-1; k++) codes_p[k] = '0;\n"),
)


def _pipelined(cfg: SbnnConfig, text: str) -> str:
    """The pipelined macro's text from the one-evaluation macro's (:data:`_PIPELINED`)."""
    for old, new in _PIPELINED:
        if text.count(old) != 1:
            raise AssertionError(f"sim_macro: pipelined rewrite lost its anchor {old!r}")
        text = text.replace(old, new.format(latency=cfg.macro_latency))
    return text


def _macro_header(cfg: SbnnConfig, module: str, plusarg: str) -> str:
    """Module header, ports, sizes and state of :func:`macro_sv`."""
    # the one-evaluation macro's latency counter (the pipelined rewrite has a delay line
    # instead, and Verilator -Wall flags a parameter left unused)
    counter = ("" if cfg.interval < cfg.macro_latency else
               f"  localparam int CW = {_bits(cfg.macro_latency)};  // counter width\n"
               f"  localparam logic [CW-1:0] LAT = CW'({cfg.macro_latency});\n")
    ports = macro_port_list(cfg)
    width = {name: w for name, _d, w in ports}
    depth = max(2, cfg.wordline_groups)  # as BehavioralMacro's Memory (no zero-width address)
    decls = ",\n".join(_decl(d, w, n) for n, d, w in ports)
    return f"""\
// Generated by sbnn {__version__} (gen/sim_macro.py): simulation-grade behavioral model of the
// analog SRAM compute-in-memory macro, bit- and cycle-exact with rtl/macro.py BehavioralMacro.
// Codes are computed once per evaluation (cycle after start), never on every clock edge.
// Mismatch: +{plusarg}=PREFIX loads PREFIX{{{",".join(MISMATCH_SUFFIXES)}}} at time 0.
// WIDTHCONCAT waived: a wide design's code bus (macro_cols x adc_bits, e.g. 855 x 14) is
// cleared with '0, which Verilator counts as a replication over its 8192-bit limit.
/* verilator lint_off WIDTHCONCAT */
module {module} (
{decls}
);
  localparam int A = {cfg.active_rows};  // active rows (one word-line group)
  localparam int C = {cfg.macro_cols};  // columns, one ADC each
  localparam int XB = {cfg.x_bits};  // signed row code width
  localparam int AB = {cfg.adc_bits};  // signed ADC code width
  localparam int DEPTH = {depth};  // bitcell memory words (groups, at least 2)
  localparam int ROWS = DEPTH * A;
  localparam int MACRO_ROWS = {cfg.macro_rows};
{counter}  localparam longint ADC_MAX = {cfg.adc_max};
  localparam longint ADC_MIN = {cfg.adc_min};

  logic [C-1:0] cells [ROWS];  // bitcells: row g*A + r, bit = column (1 = +1)
  logic [C-1:0] rd_rows [A];  // the group read at start (Amaranth's read port data)
  logic [{width["group"] - 1}:0] rd_group;  // its index, for the cell factors
  logic [A*XB-1:0] x_q;  // inputs latched at start
  logic [{width["gain"] - 1}:0] gain_q;
  logic [C-1:0] col_en_q;
  logic [{width["adc_shift"] - 1}:0] shift_q;
  logic [CW-1:0] cnt;  // L in cycle I+1 (codes computed), 1 in cycle I+L (done)
  logic [C*AB-1:0] codes;

  // Mismatch tables (constant after time 0); rows past macro_rows stay 0 like the
  // Amaranth ROM's padding word.
  bit use_mm;
  int unsigned mm_frac;
  logic [{FACTOR_WIDTH - 1}:0] mm_cell [ROWS*C];  // cell factor of row R, column c at R*C + c
  logic [{FACTOR_WIDTH - 1}:0] mm_gain [A];  // DAC gain factor of row r
  logic [{OFFSET_WIDTH - 1}:0] mm_off [C];  // ADC offset of column c, 2^-F LSB
  logic [31:0] mm_params [4];  // frac_bits, macro_rows, macro_cols, active_rows
"""


#: Outputs, the code computation and the clocked process of :func:`macro_sv`.
_MACRO_LOGIC = """
  assign done = cnt == CW'(1);
  assign adc = codes;

  function automatic longint clamp_code(longint q);
    if (q > ADC_MAX) return ADC_MAX;
    if (q < ADC_MIN) return ADC_MIN;
    return q;
  endfunction

  // The codes of the evaluation whose inputs are latched (called in cycle I+1 only):
  // loops over the active rows and the enabled columns, in longint.
  function automatic logic [C*AB-1:0] eval_codes();
    logic [C*AB-1:0] out;
    longint xs [A];  // row codes, times the row's DAC gain factor when varied
    longint acc, term, q;
    int base;
    bit in_range;  // a group past the memory (wordline_groups not a power of two) reads 0
    out = '0;
    for (int r = 0; r < A; r++) begin
      xs[r] = longint'($signed(x_q[r*XB +: XB]));
      if (use_mm) xs[r] = xs[r] * longint'(mm_gain[r]);
    end
    base = int'(rd_group) * A;
    in_range = int'(rd_group) < DEPTH;
    for (int col = 0; col < C; col++) begin
      if (col_en_q[col]) begin
        acc = 0;
        // out of range: bitcells 0 (every term -x) and, when varied, cell factors 0
        if (in_range || !use_mm)
          for (int r = 0; r < A; r++) begin
            term = use_mm ? xs[r] * longint'(mm_cell[(base + r) * C + col]) : xs[r];
            acc += rd_rows[r][col] ? term : -term;
          end
        acc *= longint'(gain_q);
        // floor((acc + O * 2^(F+s)) / 2^(2F+s)) = floor((floor(acc / 2^(F+s)) + O) / 2^F)
        if (use_mm)
          q = ((acc >>> (mm_frac + shift_q)) + longint'($signed(mm_off[col]))) >>> mm_frac;
        else
          q = acc >>> shift_q;
        q = clamp_code(q);
        out[col*AB +: AB] = q[AB-1:0];
      end
    end
    return out;
  endfunction

  always_ff @(posedge clk) begin
    // The bitcell write port and the read port are not reset (a memory in Amaranth).
    if (wr_en && int'(wr_row) < A && int'(wr_group) < DEPTH)
      cells[int'(wr_group) * A + int'(wr_row)] <= wr_data;
    if (start) begin
      for (int r = 0; r < A; r++)
        rd_rows[r] <= int'(group) < DEPTH ? cells[int'(group) * A + r] : '0;
      rd_group <= group;
    end
    if (rst) begin
      x_q <= '0;
      gain_q <= '0;
      col_en_q <= '0;
      shift_q <= '0;
      cnt <= '0;
      codes <= '0;
    end else begin
      if (start) begin
        x_q <= row_x;
        gain_q <= gain;
        col_en_q <= col_en;
        shift_q <= adc_shift;
        cnt <= LAT;
      end else if (cnt != '0) begin
        cnt <= cnt - CW'(1);
      end
      if (cnt == LAT) codes <= eval_codes();
    end
  end
"""


def _macro_init(module: str, plusarg: str) -> str:
    """Power-up state and the mismatch tables (``$readmemh`` at time 0) of :func:`macro_sv`."""
    params, cell, gain, off = MISMATCH_SUFFIXES
    return f"""
  // Power-up state of the Amaranth model: registers at their init (0), bitcells 0.
  initial begin
    string prefix;
    for (int i = 0; i < ROWS; i++) cells[i] = '0;
    for (int r = 0; r < A; r++) rd_rows[r] = '0;
    rd_group = '0;
    x_q = '0;
    gain_q = '0;
    col_en_q = '0;
    shift_q = '0;
    cnt = '0;
    codes = '0;
    use_mm = 1'b0;
    mm_frac = 0;
    for (int i = 0; i < ROWS * C; i++) mm_cell[i] = '0;
    for (int r = 0; r < A; r++) mm_gain[r] = '0;
    for (int col = 0; col < C; col++) mm_off[col] = '0;
    for (int i = 0; i < 4; i++) mm_params[i] = '0;
    if ($value$plusargs("{plusarg}=%s", prefix)) begin
      $readmemh({{prefix, "{params}"}}, mm_params);
      if (mm_params[1] != MACRO_ROWS || mm_params[2] != C || mm_params[3] != A ||
          mm_params[0] > {FACTOR_WIDTH - 2})
        $fatal(1, "{module}: mismatch table %s is for rows %0d cols %0d active %0d F %0d",
               prefix, mm_params[1], mm_params[2], mm_params[3], mm_params[0]);
      // with an end address: a short file is reported, not silently zero-filled
      $readmemh({{prefix, "{cell}"}}, mm_cell, 0, MACRO_ROWS * C - 1);
      $readmemh({{prefix, "{gain}"}}, mm_gain);
      $readmemh({{prefix, "{off}"}}, mm_off);
      mm_frac = mm_params[0];
      use_mm = 1'b1;
    end
  end
endmodule
"""


def mismatch_prefix(prefix_or_dir: str | Path) -> Path:
    """The file prefix for ``prefix_or_dir``: ``DIR/mismatch`` for an existing folder,
    else the path itself."""
    path = Path(prefix_or_dir)
    return path / "mismatch" if path.is_dir() else path


def _hex_lines(header: str, values, digits: int) -> str:
    mask = (1 << (4 * digits)) - 1
    body = "\n".join(f"{v & mask:0{digits}x}" for v in values)
    return f"// {header}\n{body}\n"


def write_mismatch_files(table: MismatchTable, prefix_or_dir: str | Path) -> list[Path]:
    """Write ``table`` as the ``$readmemh`` files :func:`macro_sv` reads; return their paths
    (``PREFIX + s`` for s in :data:`MISMATCH_SUFFIXES`; see :func:`mismatch_prefix`).

    One hex word per line after a ``//`` comment line: ``.params.hex`` frac_bits F,
    macro_rows, macro_cols, active_rows (the macro checks them); ``.cell.hex`` the cell
    factors row-major (macro row R, then column c), :data:`FACTOR_WIDTH` bits unsigned;
    ``.row_gain.hex`` the DAC gain factor per active row; ``.adc_offset.hex`` the offset
    per column, :data:`OFFSET_WIDTH`-bit two's complement. Pass ``+sbnn_mismatch=PREFIX``.
    """
    f = table.frac_bits
    if not 0 <= f <= FACTOR_WIDTH - 2:
        raise ValueError(f"mismatch table: frac_bits must be in 0..{FACTOR_WIDTH - 2} for "
                         f"{FACTOR_WIDTH}-bit factors, got {f}")
    rows, cols, active = len(table.cell), len(table.adc_offset), len(table.row_gain)
    top = 1 << (f + 2)
    if any(len(r) != cols for r in table.cell):
        raise ValueError("mismatch table: every cell row needs one factor per column")
    if any(not 0 <= v < top for r in table.cell for v in r) or \
            any(not 0 <= v < top for v in table.row_gain):
        raise ValueError(f"mismatch table: factors must be in 0..{top - 1}")
    lim = 1 << (OFFSET_WIDTH - 1)
    if any(not -lim <= v < lim for v in table.adc_offset):
        raise ValueError(f"mismatch table: ADC offsets must fit {OFFSET_WIDTH}-bit signed")
    prefix = mismatch_prefix(prefix_or_dir)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    fd, od = FACTOR_WIDTH // 4, OFFSET_WIDTH // 4
    texts = [
        _hex_lines("sbnn mismatch: frac_bits, macro_rows, macro_cols, active_rows",
                   (f, rows, cols, active), 8),
        _hex_lines(f"cell factors, {rows} x {cols} row-major, 2^{f} = 1",
                   (v for r in table.cell for v in r), fd),
        _hex_lines(f"row DAC gain factors, {active} rows, 2^{f} = 1", table.row_gain, fd),
        _hex_lines(f"ADC offsets, {cols} columns, 2^-{f} LSB, two's complement",
                   table.adc_offset, od),
    ]
    paths = []
    for suffix, text in zip(MISMATCH_SUFFIXES, texts):
        path = prefix.with_name(prefix.name + suffix)
        path.write_text(text)
        paths.append(path)
    return paths


def sim_top_ports(cfg: SbnnConfig) -> list[tuple[str, str, int]]:
    """(name, direction, width) of every ``SimTop`` port as Amaranth's Verilog backend
    names them (signature path joined by ``__``), clock and reset first."""
    return [("clk", "input", 1), ("rst", "input", 1), *signature_ports(SimTop(cfg))]


def sim_top_sv(cfg: SbnnConfig, controller: str = "sbnn_controller") -> str:
    """SystemVerilog of ``sbnn_sim_top``: the ports of ``SimTop`` (:func:`sim_top_ports`)
    around an instance of ``controller`` (``TapeoutTop``'s Verilog, which instantiates
    ``sbnn_macro`` as ``macro``; compile it with :func:`macro_sv`).

    The stream ports pass straight through, ``probe_trace`` is the controller's ``trace``
    output, and each ``probe__<member>`` is the macro instance's port of that name: the bus
    sits inside ``sbnn_controller``, so a hierarchical reference (read only) is the one way
    to mirror it without changing the tapeout Verilog. All combinational: the probes carry
    the bus in the same cycle, as in ``SimTop``.
    """
    ports = sim_top_ports(cfg)
    bus = {name for name, _d, _w in macro_port_list(cfg)} - {"clk", "rst"}
    instances = macro_instance_names(cfg)
    conns, probes = [], []
    for name, _d, _w in ports:
        if name == "probe_trace":
            conns.append("    .trace(probe_trace)")
        elif name.startswith("probe__"):
            member = name[len("probe__"):]
            instance = instances[0]
            if len(instances) > 1:  # probe__J__member: macro J's instance
                j, member = member.split("__", 1)
                instance = instances[int(j)]
            assert member in bus, member
            probes.append(f"  assign {name} = u_controller.{instance}.{member};")
        else:
            conns.append(f"    .{name}({name})")
    decls = ",\n".join(_decl(d, w, n) for n, d, w in ports)
    conn_text, probe_text = ",\n".join(conns), "\n".join(probes)
    return f"""\
// Generated by sbnn {__version__} (gen/sim_macro.py): simulation top = the tapeout controller
// Verilog ({controller}, with its sbnn_macro instance) plus probes mirroring the macro bus.
module {SIM_TOP_MODULE} (
{decls}
);
  {controller} u_controller (
{conn_text}
  );
  // The macro bus, read through the hierarchy (SimTop's probe ports).
{probe_text}
endmodule
"""
