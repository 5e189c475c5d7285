"""A Verilog harness that streams stimulus from files and logs every transaction compactly.

The per-cycle testbench (tb_inference.py) wakes Python on every clock: simple, but Python
then costs ~100x the simulation itself. For throughput the loop moves into the simulator:

* a *command file* (one line per stream beat: ``p <hex>`` a prog word, ``i <hex>`` a pixel
  beat, ``l <hex>`` the last pixel beat of an image) is read with ``$fscanf`` and presented
  on the streams back to back, with no idle cycle between beats or images;
* a monitor folds every macro start and done into two 64-bit signatures per image
  (cosim/digest.py) and writes one short line per image at its result: the cycle its
  compute started, the result's cycle, the start and done counts, both signatures and the
  result payload (``PREFIX.digest``; the totals at the end in ``PREFIX.totals``);
* with ``+full`` it also writes one fixed-width hex line per macro start, macro done,
  accepted image and result into four log files, stamped with the cycle count (what
  cosim/bulk.py decodes to name the first differing transaction);
* ``done`` rises when the command file is exhausted and every image has its result.

Python (tb_fast.py, under cocotb) then compares each image's signatures and result with the
golden model's (cosim/digest.py), and with ``+full`` every field of every transaction
(cosim/bulk.py). Every probe value at every start and done, and its cycle, enters the
signatures, so nothing is checked less than in the per-cycle bench.

The same harness also runs without cocotb (a C++ main toggling the clock, ``raw_main``), which
gives the simulator's own speed on this design, the physical limit of the check.
"""

from __future__ import annotations

from dataclasses import dataclass

from sbnn.config import SbnnConfig
from sbnn.rtl.interfaces import Sizes, pixel_layout, prog_layout, result_layout, trace_layout

from .digest import SEED, sv_functions

__all__ = ["HARNESS_TOP", "HarnessLayout", "harness_verilog", "RAW_MAIN_CPP"]

HARNESS_TOP = "sbnn_fast_tb"


def _lane_bits(bits: int) -> int:
    """Log lanes are whole bytes so numpy can decode them as int8/int16 directly."""
    return 8 if bits <= 8 else 16


