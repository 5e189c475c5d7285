"""The exit decision after each pass: the class (first index of the largest logit), and
whether the top-two margin reaches EXIT_MARGIN or the budget is spent.

The top-two tournament is split over two cycles: the threshold stage's cycle of each
output-layer column block runs its first levels on the block's logits as they are made
(:attr:`ExitDecision.scores`) and registers the surviving candidates; the decision's cycle
finishes it and tests the margin. Before, the decision's cycle ran the whole tournament from
the logit registers, then the margin test and the state update: the controller's worst path
(docs/silicon.md). The cycles are those of the timing contract: nothing waits longer.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from sbnn.config import SbnnConfig

from .interfaces import IndexShapes, PassControlSignature, ScoreSignature, Sizes
from .stores import sram_macros

__all__ = ["ExitDecision", "top_two", "merge_levels"]

#: A tournament node: (largest, second largest, first index of the largest).
Node = tuple[Value, Value, Value]


def _merge(m: Module, a: Node, b: Node, width: int, index_shape, name: str) -> Node:
    """The node of ``a``'s values followed by ``b``'s (``a`` holds the lower indices)."""
    (a1, a2, ai), (b1, b2, bi) = a, b
    # Named wires per node: nested expressions would be re-expanded at every level.
    t1, t2 = (Signal(signed(width), name=f"top{r}_{name}") for r in (1, 2))
    idx = Signal(index_shape, name=f"best_{name}")
    better = b1 > a1  # strict: ties keep the lower index
    m.d.comb += [t1.eq(Mux(better, b1, a1)), idx.eq(Mux(better, bi, ai)),
                 t2.eq(Mux(better, Mux(a1 > b2, a1, b2), Mux(a2 > b1, a2, b1)))]
    return t1, t2, idx


def merge_levels(m: Module, nodes: list[Node], width: int, levels: int | None = None,
                 prefix: str = "") -> list[Node]:
    """``levels`` levels (None: until one node is left) of a balanced tournament over
    ``nodes`` in index order: each level merges neighbours pairwise, an odd last node goes
    up unmerged. Merging is associative with the left node holding the lower indices, so
    the tree's shape (and where it is cut into cycles) does not change the result."""
    index_shape = nodes[0][2].shape()
    level = 0
    while len(nodes) > 1 and (levels is None or level < levels):
        merged = [_merge(m, a, b, width, index_shape, f"{prefix}{level}_{k}")
                  for k, (a, b) in enumerate(zip(nodes[0::2], nodes[1::2]))]
        if len(nodes) % 2:
            merged.append(nodes[-1])
        nodes, level = merged, level + 1
    return nodes


def top_two(m: Module, values: list[Value], width: int) -> tuple[Value, Value, Value]:
    """(largest, second largest, first index of the largest) of signed ``values``.

    A balanced tournament: each node merges two (top1, top2, index) triples, the left one
    holding the lower indices, so the depth is log2(n) merges instead of a chain of n - 1
    steps (the chain was the controller's critical path). A tie keeps the lower index; a
    repeated maximum is also the second largest, as in a sorted list. (Comparing all pairs
    at once is two comparator depths shallower, but made ABC's mapping 20x slower.)
    """
    low = Const(-(1 << (width - 1)), signed(width))
    index_shape = range(max(len(values), 2))
    nodes = [(v, low, Const(j, index_shape)) for j, v in enumerate(values)]
    return merge_levels(m, nodes, width)[0]


