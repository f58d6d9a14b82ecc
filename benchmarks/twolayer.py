"""Benchmark of the two-layer engine (issues 2 and 6).

For K = 50 members, n = 50, d = 150, ReLU, float32 and p in {200, 3200, 12800} it
measures, in one run on one machine:

* the engine's steps/s and achieved GFLOP/s (explicit path), beside the rate torch.matmul
  reaches doing the same two matrix products alone on arrays of the same size (the
  hardware limit; W streams from memory, it does not fit in cache): ``gemm_fraction``;
* the same K runs done the authors' way, one member at a time through a custom autograd
  layer and torch.optim.SGD: ``speedup_vs_per_run`` = per-run time / time of the fastest
  exact path the engine picks (``speedup_explicit_vs_per_run`` for the explicit path);
* a projection of the paper's full E1 grid on this machine from measured step times.

Ratios, not absolute times, are the figures to compare (the machine is shared). The last
line of output is one JSON object. ``--quick`` finishes within a minute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import torch

from feedback_alignment.twolayer.data import random_teacher
from feedback_alignment.twolayer.engine import TwoLayerEnsemble

K, N, D = 50, 50, 150


def best_time(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up): the least noisy estimate."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def gemm_flops(p: int) -> float:
    """Flops of one step's two big products: Z = W X^T and the update M X."""
    return 2 * 2 * K * N * D * p


