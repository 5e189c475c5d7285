"""The image loader: takes an image's pixel beats into the pixel buffer and latches its
latency budget."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sbnn.config import PIXEL_BITS, SbnnConfig

from .interfaces import IndexShapes, PixelWriteSignature, pixel_layout, stream_of
from .program import clamp_to_supports

__all__ = ["ImageLoader"]


class ImageLoader(wiring.Component):
    """Takes ``input_beats`` beats of ``pixels`` while ``enable`` is high.

    Ports: ``pixels`` (the beat stream; ``ready`` = ``enable``), ``enable`` (between
    images), ``default_budget`` (the budget unless the first beat's ``use_budget`` asks for
    its own), ``pixel_write`` (each beat's row codes: the top ``dac_bits`` of each pixel,
    zero-extended to a signed ``x_bits`` code), ``budget`` (this image's budget, latched
    with the first beat, clamped to K), ``first_beat`` (the next beat taken is an image's
    first), ``loaded`` (the last beat is taken in this cycle).
    """

    def __init__(self, cfg: SbnnConfig):
        self._cfg = cfg
        plane = IndexShapes(cfg).plane
        super().__init__({
            "pixels": In(stream_of(pixel_layout(cfg))),
            "enable": In(1),
            "default_budget": In(plane),
            "pixel_write": Out(PixelWriteSignature(cfg)),
            "budget": Out(plane),
            "first_beat": Out(1),
            "loaded": Out(1),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        beat_in = self.pixels.payload
        m = Module()
        beat = Signal(range(max(cfg.input_beats, 2)))
        taken = Signal()
        m.d.comb += [self.pixels.ready.eq(self.enable), taken.eq(self.pixels.valid & self.enable),
                     self.first_beat.eq(beat == 0)]
        shift = PIXEL_BITS - cfg.dac_bits
        codes = Cat(*[Cat(beat_in.pixels[j][shift:], Const(0, 1)) for j in range(cfg.input_lanes)])
        m.d.comb += [self.pixel_write.en.eq(taken), self.pixel_write.beat.eq(beat),
                     self.pixel_write.codes.eq(codes)]
        requested = clamp_to_supports(m, cfg, beat_in.budget, "requested_budget")
        with m.If(taken):
            with m.If(beat == 0):
                m.d.sync += self.budget.eq(Mux(beat_in.use_budget, requested,
                                               self.default_budget))
            with m.If(beat == cfg.input_beats - 1):
                m.d.sync += beat.eq(0)
                m.d.comb += self.loaded.eq(1)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        return m
