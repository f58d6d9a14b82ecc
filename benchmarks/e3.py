"""E3's flop rate against the machine's matrix-multiply rate, measured in one run.

E3 (``reproduce/e3.py``) trains the paper's MNIST network, 784 -> 1000 ReLU -> 10, by
feedback alignment with batch 600, the three lambdas of a repetition as three copies of one
network stepped one after another by ``deep.lambdas.train_lambdas``. This times
``run_rep`` (its ``seconds``: every step's products, element-wise work and recorded
alignments) at the paper's sizes on MNIST, and
divides the flops of its matrix products by that time:

    per step   4 L b H D  (z = x W^T and grad_W = delta^T x)
             + 8 L b H C  (logits, e B, e beta, grad_beta)
    per test evaluation (at the start and the end)  2 L m H (D + C)

with L = 3 lambdas, b = 600, H = 1000, D = 784, C = 10, m test samples. ``fraction`` is
that flop rate over torch.matmul's on a square float32 product measured in the same run
(``roofline.py``; before and after, the higher counts). To say where the rest goes it
also times the step's two large batched products alone at the step's shapes
(``gemm_fraction``: their flop rate over the matmul rate) and lists the step's torch ops
by their share of its time (torch.profiler over a few steps).

    python benchmarks/e3.py [--steps 40] [--threads T]

The last line of output is one JSON object. Needs MNIST where ``fa`` finds it (``make
data``); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

import roofline
from feedback_alignment import hardware
from feedback_alignment.reproduce.e3 import run_rep
from feedback_alignment.reproduce.profiles import E3_LAMS

L, B, H, D, C = len(E3_LAMS), 600, 1000, 784, 10
TEST = 1000  # test samples evaluated at the start and the end (a small part of the flops)
LR = 1e-2


def step_flops() -> float:
    return 4.0 * L * B * H * D + 8.0 * L * B * H * C


def eval_flops() -> float:
    return 2.0 * L * TEST * H * (D + C)


def run(steps: int) -> dict:
    return run_rep(
        rep=0,
        base_seed=0,
        source="mnist",
        train=None,
        test=TEST,
        hidden=H,
        batch=B,
        steps=steps,
        eval_every=10**9,  # only at the start and the end
        lr=LR,
        dtype="float32",
    )


def gemm_rate(repeats: int = 5) -> float:
    """flop/s of the step's two large products alone, at its shapes: z = x W^T
    (L, b, D) x (L, D, H) and grad_W = delta^T x, (L, H, b) x (b, D)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, D, generator=g)
    W = torch.randn(L, H, D, generator=g)
    delta = torch.randn(L, B, H, generator=g)

    def both():
        torch.matmul(x, W.transpose(1, 2))
        torch.matmul(delta.transpose(1, 2), x)

    both()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        both()
        best = min(best, time.perf_counter() - t0)
    return 4.0 * L * B * H * D / best


def op_shares(steps: int) -> list[tuple[str, float]]:
    """The step's torch ops by their share of its CPU time (torch.profiler): the op times
    of a run of ``steps`` steps less those of a run of none (loading and preparing the
    data, the test evaluation), which leaves the steps'."""
    from torch.profiler import ProfilerActivity, profile

    def times(n: int) -> dict[str, float]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(n)
        return {e.key: e.self_cpu_time_total for e in prof.key_averages()}

    base, full = times(0), times(steps)
    diff = {k: v - base.get(k, 0.0) for k, v in full.items()}
    diff = {k: v for k, v in diff.items() if v > 0}
    total = sum(diff.values())
    return sorted(((k, v / total) for k, v in diff.items()), key=lambda x: -x[1])[:12]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="steps a timed run (default 40)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs, the fastest counts")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.runs < 1:
        ap.error(f"--steps and --runs must be >= 1, got {args.steps} and {args.runs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = hardware.describe()
    print(
        f"# {hardware.line(out)}; E3: L={L} lambdas, batch {B}, {D} -> {H} -> {C}, float32",
        flush=True,
    )
    before = roofline.limits(("float32",))
    print(f"# machine limits (before): {roofline.describe(before)}", flush=True)
    run(2)  # warm-up: data loading, first-call costs
    seconds = min(run(args.steps)["seconds"] for _ in range(args.runs))
    flops = args.steps * step_flops() + 2 * eval_flops()
    gemm = gemm_rate()
    after = roofline.limits(("float32",))
    print(f"# machine limits (after): {roofline.describe(after)}", flush=True)
    mm = roofline.best_of(before, after)["matmul_float32_flops_per_s"]
    rate = flops / seconds
    out.update(
        steps=args.steps,
        step_ms=seconds / args.steps * 1e3,
        step_flops=step_flops(),
        flops_per_s=rate,
        matmul_flops_per_s=mm,
        fraction=rate / mm,
        gemm_flops_per_s=gemm,
        gemm_fraction=gemm / mm,
        limits={"before": before, "after": after},
    )
    print(
        f"E3 step {out['step_ms']:.1f} ms, {rate / 1e9:.1f} GFLOP/s = {out['fraction']:.2f} of "
        f"the matmul rate ({mm / 1e9:.0f} GFLOP/s); its two large products alone: "
        f"{gemm / 1e9:.1f} GFLOP/s = {out['gemm_fraction']:.2f}",
        flush=True,
    )
    shares = op_shares(max(5, args.steps // 4))
    out["op_shares"] = dict(shares)
    print("# where a step's time goes (torch.profiler, self CPU time):", flush=True)
    for name, share in shares:
        print(f"  {name:<28} {share:6.1%}", flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
