"""The engine on a CUDA GPU: every path against the explicit engine, and E1/E3 timings.

1. Correctness, float64 on the GPU: every first-layer path (explicit with and without
   compiled kernels, row-space with and without them and with ``keep_weights=False``,
   linear FA) for each activation, shared X and one X per member, against the explicit
   engine on the GPU (relative 1e-10 on every recorded metric), and the GPU's explicit
   engine against the CPU's.
2. Timings at the paper's sizes, float32: E1 (K = 200 members a cell, one X per member,
   n = 50, d = 150, each activation and width) with the full grid projected at the
   paper's run-length rule (at least rint(5000 sqrt(p) // 14) steps), and E3's step
   (784 -> 1000 ReLU -> 10, batch 600, the 3 lambdas x 10 repetitions in lockstep) with
   its 30,000 steps projected.

Where torch has no CUDA device it prints one line and exits at once (status 0): there is
nothing to measure. The last line of output is otherwise one JSON object.
"""

from __future__ import annotations

import sys


def no_gpu_reason() -> str | None:
    """Why this cannot run here (None where a CUDA device is usable)."""
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda or "none"
        return (
            f"no CUDA GPU available to torch {torch.__version__} (CUDA build: {built}); "
            "benchmarks/gpu.py needs one, nothing was run"
        )
    return None


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="widths 200, 3200, 12800; fewer steps")
    args = ap.parse_args(argv)
    reason = no_gpu_reason()
    if reason:
        print(reason, flush=True)
        return 0
    return _run(args.quick)


