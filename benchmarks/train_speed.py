"""Training step time: the fast paths of golden/model.py and studies/train_loop.py against
the plain forms they replaced, side by side, with bitwise-identical results checked.

For each stage shape of the results recipe (configs/mnist_large.toml, 784-1024-1024-10,
batch 200, support-column dropout 0.1), the same seeded model trains the same seeded
minibatches twice, one torch thread:

* plain: sign as ``torch.where(x >= 0, 1, -1)``, the estimator as ``grad * (|x| <= 1)``,
  the effective weight as a stacked sum, one forward per budget (each binarizing every
  plane again) and the per-tensor Adam: the training code before this benchmark;
* fast: the code as it is (``torch.sign`` with the zero case kept, ``hardtanh_backward``,
  ``SupportedBNN.forward_budgets``, the multi-tensor Adam).

Both are timed in CPU seconds of this process (``time.process_time``), after warm-up steps,
alternating plain and fast rounds so that other load hits both alike; the parameters after
the steps must be equal bit for bit, else the script fails. Prints a table and writes
docs/train_speed.json (or --out). An epoch of the recipe is 250 such steps.

Usage: python benchmarks/train_speed.py [--steps 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from sbnn.machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]

#: (name, K, budgets of the loss, which rows train it)
SHAPES = [
    ("K=0, budget 0", 0, (0,), "case (i) stage 1 (the baseline), case (ii) K=0 control"),
    ("K=1, budget 1", 1, (1,), "case (i) stage 2 and its supports-off control"),
    ("K=1, budgets 0+1", 1, (0, 1), "case (ii)"),
]


class _PlainSign(torch.autograd.Function):
    """The sign and estimator as written before (the spec's forms, directly)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def _plain_effective_weight(self, budget=None, signs=None):
    return torch.stack(self.plane_weights(budget, signs)).sum(0)


@contextlib.contextmanager
def _plain_forms() -> Iterator[None]:
    from sbnn.golden import model as m

    saved = m.binarize, m.SupportedLinear.effective_weight
    m.binarize = _PlainSign.apply
    m.SupportedLinear.effective_weight = _plain_effective_weight
    try:
        yield
    finally:
        m.binarize, m.SupportedLinear.effective_weight = saved


def _run(cfg, budgets, steps: int, warmup: int, fast: bool) -> tuple[float, dict]:
    """CPU seconds per step of ``steps`` timed steps, and the final state dict."""
    from sbnn.golden.model import SupportedBNN

    torch.manual_seed(0)
    model = SupportedBNN(cfg).train()
    for lin in model.linears:
        lin.support_drop = 0.1
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, foreach=fast)
    data = torch.Generator().manual_seed(1)
    loss_fn = nn.CrossEntropyLoss()
    with contextlib.nullcontext() if fast else _plain_forms():
        for step in range(warmup + steps):
            if step == warmup:
                t0 = time.process_time()
            x = torch.randint(0, 16, (200, cfg.layers[0]), generator=data).float()
            y = torch.randint(0, 10, (200,), generator=data)
            outs = model.forward_budgets(x, budgets) if fast else [model(x, b) for b in budgets]
            loss = sum(loss_fn(o, y) / len(budgets) for o in outs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            model.constrain()
    return (time.process_time() - t0) / steps, model.state_dict()


def main(argv: list[str] | None = None) -> int:
    import tomllib

    from sbnn.config import SbnnConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps a round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="plain/fast pairs a shape")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "train_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    design = tomllib.loads((ROOT / "configs/mnist_large.toml").read_text())["sbnn"]
    rows = []
    for name, k, budgets, used_by in SHAPES:
        cfg = SbnnConfig(**{**design, "num_supports": k})
        plain_s, fast_s, identical = [], [], True
        for _ in range(args.rounds):
            p, p_state = _run(cfg, budgets, args.steps, args.warmup, fast=False)
            f, f_state = _run(cfg, budgets, args.steps, args.warmup, fast=True)
            plain_s.append(p)
            fast_s.append(f)
            identical &= all(p_state[n].numpy().tobytes() == f_state[n].numpy().tobytes()
                             for n in p_state)
        plain, fast = min(plain_s), min(fast_s)
        rows.append({"shape": name, "num_supports": k, "budgets": list(budgets),
                     "used_by": used_by, "plain_ms_per_step": round(plain * 1e3, 1),
                     "fast_ms_per_step": round(fast * 1e3, 1),
                     "speedup": round(plain / fast, 2),
                     "plain_s_per_epoch": round(plain * 250, 1),
                     "fast_s_per_epoch": round(fast * 250, 1),
                     "bitwise_identical": identical})
        r = rows[-1]
        print(f"{name:18s} plain {r['plain_ms_per_step']:6.1f} ms/step, fast "
              f"{r['fast_ms_per_step']:6.1f} ms/step: {r['speedup']:.2f}x "
              f"(an epoch's steps {r['plain_s_per_epoch']} -> {r['fast_s_per_epoch']} s), "
              f"identical: {identical}", flush=True)
    result = {"command": "python benchmarks/train_speed.py "
                         f"--steps {args.steps} --rounds {args.rounds}",
              "cpu": cpu_name(), "python": platform.python_version(),
              "torch": torch.__version__, "threads": 1, "batch_size": 200,
              "timing": "CPU seconds of this process a step, the least of the rounds",
              "rows": rows}
    from sbnn.fileio import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not all(r["bitwise_identical"] for r in rows):
        print("error: the fast paths did not reproduce the plain forms bit for bit")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
