"""Top levels: the full behavioral simulation top and the tapeout top with a black-box macro."""

from __future__ import annotations

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, Shape
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from sbnn.config import SbnnConfig

from .controller import Controller
from .interfaces import controller_members, macro_signature, trace_layout
from .macro import BehavioralMacro, MismatchTable

__all__ = ["SimTop", "TapeoutTop", "MACRO_MODULE", "macro_instance_names", "macro_port_list",
           "probe_signature", "signature_ports"]

#: Module name of the analog macro black box in the tapeout Verilog.
MACRO_MODULE = "sbnn_macro"


def macro_instance_names(config: SbnnConfig) -> list[str]:
    """Instance names of the analog macros in the controller Verilog, macro j at j:
    ``macro`` alone (one macro, the name it always had), else ``macro_0`` .."""
    n = config.num_macros
    return ["macro"] if n == 1 else [f"macro_{j}" for j in range(n)]


def macro_port_list(config: SbnnConfig) -> list[tuple[str, str, int]]:
    """(name, direction seen from the macro, width) for every macro port, clock first."""
    ports = [("clk", "input", 1), ("rst", "input", 1)]
    for name, member in macro_signature(config).members.items():
        direction = "input" if member.flow == Out else "output"
        ports.append((name, direction, Shape.cast(member.shape).width))
    return ports


def signature_ports(component: wiring.Component) -> list[tuple[str, str, int]]:
    """(name, direction, width) of a component's signature ports as Amaranth's Verilog
    backend names them (path joined by ``__``), clock and reset not included."""
    component._MustUse__silence = True  # only its signature is read here
    ports = []
    for path, member, _value in component.signature.flatten(component):
        direction = "input" if member.flow == In else "output"
        ports.append(("__".join(str(p) for p in path), direction,
                      Shape.cast(member.shape).width))
    return ports


def probe_signature(config: SbnnConfig) -> wiring.Signature:
    """Every macro bus member as an output, for monitors."""
    return wiring.Signature({name: Out(member.shape)
                             for name, member in macro_signature(config).members.items()})


class SimTop(wiring.Component):
    """Controller plus behavioral macro, with the macro bus mirrored on ``probe`` ports.

    The probe lets a testbench monitor every macro transaction without reaching into the
    hierarchy (Verilator then needs no public-signal flags, which would slow it down).
    ``mismatch``: one drawn process variation for the behavioral macro (rtl/macro.py);
    the controller is the same either way.
    """

    def __init__(self, config: SbnnConfig, mismatch: MismatchTable | None = None):
        self._cfg = config
        self._mismatch = mismatch
        members = controller_members(config)
        n = config.num_macros
        if n > 1:  # one probe per macro, probe[j] and probe_trace[j] (rtl/parallel.py)
            members["probe"] = Out(probe_signature(config)).array(n)
            members["probe_trace"] = Out(data.ArrayLayout(trace_layout(config), n))
        else:
            members["probe"] = Out(probe_signature(config))
            members["probe_trace"] = Out(trace_layout(config))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ctrl = ctrl = Controller(self._cfg)
        wiring.connect(m, wiring.flipped(self.prog), ctrl.prog)
        wiring.connect(m, wiring.flipped(self.pixels), ctrl.pixels)
        wiring.connect(m, ctrl.result, wiring.flipped(self.result))
        if self._cfg.num_macros > 1:
            # N identical macros (each gets every weight write; the same mismatch draw).
            for j in range(self._cfg.num_macros):
                macro = BehavioralMacro(self._cfg, self._mismatch)
                m.submodules[f"macro_{j}"] = macro
                wiring.connect(m, ctrl.macro[j], macro.bus)
                for name in macro_signature(self._cfg).members:
                    m.d.comb += getattr(self.probe[j], name).eq(getattr(ctrl.macro[j], name))
            m.d.comb += self.probe_trace.eq(ctrl.trace)
            return m
        m.submodules.macro = macro = BehavioralMacro(self._cfg, self._mismatch)
        wiring.connect(m, ctrl.macro, macro.bus)
        for name in macro_signature(self._cfg).members:
            m.d.comb += getattr(self.probe, name).eq(getattr(ctrl.macro, name))
        m.d.comb += self.probe_trace.eq(ctrl.trace)
        return m


class TapeoutTop(wiring.Component):
    """Controller with the analog macro as a black-box ``sbnn_macro`` instance (and the
    stores that are SRAM macros, ``sram_min_bits``, as instances of theirs).

    ``trace`` (layer, plane and pass of the evaluation starting) is an output so that the
    simulation top (gen/sim_macro.py) wraps this very Verilog: the cosim then checks the
    netlist text that goes to tapeout. A flow may leave it unconnected.
    """

    def __init__(self, config: SbnnConfig):
        self._cfg = config
        members = controller_members(config)
        n = config.num_macros
        members["trace"] = Out(trace_layout(config) if n == 1 else
                               data.ArrayLayout(trace_layout(config), n))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ctrl = ctrl = Controller(self._cfg, sram_instances=True)
        wiring.connect(m, wiring.flipped(self.prog), ctrl.prog)
        wiring.connect(m, wiring.flipped(self.pixels), ctrl.pixels)
        wiring.connect(m, ctrl.result, wiring.flipped(self.result))
        m.d.comb += self.trace.eq(ctrl.trace)
        n = self._cfg.num_macros
        for j in range(n):
            bus = ctrl.macro if n == 1 else ctrl.macro[j]
            kwargs = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
            for name, member in macro_signature(self._cfg).members.items():
                prefix = "i_" if member.flow == Out else "o_"
                kwargs[prefix + name] = getattr(bus, name)
            m.submodules[macro_instance_names(self._cfg)[j]] = Instance(MACRO_MODULE, **kwargs)
        return m