def _run(quick: bool) -> int:  # pragma: no cover - needs a GPU
    import json
    import math
    import time

    import numpy as np
    import torch

    from feedback_alignment.twolayer.data import linear_teacher, random_teacher, stack
    from feedback_alignment.twolayer.engine import TwoLayerEnsemble

    dev = torch.device("cuda")
    out: dict = {"gpu": torch.cuda.get_device_name(dev), "torch": torch.__version__}
    print(f"# {out['gpu']}, torch {out['torch']}", flush=True)

    # ---------------------------------------------------------------- correctness
    worst = 0.0
    checks = []
    N, D, P, SEEDS = 20, 60, 300, [0, 1, 2]
    for act in ("linear", "relu", "tanh", "sigmoid"):
        for shared in (True, False):
            X, y = stack(random_teacher, SEEDS, n=N, d=D, p=P, activation="tanh")
            if shared:
                X, y = X[0], y[0]

            def fit(path, kernels, device, keep=True, act=act, X=X, y=y):
                ens = TwoLayerEnsemble(
                    D, P, seeds=SEEDS, activation=act, dtype="float64", device=device
                )
                metrics = ("mse", "alignment", "beta_change", "update_alignment")
                if keep:
                    metrics += ("w_change",)
                h = ens.fit(
                    X,
                    y,
                    lr=[0.02, 0.05, 0.01],
                    lam=[0.0, 0.2, 0.05],
                    steps=300,
                    record_every=50,
                    path=path,
                    kernels=kernels,
                    keep_weights=keep,
                    metrics=metrics,
                )
                return h

            ref = fit("explicit", "torch", "cuda")
            cpu = fit("explicit", "torch", "cpu")
            variants = [("cpu explicit", cpu)]
            for path in ("explicit", "rowspace"):
                for kernels in ("torch", "compiled"):
                    variants.append((f"{path} {kernels}", fit(path, kernels, "cuda")))
            if act == "linear":  # no element-wise work there: nothing to compile
                variants.append(("linear_fa torch", fit("linear_fa", "torch", "cuda")))
            variants.append(
                ("rowspace keep_weights=False", fit("rowspace", "compiled", "cuda", False))
            )
            for name, h in variants:
                err = 0.0
                for m, v in h.metrics.items():
                    r = ref.metrics[m]
                    ok = np.isfinite(r)
                    scale = max(np.abs(r[ok]).max(initial=0.0), 1e-300)
                    err = max(err, float(np.abs(v[ok] - r[ok]).max(initial=0.0)) / scale)
                worst = max(worst, err)
                checks.append(
                    {
                        "activation": act,
                        "shared": shared,
                        "variant": name,
                        "kernels": h.kernels,
                        "max_rel_err": err,
                    }
                )
    out["correctness"] = {"worst_rel_err": worst, "checks": checks, "passed": worst < 1e-10}
    print(f"correctness: worst relative error {worst:.2e} over {len(checks)} checks", flush=True)

    # ---------------------------------------------------------------- E1 timing
    def sync_time(fn, repeats=3):
        fn()
        torch.cuda.synchronize()
        best = math.inf
        for _ in range(repeats):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        return best

    from feedback_alignment.activations import paper_lr

    widths = (200, 3200, 12800) if quick else (200, 400, 800, 1600, 3200, 6400, 12800)
    Kc = 200  # one (activation, width) cell of E1: 4 lambdas x 50 repetitions
    e1 = {}
    total = 0.0
    for act in ("linear", "relu", "tanh"):
        for p in widths:
            if act == "linear":
                X, y = stack(linear_teacher, range(Kc), n=50, d=150)
            else:
                X, y = stack(random_teacher, range(Kc), n=50, d=150, p=p, activation=act)
            X, y = X.float().to(dev), y.float().to(dev)
            ens = TwoLayerEnsemble(
                150, p, seeds=range(Kc), activation=act, dtype="float32", device="cuda"
            )
            steps = 200 if quick else 500
            info = {}

            def run(ens=ens, X=X, y=y, act=act, steps=steps, info=info):
                h = ens.fit(
                    X,
                    y,
                    lr=paper_lr(act),
                    lam=0.01,
                    steps=steps,
                    keep_weights=False,
                    metrics=("mse", "alignment"),
                )
                info["kernels"] = f"{h.path}+{h.kernels}"

            t_step = sync_time(lambda run=run: run(), 2) / steps
            min_steps = int(5000 * math.sqrt(p) // 14)
            secs = t_step * min_steps
            e1[f"{act}/{p}"] = {
                "ms_per_step_200_members": t_step * 1e3,
                "cell_s": secs,
                "kernels": info["kernels"],
            }
            print(
                f"E1 {act} p={p}: {t_step * 1e3:.3f} ms a step for 200 members "
                f"({info['kernels']}), cell {secs:.1f} s",
                flush=True,
            )
            total += secs * 200 / Kc  # the cell's 200 runs are one ensemble
    out["e1"] = e1
    out["e1_full_grid_s"] = total if not quick else None
    if not quick:
        print(f"E1 full grid at the paper's minimum lengths: {total / 60:.1f} min", flush=True)

    # ---------------------------------------------------------------- E3 timing
    L, reps, H, C, B = 3, 10, 1000, 10, 600
    g = torch.Generator(device="cpu").manual_seed(0)
    W = torch.randn(L * reps, H, 784, generator=g).to(dev)
    beta = torch.randn(L * reps, C, H, generator=g).to(dev)
    Bm = torch.randn(C, H, generator=g).to(dev)
    xs = torch.randn(B, 784, generator=g).to(dev)
    ys = torch.randint(0, 10, (B,), generator=g).to(dev)
    eye = torch.eye(C, device=dev)
    lams = torch.tensor([0.0, 0.1, 0.3] * reps, device=dev)[:, None, None]

    def e3_steps(n=50):
        nonlocal W, beta
        for _ in range(n):
            z = xs @ W.transpose(1, 2)
            h = torch.relu(z)
            logits = (h @ beta.transpose(1, 2)) / math.sqrt(H)
            e = (torch.softmax(logits, -1) - eye[ys]) / B
            eB = e @ Bm
            gb = (e.transpose(1, 2) @ h) / math.sqrt(H)
            gW = ((eB / math.sqrt(H)) * (z > 0)).transpose(1, 2) @ xs
            beta = beta - 1e-2 * (gb + lams * beta)
            W = W - 1e-2 * gW

    t_e3 = sync_time(e3_steps) / 50
    out["e3"] = {"ms_per_step_30_runs": t_e3 * 1e3, "projected_s_30000_steps": t_e3 * 30000}
    print(
        f"E3: {t_e3 * 1e3:.3f} ms a step for all 30 runs, 30,000 steps: "
        f"{t_e3 * 30000 / 60:.1f} min",
        flush=True,
    )
    print(json.dumps(out))
    return 0 if worst < 1e-10 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
