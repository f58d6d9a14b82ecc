"""``fa demo``: a one-minute tour of the two-layer engine and its theory.

Trains the paper's linear two-layer network (n = 50, d = 150) by feedback alignment with
and without weight decay at two widths, all members in one ensemble, and prints the final
MSE, the alignment cos(beta, b) and the convergence rate predicted by lambda_min(H_inf).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..outputs import add_out_flags

# the demo's directory holds summary.json and this manifest (its SHA-256), nothing else
MANIFEST = ".fa-demo.json"
TOOL = "fa demo"


def register(sub) -> None:
    p = sub.add_parser("demo", func=_run, help="train a small ensemble of two-layer FA networks")
    add_out_flags(p, "directory for summary.json (created)", what="summary.json")
    p.add_argument("--reps", default="4", help="repetitions per setting (default 4)")
    p.add_argument("--steps", default="3000", help="gradient steps (default 3000)")
    p.add_argument("--seed", default="0", help="base seed (default 0)")


def _run(args) -> int:
    from ..bounds import MAX_SEED, within
    from ..errors import check
    from ..outputs import (
        atomic_write_text,
        check_output_file,
        previous_output,
        sha256,
        write_manifest,
    )
    from . import theory
    from .data import linear_teacher, stack
    from .engine import TwoLayerEnsemble

    # every size checked before anything is drawn: the declared bounds (bounds.py)
    args.reps = within("--reps", args.reps, "demo_reps")
    args.steps = within("--steps", args.steps, "demo_steps")
    args.seed = within("--seed", args.seed, "seed")
    top = args.seed + 1000 + 2 * args.reps - 1  # the largest network seed the demo draws
    check(
        top <= MAX_SEED,
        f"--seed = {args.seed} is not accepted; accepted: an integer in [0, "
        f"{MAX_SEED - (top - args.seed)}] (the demo's networks take seeds up to --seed + "
        f"{top - args.seed}, and seeds end at 2^64 - 1)",
    )
    summary = None
    if args.out:  # checked before the demo runs: new, empty or the demo's own
        previous_output(args.out, MANIFEST, TOOL)
        summary = check_output_file(Path(args.out) / "summary.json", force=args.force)
    from .native import check_environment

    check_environment()
    lams, lr, reps = [0.0, 0.3], 1e-2, args.reps
    data_seeds = [args.seed + r for r in range(reps)] * len(lams)
    X, y = stack(linear_teacher, data_seeds, n=50, d=150)
    lmin = theory.lambda_min(theory.h_inf(X, "linear")).numpy()
    rate = np.asarray(theory.predicted_rate(lmin, lr, "mse", 50))
    rows = []
    print(f"{'p':>6} {'lambda':>6} {'final MSE':>10} {'alignment':>15} {'path':>10} {'s':>6}")
    for p in (200, 3200):
        ens = TwoLayerEnsemble(
            150,
            p,
            seeds=range(1000 + args.seed, 1000 + args.seed + len(data_seeds)),
            activation="linear",
        )
        h = ens.fit(
            X,
            y,
            rule="fa",
            lr=lr,
            lam=np.repeat(lams, reps),
            steps=args.steps,
            metrics=("mse", "alignment"),
        )
        for i, lam in enumerate(lams):
            sl = slice(i * reps, (i + 1) * reps)
            mse, al = h.final["mse"][sl], h.final["alignment"][sl]
            rows.append(
                {
                    "p": p,
                    "lam": lam,
                    "mse": float(mse.mean()),
                    "alignment_mean": float(al.mean()),
                    "alignment_sd": float(al.std()),
                    "path": h.path,
                    "seconds": h.seconds,
                }
            )
            print(
                f"{p:>6} {lam:>6.2f} {mse.mean():>10.2e} {al.mean():>8.3f} +- {al.std():.3f}"
                f" {h.path:>10} {h.seconds:>6.1f}"
            )
    print(
        f"predicted loss rate per step from lambda_min(H_inf): {rate.mean():.4f} "
        f"(loss / 1e8 in about {np.log(1e8) / rate.mean():.0f} steps at lambda = 0)"
    )
    print("lambda = 0: alignment falls as p grows; lambda > 0 keeps it away from zero.")
    if summary is not None:
        data = {"rows": rows, "predicted_rate": float(rate.mean())}
        atomic_write_text(summary, json.dumps(data, indent=1))
        write_manifest(summary.parent, MANIFEST, TOOL, {"summary.json": sha256(summary)})
        print(f"wrote {summary}")
    return 0