@dataclass(frozen=True)
class HarnessLayout:
    """Widths of every logged field (hex digits per field follow from them)."""

    prog_bits: int
    pixel_bits: int
    result_bits: int
    trace_bits: int
    group_bits: int
    gain_bits: int
    cols: int
    rows: int
    x_bits: int
    adc_bits: int
    x_lane: int
    adc_lane: int
    #: macros (``num_macros``): with several, start and done lines name theirs
    macros: int = 1

    @classmethod
    def of(cls, cfg: SbnnConfig) -> HarnessLayout:
        sz = Sizes(cfg)
        return cls(prog_bits=prog_layout(cfg).size, pixel_bits=pixel_layout(cfg).size,
                   result_bits=result_layout(cfg).size, trace_bits=trace_layout(cfg).size,
                   group_bits=sz.group_bits, gain_bits=cfg.gain_bits, cols=cfg.macro_cols,
                   rows=cfg.active_rows, x_bits=cfg.x_bits, adc_bits=cfg.adc_bits,
                   x_lane=_lane_bits(cfg.x_bits), adc_lane=_lane_bits(cfg.adc_bits),
                   macros=cfg.num_macros)

    def _macro_field(self) -> list[tuple[str, int]]:
        return [("macro", 2)] if self.macros > 1 else []

    # Field widths in hex digits, in the order they are written on each line.
    def start_fields(self) -> list[tuple[str, int]]:
        return [("cycle", 8), *self._macro_field(), ("trace", _hex(self.trace_bits)),
                ("group", _hex(self.group_bits)), ("gain", _hex(self.gain_bits)),
                ("col_en", _hex(self.cols)), ("row_x", self.rows * self.x_lane // 4)]

    def done_fields(self) -> list[tuple[str, int]]:
        return [("cycle", 8), *self._macro_field(), ("adc", self.cols * self.adc_lane // 4)]

    def result_fields(self) -> list[tuple[str, int]]:
        return [("cycle", 8), ("payload", _hex(self.result_bits))]

    def digest_record_bytes(self) -> int:
        """Bytes of one ``PREFIX.digest`` line (fixed width: %h pads to the value's width)."""
        return 4 * 8 + 2 * 16 + _hex(self.result_bits) + 7


def _hex(bits: int) -> int:
    return (bits + 3) // 4


def _sign_extend_lanes(name: str, src: str, count: int, bits: int, lane: int) -> str:
    lines = []
    for i in range(count):
        hi, lo = bits * i + bits - 1, bits * i
        value = f"{src}[{hi}:{lo}]"
        if lane > bits:
            value = f"{{{{{lane - bits}{{{src}[{hi}]}}}}, {value}}}"
        lines.append(f"  assign {name}[{lane * i + lane - 1}:{lane * i}] = {value};")
    return "\n".join(lines)


def harness_verilog(cfg: SbnnConfig, dut: str, hdl_clock: bool = False) -> str:
    """SystemVerilog of the harness around the simulation top module ``dut``.

    ``hdl_clock``: the harness makes its own clock (needs Verilator ``--timing``), so the
    simulator never calls into cocotb per edge; otherwise ``clk`` is an input.

    Plusargs: ``+cmd=FILE`` (stimulus), ``+log=PREFIX`` (writes PREFIX.digest and .totals;
    with ``+full`` also PREFIX.start, .done, .image, .result), ``+limit=N`` (cycles without
    progress before giving up, default 100000).
    """
    h = HarnessLayout.of(cfg)
    return (_module_header(cfg, h, hdl_clock) + _dut_instance(dut, h) + _monitor_state(cfg, h)
            + _open_files() + _tasks(h) + _cycle_block(cfg, h) + "endmodule\n")


def _module_header(cfg: SbnnConfig, h: HarnessLayout, hdl_clock: bool) -> str:
    """Ports, clock (with ``hdl_clock``), reset and stream registers, probe wires and
    their sign-extended log lanes."""
    half_ps = round(500_000 / cfg.clock_mhz)
    clk_port = "" if hdl_clock else "  input  wire clk /*verilator public_flat_rw*/,\n"
    clk_gen = (f"  reg clk = 1'b0;  // half period in ps (built with --timescale 1ps/1ps)\n"
               f"  always #{half_ps} clk = ~clk;\n" if hdl_clock else "")
    return f"""// Generated by sbnn (cosim/harness.py): stimulus from a file, compact logs.
// Do not edit: regenerated from the config whenever it changes.
module {HARNESS_TOP} (
{clk_port}  output reg  done /*verilator public_flat_rd*/,
  output reg  failed /*verilator public_flat_rd*/
);
{clk_gen}  reg rst = 1'b1;
  reg [2:0] rst_cnt = 3'd0;
  reg [31:0] cycle = 32'd0;
  reg [31:0] idle = 32'd0;
  reg [31:0] limit = 32'd100000;

  // Streams into the design.
  reg prog_valid = 1'b0;
  reg [{h.prog_bits - 1}:0] prog_payload = '0;
  reg pix_valid = 1'b0;
  reg [{h.pixel_bits - 1}:0] pix_payload = '0;
  reg pix_last = 1'b0;
  wire prog_ready, pix_ready, result_valid;
  wire [{h.result_bits - 1}:0] result_payload;

  // Probes.
{"".join(_probe_wires(h, suffix) for suffix in _suffixes(h))}"""


def _suffixes(h: HarnessLayout) -> list[str]:
    """Name suffix of each macro's probe wires: none with one macro, ``_j`` for macro j."""
    return [""] if h.macros == 1 else [f"_{j}" for j in range(h.macros)]


def _probe_wires(h: HarnessLayout, suffix: str) -> str:
    """One macro's probe wires and its sign-extended log lanes."""
    rx, ad = h.rows * h.x_lane, h.cols * h.adc_lane
    return f"""  wire p_start{suffix}, p_done{suffix};
  wire [{h.group_bits - 1}:0] p_group{suffix};
  wire [{h.rows * h.x_bits - 1}:0] p_row_x{suffix};
  wire [{h.gain_bits - 1}:0] p_gain{suffix};
  wire [{h.cols - 1}:0] p_col_en{suffix};
  wire [{h.cols * h.adc_bits - 1}:0] p_adc{suffix};
  wire [{h.trace_bits - 1}:0] p_trace{suffix};
  wire [{rx - 1}:0] row_x_lanes{suffix};
  wire [{ad - 1}:0] adc_lanes{suffix};
{_sign_extend_lanes(f"row_x_lanes{suffix}", f"p_row_x{suffix}", h.rows, h.x_bits, h.x_lane)}
{_sign_extend_lanes(f"adc_lanes{suffix}", f"p_adc{suffix}", h.cols, h.adc_bits, h.adc_lane)}

"""


def _dut_instance(dut: str, h: HarnessLayout | None = None) -> str:
    """The simulation top, every port connected (result always ready); with several
    macros, each macro's probe (``probe__J__*``) to its wires and ``probe_trace`` (macro j
    at bits ``j * trace_bits``) split among them."""
    macros = 1 if h is None else h.macros
    if macros == 1:
        probes = """    .probe__start(p_start), .probe__group(p_group), .probe__row_x(p_row_x),
    .probe__gain(p_gain), .probe__col_en(p_col_en), .probe__adc_shift(),
    .probe__done(p_done), .probe__adc(p_adc), .probe__wr_en(), .probe__wr_group(),
    .probe__wr_row(), .probe__wr_data(), .probe_trace(p_trace)"""
    else:
        parts = []
        for j in range(macros):
            q, s = f"probe__{j}__", f"_{j}"
            parts.append(
                f"    .{q}start(p_start{s}), .{q}group(p_group{s}), .{q}row_x(p_row_x{s}),\n"
                f"    .{q}gain(p_gain{s}), .{q}col_en(p_col_en{s}), .{q}adc_shift(),\n"
                f"    .{q}done(p_done{s}), .{q}adc(p_adc{s}), .{q}wr_en(), .{q}wr_group(),\n"
                f"    .{q}wr_row(), .{q}wr_data(),")
        traces = ", ".join(f"p_trace_{j}" for j in reversed(range(macros)))
        probes = "\n".join(parts) + f"\n    .probe_trace({{{traces}}})"
    return f"""  {dut} dut (
    .clk(clk), .rst(rst),
    .prog__valid(prog_valid), .prog__ready(prog_ready), .prog__payload(prog_payload),
    .pixels__valid(pix_valid), .pixels__ready(pix_ready), .pixels__payload(pix_payload),
    .result__valid(result_valid), .result__ready(1'b1), .result__payload(result_payload),
{probes}
  );

"""


def _monitor_state(cfg: SbnnConfig, h: HarnessLayout) -> str:
    """The signature functions (cosim/digest.py) and the monitor's and driver's state."""
    return f"""{sv_functions(cfg)}
  // Signatures and counts of the image being computed; its compute starts at cycle base.
  logic [63:0] sig_start = 64'h{SEED:016x}, sig_done = 64'h{SEED:016x};
  logic [31:0] n_start = 0, n_done = 0, base = 0, total_start = 0, total_done = 0;
  reg full = 1'b0;

  integer f_cmd, f_start, f_done, f_image, f_result, f_digest, f_totals, n;
  reg [8*1024-1:0] cmd_path, log_prefix;
  reg [7:0] kind;
  reg [{max(h.prog_bits, h.pixel_bits) - 1}:0] word;
  reg have_cmd = 1'b0;   // a command is being presented
  reg eof = 1'b0;
  integer sent = 0, results = 0;

"""


def _open_files() -> str:
    """Plusargs read and log files opened at time 0."""
    return """  initial begin
    done = 1'b0;
    failed = 1'b0;
    if (!$value$plusargs("cmd=%s", cmd_path)) begin
      $display("sbnn harness: +cmd=FILE missing"); $finish;
    end
    if (!$value$plusargs("log=%s", log_prefix)) begin
      $display("sbnn harness: +log=PREFIX missing"); $finish;
    end
    if ($value$plusargs("limit=%d", limit)) ;
    f_cmd = $fopen(cmd_path, "r");
    if (f_cmd == 0) begin
      $display("sbnn harness: cannot open %0s", cmd_path); $finish;
    end
    full = $test$plusargs("full");
    f_digest = $fopen({log_prefix, ".digest"}, "w");
    f_totals = $fopen({log_prefix, ".totals"}, "w");
    if (full) begin
      f_start = $fopen({log_prefix, ".start"}, "w");
      f_done = $fopen({log_prefix, ".done"}, "w");
      f_image = $fopen({log_prefix, ".image"}, "w");
      f_result = $fopen({log_prefix, ".result"}, "w");
    end
  end

"""


def _tasks(h: HarnessLayout) -> str:
    """``close_logs`` (totals, then every file) and ``next_cmd`` (present the next
    command of the file)."""
    return f"""  task automatic close_logs;
    begin
      $fwrite(f_totals, "%0d %0d %0d %0d\\n", total_start, total_done, sent, results);
      $fclose(f_digest); $fclose(f_totals);
      if (full) begin
        $fclose(f_start); $fclose(f_done); $fclose(f_image); $fclose(f_result);
      end
    end
  endtask

  // Present the next command (blocking: the values take effect at this edge).
  task automatic next_cmd;
    begin
      have_cmd = 1'b0;
      prog_valid <= 1'b0;
      pix_valid <= 1'b0;
      if (!eof) begin
        n = $fscanf(f_cmd, " %c %h", kind, word);
        if (n != 2) eof = 1'b1;
        else begin
          have_cmd = 1'b1;
          if (kind == "p") begin
            prog_valid <= 1'b1;
            prog_payload <= word[{h.prog_bits - 1}:0];
          end else begin
            pix_valid <= 1'b1;
            pix_payload <= word[{h.pixel_bits - 1}:0];
            pix_last <= (kind == "l");
          end
        end
      end
    end
  endtask

"""


def _cycle_block(cfg: SbnnConfig, h: HarnessLayout) -> str:
    """The clocked block: reset release, monitors (signatures, logs), driver handshakes,
    the progress watchdog and the end."""
    sz = Sizes(cfg)
    lb, pb = sz.layer_bits, sz.plane_bits
    activity = " || ".join(f"p_start{s} || p_done{s}" for s in _suffixes(h))
    return f"""  always @(posedge clk) begin
    cycle <= cycle + 32'd1;
    if (rst) begin
      rst_cnt <= rst_cnt + 3'd1;
      if (rst_cnt == 3'd3) begin
        rst <= 1'b0;
        next_cmd();
      end
    end else if (!done) begin
      // Monitors: what the design shows in the cycle ending at this edge.
{_monitors(h, lb, pb)}      if (result_valid) begin
        $fwrite(f_digest, "%h %h %h %h %h %h %h\\n", base, cycle - base, n_start, n_done,
                sig_start, sig_done, result_payload);
        sig_start = 64'h{SEED:016x};
        sig_done = 64'h{SEED:016x};
        n_start = 0;
        n_done = 0;
        if (full) $fwrite(f_result, "%h %h\\n", cycle, result_payload);
        results = results + 1;
      end
      // Driver: a beat presented in this cycle is taken at this edge if ready.
      if ((prog_valid && prog_ready) || (pix_valid && pix_ready)) begin
        if (pix_valid && pix_last) begin
          base = cycle + 32'd1;  // compute cycle 0 follows the edge that took the last beat
          if (full) $fwrite(f_image, "%h\\n", cycle);
          sent = sent + 1;
        end
        next_cmd();
      end
      idle <= ({activity} || result_valid || (prog_valid && prog_ready)
               || (pix_valid && pix_ready)) ? 32'd0 : idle + 32'd1;
      if (eof && !have_cmd && results == sent) begin
        done <= 1'b1;
        close_logs();
      end else if (idle > limit) begin
        $display("sbnn harness: no progress for %0d cycles at cycle %0d (%0d images sent, %0d %s",
                 limit, cycle, sent, results, "results)");
        failed <= 1'b1;
        done <= 1'b1;
        close_logs();
      end
    end
  end
"""


def _monitors(h: HarnessLayout, lb: int, pb: int) -> str:
    """Every macro's start and done folded into the signatures (and with ``+full`` logged),
    macro 0 first: with several macros the signatures take the transactions in (cycle,
    macro) order, and each names its macro (cosim/digest.py)."""
    parts = []
    for j, s in enumerate(_suffixes(h)):
        macro = "" if h.macros == 1 else f", 8'd{j}"
        logged = "" if h.macros == 1 else f" 8'd{j},"
        fmt = "" if h.macros == 1 else "%h "
        tr = f"p_trace{s}"
        sig_args = f"p_group{s}, p_gain{s}, p_col_en{s}, p_row_x{s}{macro}"
        log_args = (f"{logged} {tr}, p_group{s}, p_gain{s},\n"
                    f"                          p_col_en{s}, row_x_lanes{s}")
        parts.append(f"""      if (p_start{s}) begin
        sig_start = mix64(sig_start ^ start_sig(cycle - base, {tr}[{lb - 1}:0],
                                                {tr}[{lb} +: {pb}], {tr}[{lb + pb} +: {pb}],
                                                {sig_args}));
        n_start = n_start + 1;
        total_start = total_start + 1;
        if (full) $fwrite(f_start, "%h {fmt}%h %h %h %h %h\\n", cycle,{log_args});
      end
      if (p_done{s}) begin
        sig_done = mix64(sig_done ^ done_sig(cycle - base, p_adc{s}{macro}));
        n_done = n_done + 1;
        total_done = total_done + 1;
        if (full) $fwrite(f_done, "%h {fmt}%h\\n", cycle,{logged} adc_lanes{s});
      end
""")
    return "".join(parts)


#: C++ main for the harness without cocotb: toggles the clock until ``done``.
RAW_MAIN_CPP = r"""// Generated by sbnn (cosim/harness.py): the harness without cocotb (raw speed).
#include "Vraw.h"
#include "verilated.h"
#include <chrono>
#include <cstdio>

int main(int argc, char** argv) {
    VerilatedContext* ctx = new VerilatedContext;
    ctx->commandArgs(argc, argv);
    Vraw* top = new Vraw{ctx};
    unsigned long long edges = 0;
    auto t0 = std::chrono::steady_clock::now();
    top->clk = 0;
    top->eval();
    while (!top->done && !ctx->gotFinish()) {
        top->clk = 1;
        top->eval();
        ++edges;
        top->clk = 0;
        top->eval();
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const int failed = top->failed;
    std::printf("sbnn-raw cycles=%llu seconds=%.6f failed=%d\n", edges, s, failed);
    top->final();
    delete top;
    delete ctx;
    return failed;
}
"""