class ExitDecision(wiring.Component):
    """Decides, the cycle after a pass's output logits are written, whether to answer.

    Inputs: ``scores`` (an output-layer column block's logits, in the cycle they are
    written), ``margin`` (EXIT_MARGIN), ``budget``, ``pass_done`` (the logits are complete;
    the decision is taken the next cycle while ``run``), ``clear`` (a new image: no
    decision pending).
    ``pass_control``: ``begin`` (the decision is taken in this cycle), ``next_pass``
    (the pass to run unless the answer exits), ``current_pass`` (in). Outputs:
    ``exit_now`` (with ``begin``: the answer is this pass's), ``best_class`` and
    ``exit_pass`` (the class and pass as the last decision saw them, registered so that the
    result port reads registers, not the comparison tree).

    The tournament over the output layer's classes: in a block's score cycle, the first
    :attr:`stage_levels` levels over the block's classes (registered: the candidates); with
    more than one output block, the cycle after, the candidates' winner merged into a
    running node of the earlier blocks (registered); in the decision cycle, the last
    block's candidates finished and merged into the running node, then the margin test.
    """

    def __init__(self, cfg: SbnnConfig):
        self._cfg = cfg
        shapes = IndexShapes(cfg)
        super().__init__({
            "scores": In(ScoreSignature(cfg)),
            "margin": In(Sizes(cfg).margin_bits), "budget": In(shapes.plane),
            "pass_done": In(1), "run": In(1), "clear": In(1),
            "pass_control": Out(PassControlSignature(cfg)), "exit_now": Out(1),
            "best_class": Out(shapes.class_index), "exit_pass": Out(shapes.plane),
        })

    @property
    def block_classes(self) -> int:
        """Classes in an output block's tournament (the last block's may be fewer)."""
        return min(self._cfg.neurons_per_tile, self._cfg.num_classes)

    @property
    def output_blocks(self) -> int:
        return self._cfg.col_blocks(self._cfg.num_layers - 1)

    @property
    def stage_levels(self) -> int:
        """Tournament levels run in the score cycle: half of the block's and the running
        merge's levels, rounded up (the score cycle also subtracts the thresholds, the
        decision cycle also tests the margin and moves the state); one fewer (at least one)
        when the thresholds come from an SRAM macro, whose read arrives a clock-to-output
        time into the cycle, not a flip-flop's."""
        levels = ceil_log2(self.block_classes)
        total = levels + (self.output_blocks > 1)
        staged = (total + 1) // 2
        if any(spec.store == "thresholds" for spec in sram_macros(self._cfg)):
            staged = max(1, staged - 1)
        return min(levels, staged)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        pending = Signal(name="decision_pending")
        with m.If(self.pass_done):
            m.d.sync += pending.eq(1)
        decide = self.pass_control.begin
        m.d.comb += decide.eq(pending & self.run)

        top1, top2, best = self._tournament(m)
        # top1 - top2 >= EXIT_MARGIN, as the sign of one three-operand sum (one carry-save
        # level and one carry chain instead of a subtraction then a compare). Wide enough:
        # top1 - top2 < 2^tb, EXIT_MARGIN < 2^(tb + 1). (Carrying logit - EXIT_MARGIN
        # through the tree instead measured 0.9 ns worse in this flow.)
        reach = Signal(signed(cfg.threshold_bits + 3))
        m.d.comb += reach.eq(top1 - top2 - self.margin)
        has_pass = self._next_pass(m)
        m.d.comb += self.exit_now.eq((reach >= 0) | ~has_pass)
        with m.If(decide):
            m.d.sync += [pending.eq(0), self.exit_pass.eq(self.pass_control.current_pass),
                         self.best_class.eq(best)]
        with m.If(self.clear):
            m.d.sync += pending.eq(0)
        return m

    def _tournament(self, m: Module) -> Node:
        """The pass's (top1, top2, first index of top1) as the decision cycle sees them."""
        cfg = self._cfg
        width, nt, n = cfg.threshold_bits, cfg.neurons_per_tile, self.block_classes
        low = Const(-(1 << (width - 1)), signed(width))
        classes = IndexShapes(cfg).class_index
        local = range(max(n, 2))
        scores = self.scores
        # Score cycle: class b * nt + i of block b at leaf i; past the last class (a
        # partial last block) the lowest value, which changes no result: it comes after
        # every real class, so it never wins a tie, and it is no larger than any runner-up.
        leaves = []
        for i in range(n):
            value = scores.values[i]
            if cfg.num_classes % nt and i >= cfg.num_classes % nt:
                value = Mux(scores.col_block == self.output_blocks - 1, low, value)
            leaves.append((value, low, Const(i, local)))
        staged = merge_levels(m, leaves, width, self.stage_levels, "stage")
        candidates = []
        for k, (t1, t2, idx) in enumerate(staged):
            held = (Signal(signed(width), name=f"cand{k}_top1"),
                    Signal(signed(width), name=f"cand{k}_top2"),
                    Signal(local, name=f"cand{k}_best"))
            with m.If(scores.en):
                m.d.sync += [held[0].eq(t1), held[1].eq(t2), held[2].eq(idx)]
            candidates.append(held)
        block = Signal(IndexShapes(cfg).col_block, name="cand_block")
        with m.If(scores.en):
            m.d.sync += block.eq(scores.col_block)
        # Decision cycle (and, with several blocks, the cycle after each score cycle): the
        # candidates' winner, its index made global.
        t1, t2, idx = merge_levels(m, candidates, width, None, "cand")[0]
        winner = (t1, t2, Signal(classes, name="cand_class"))
        m.d.comb += winner[2].eq(block * nt + idx)
        if self.output_blocks == 1:
            return winner
        # The blocks before the last: merged into a running node the cycle after each
        # score cycle (block 0 restarts it). The last block's merge is the decision's
        # only: it is never written back, so a decision that waits (``run`` low) still
        # merges the last block once, not twice (which would make its top1 the top2 too).
        running = (Signal(signed(width), name="running_top1"),
                   Signal(signed(width), name="running_top2"),
                   Signal(classes, name="running_best"))
        final = _merge(m, running, winner, width, classes, "final")
        fresh = Signal(name="cand_fresh")  # the candidates were scored in the last cycle
        m.d.sync += fresh.eq(scores.en)
        with m.If(fresh & (block != self.output_blocks - 1)):
            m.d.sync += [r.eq(Mux(block == 0, w, f))
                         for r, w, f in zip(running, winner, final)]
        return final

    def _next_pass(self, m: Module) -> Value:
        """Drive ``pass_control.next_pass`` (pass + 1: every pass runs, each has at least
        its first layer's blocks to evaluate or rethreshold); returns whether it is within
        the budget."""
        current = self.pass_control.current_pass
        m.d.comb += self.pass_control.next_pass.eq(current + 1)
        return current < self.budget