def matmul_rate(p: int, repeats: int) -> tuple[float, float]:
    """GFLOP/s of torch.matmul doing the engine's two products (shared X) on arrays of the
    engine's size: all K members' W (K p x d, 96 MB at p = 3200), walked in the member
    blocks the engine uses or all at once, the best of the two. That is the limit for the
    engine, whose W does not fit in cache. Also returned: the rate when one block is
    reused from cache (the optimistic figure the first version of this benchmark used)."""
    X = torch.randn(N, D)
    W = torch.randn(K * p, D)
    M = torch.randn(K * p, N)
    best = hot = 0.0
    for block in sorted({K, max(1, min(K, int(24e6 // (p * (D + 2 * N) * 4))))}):
        rows = block * p
        starts = range(0, K * p - rows + 1, rows)

        def products(starts=starts, rows=rows):
            for r in starts:
                W[r : r + rows] @ X.T
                W[r : r + rows].addmm_(M[r : r + rows], X, alpha=-1e-30)

        def reused(starts=starts, rows=rows):
            for _ in starts:
                W[:rows] @ X.T
                W[:rows].addmm_(M[:rows], X, alpha=-1e-30)

        flops = gemm_flops(p) * len(starts) * block / K
        best = max(best, flops / best_time(products, repeats) / 1e9)
        hot = max(hot, flops / best_time(reused, repeats) / 1e9)
    return best, hot


class FAOutput(torch.autograd.Function):
    """u = H beta / sqrt p; backward sends the error through b (FA) instead of beta."""

    @staticmethod
    def forward(ctx, H, beta, b):
        ctx.save_for_backward(H, b)
        return H @ beta / math.sqrt(H.shape[1])

    @staticmethod
    def backward(ctx, gu):
        H, b = ctx.saved_tensors
        s = math.sqrt(H.shape[1])
        return torch.outer(gu, b) / s, H.T @ gu / s, None


def per_run_seconds(p: int, steps: int, members: int) -> float:
    """The authors' way: one network at a time, autograd + torch.optim.SGD, FA rule."""
    X, y = random_teacher(N, D, p, "relu", seed=0)
    X, y = X.float(), y.float()
    total = 0.0
    for k in range(members):
        g = torch.Generator().manual_seed(k)
        W = torch.randn(p, D, generator=g).requires_grad_()
        beta = torch.randn(p, generator=g).requires_grad_()
        b = torch.randn(p, generator=g)
        opt = torch.optim.SGD(
            [{"params": [W], "weight_decay": 0.0}, {"params": [beta], "weight_decay": 0.02}],
            lr=1e-2,
        )

        def step(W=W, beta=beta, b=b, opt=opt):
            opt.zero_grad()
            u = FAOutput.apply(torch.relu(X @ W.T), beta, b)
            loss = ((u - y) ** 2).mean()
            loss.backward()
            opt.step()

        step()  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        total += time.perf_counter() - t0
    return total / steps  # seconds per step for `members` runs


def engine_seconds(
    p: int,
    steps: int,
    repeats: int,
    path: str = "explicit",
    act: str = "relu",
    members: int = K,
    fuse: bool | str = False,
    native: bool = True,
) -> tuple[float, str, float]:
    """Seconds per lockstep step of ``members`` networks (FA, lam 0.02, MSE recorded only).

    The step time is the engine's own loop timer (``History.seconds``, the best of
    ``repeats`` fits after a warm-up fit) over ``steps``; a fit's one-off cost (binding the
    data, forming W at the end) is the rest of its wall time, returned on its own. The path
    returned is "<path>+<kernels>" (torch, compiled or native); ``native=False`` keeps
    the native kernels off (FA_NATIVE=0) to time the compiled ones.
    """
    X, y = random_teacher(N, D, p, act, seed=0)
    ens = TwoLayerEnsemble(D, p, seeds=range(members), activation=act, dtype="float32")
    hist = {}
    lr = {"linear": 1e-3, "relu": 1e-2}.get(act, 1e-1)

    def run(n_steps):
        hist["h"] = ens.fit(
            X,
            y,
            rule="fa",
            lr=lr,
            lam=0.02,
            steps=n_steps,
            metrics=("mse",),
            path=path,
            fuse=fuse,
        )
        ens.W  # noqa: B018 -- forming W is part of a fit's fixed cost

    old = os.environ.get("FA_NATIVE")
    os.environ["FA_NATIVE"] = "1" if native else "0"
    try:
        run(steps)  # warm-up: builds or compiles kernels, faults pages in
        loops, walls = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(steps)
            walls.append(time.perf_counter() - t0)
            loops.append(hist["h"].seconds)
    finally:
        if old is None:
            del os.environ["FA_NATIVE"]
        else:
            os.environ["FA_NATIVE"] = old
    # the engine's own timer covers the step loop (one extra forward pass for the last
    # step's record included); binding the data and forming W are the fit's set-up
    per_step = min(loops) / steps
    setup = min(w - lp for w, lp in zip(walls, loops, strict=True))
    return per_step, f"{hist['h'].path}+{hist['h'].kernels}", setup


WIDTHS_E1 = [200, 400, 800, 1600, 3200, 6400, 12800]


def project_e1(quick: bool) -> dict:
    """Wall time of the paper's full E1 grid (3 activations x 4 lambdas x 7 widths x 50
    repetitions, at least round(5000 sqrt(p/200)) steps each) from measured step times of
    the fastest exact path, all 200 runs of one (activation, width) in one ensemble."""
    per_act = {}
    total = 0.0
    for act in ("linear", "relu", "tanh"):
        secs = {}
        for p in WIDTHS_E1:
            steps = 3 if quick else 100 if p <= 800 else 50 if p <= 3200 else 30
            min_steps = round(5000 * math.sqrt(p / 200))
            # what fuse="auto" picks for runs of min_steps: the native kernels for ReLU and
            # tanh; the linear FA path has no element-wise work to fuse
            fuse = "auto"
            t_step, path, setup = engine_seconds(p, steps, 2, "auto", act, members=K, fuse=fuse)
            runs = 4 * 50
            secs[p] = (t_step * min_steps + setup) * runs / K
        per_act[act] = {"path": path, "seconds_by_width": secs}
        print(f"  {act}: {sum(secs.values()) / 3600:.2f} h", flush=True)
        total += sum(secs.values())
    return {
        "hours": total / 3600,
        "per_activation": per_act,
        "note": "lower bound: runs that have not plateaued at the minimum go on",
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps; under a minute")
    ap.add_argument("--widths", type=int, nargs="*", default=[200, 3200, 12800])
    ap.add_argument("--no-projection", action="store_true", help="skip the E1 projection")
    ap.add_argument("--no-fused", action="store_true", help="skip timing the torch.compile kernels")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    out: dict = {
        "machine": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "K": K,
        "n": N,
        "d": D,
        "dtype": "float32",
    }
    for p in args.widths:
        if args.quick:
            steps = 10 if p == 3200 else 5 if p > 3200 else 20
        else:  # enough steps that a fit's set-up (~0.5 s at p = 12800) is not the signal
            steps = 100 if p < 3200 else 50 if p == 3200 else 30
        repeats = 2 if args.quick else 3
        members = K if not args.quick or p <= 3200 else 10
        t_engine, _, _ = engine_seconds(p, steps, repeats, "explicit")
        # what the engine picks by itself (path and kernels "auto"): the figure
        t_fast, path, setup = engine_seconds(p, steps, repeats, "auto", fuse="auto")
        # the same path on torch ops alone, and with the torch.compile kernels
        t_plain, _, _ = engine_seconds(p, steps, repeats, "auto", fuse=False)
        t_fused = None
        if not (args.no_fused or args.quick) and p >= 3200:
            t_fused, _, _ = engine_seconds(p, steps, repeats, "auto", fuse=True, native=False)
        rate, rate_hot = matmul_rate(p, repeats + 2)
        t_run = per_run_seconds(p, max(2, steps // (2 if args.quick else 1)), members)
        t_run *= K / members
        gflops = gemm_flops(p) / t_engine / 1e9
        row = {
            "explicit_steps_per_s": 1 / t_engine,
            "explicit_gflops": gflops,
            "matmul_gflops": rate,
            "gemm_fraction": gflops / rate,
            "matmul_gflops_cache_hot": rate_hot,
            "fast_path": path,
            "fast_steps_per_s": 1 / t_fast,
            "fast_setup_s": setup,
            "torch_ops_steps_per_s": 1 / t_plain,
            "compiled_steps_per_s": None if t_fused is None else 1 / t_fused,
            "per_run_steps_per_s": 1 / t_run,
            "speedup_explicit_vs_per_run": t_run / t_engine,
            "speedup_vs_per_run": t_run / t_fast,
        }
        print(
            f"p={p:6d}  "
            + "  ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            ),
            flush=True,
        )
        out[f"p{p}"] = row
        out[f"gemm_fraction_p{p}"] = row["gemm_fraction"]
        out[f"speedup_vs_per_run_p{p}"] = row["speedup_vs_per_run"]
        out[f"speedup_explicit_vs_per_run_p{p}"] = row["speedup_explicit_vs_per_run"]
    if not (args.no_projection or args.quick):
        out["e1_full_projection"] = project_e1(args.quick)
        print(f"E1 full grid projected: {out['e1_full_projection']['hours']:.2f} h", flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
