"""Same seeds, same numbers: every recorded metric of a fixed set of two-layer fits, saved
before a change to the engine and compared after it (float64, 1e-12).

    python benchmarks/equality.py --save before.npz      # on the old code
    python benchmarks/equality.py --compare before.npz   # on the new code

The cases cover every path (explicit, rowspace, linear_fa), kernel choice (torch ops, the
native C++ kernels), rule (fa, bp, mixed), stopping rule (fixed steps, Plateau after_min,
the authors' Plateau), lambda schedule, weight decay, dropout and shared or per-member
data, with every metric recorded. It is a check for refactors, not a timed test: float64 results
depend on the machine's BLAS, so a file saved on one CPU is compared on the same CPU.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import warnings

import numpy as np
import torch

from feedback_alignment.twolayer.engine import (
    CONSERVATION_METRICS,
    METRICS,
    Plateau,
    TwoLayerEnsemble,
)
from feedback_alignment.twolayer.schedules import ExpDecay

K, D, N, P = 4, 12, 8, 24


def _data(per_member: bool):
    g = torch.Generator().manual_seed(123)
    shape = (K, N, D) if per_member else (N, D)
    X = torch.randn(*shape, generator=g, dtype=torch.float64)
    X = X / X.norm(dim=-1, keepdim=True)
    y = torch.randn(K, N, generator=g, dtype=torch.float64)
    return X, y


def _case(activation, path, rule, kernels, per_member, **over) -> dict:
    """One case: 300 steps, four members' lambdas, no schedule, unless ``over`` says."""
    mixed = ["fa", "bp", "fa", "bp"]
    case = {
        "activation": activation,
        "path": path,
        "rule": mixed if rule == "mixed" else rule,
        "kernels": kernels,
        "per_member": per_member,
        "stop": ("steps", 300),
        "lam": [0.0, 0.01, 0.1, 0.0],
        "w_decay": [0.0, 0.001, 0.0, 0.01],
        "lam_schedule": None,
    }
    return case | over


def _cases():
    for act in ("linear", "relu", "tanh", "sigmoid"):
        for path in ("explicit", "rowspace", "linear_fa"):
            for rule in ("fa", "bp", "mixed"):
                if path == "linear_fa" and (act != "linear" or rule != "fa"):
                    continue
                kernels = ["torch"]
                if path == "rowspace" and act in ("relu", "tanh"):
                    kernels.append("native")
                for kern in kernels:
                    for per_member in (False, True):
                        yield _case(
                            act, path, rule, kern, per_member,
                            w_decay=0.0 if rule == "bp" else [0.0, 0.001, 0.0, 0.01],
                            lam_schedule=("exp", 0.999) if rule == "mixed" else None,
                        )  # fmt: skip
    # stopping rules: members stop at different steps, so the final record comes off a
    # recording step (the all-stopped record of every member's state)
    for act in ("relu", "tanh"):
        for rule in ("fa", "bp", "mixed"):
            for stop in (("after_min", 200), ("authors", 1500)):
                yield _case(act, "rowspace", rule, "torch", True, stop=stop, w_decay=0.0)
    # added later (the cases above keep their numbers): the native kernels of linear and
    # sigmoid, and dropout on every path and kernel that takes it
    for act in ("linear", "sigmoid"):
        for rule in ("fa", "bp", "mixed"):
            for per_member in (False, True):
                yield _case(act, "rowspace", rule, "native", per_member)
    for act in ("linear", "relu", "tanh", "sigmoid"):
        for path, kern in (("explicit", "torch"), ("rowspace", "torch"), ("rowspace", "native")):
            yield _case(act, path, "mixed", kern, True, dropout=[0.0, 0.3, 0.5, 0.7])


def _kernel_args(fit, kernels: str) -> dict:
    """The fit keyword that picks the kernels: ``kernels=`` now, ``fuse=`` before it."""
    if "kernels" in inspect.signature(fit).parameters:
        return {"kernels": kernels}
    return {"fuse": kernels == "native"}


def _run(case: dict) -> dict[str, np.ndarray]:
    X, y = _data(case["per_member"])
    ens = TwoLayerEnsemble(D, P, seeds=[11, 12, 13, 14], activation=case["activation"])
    kind, value = case["stop"]
    if kind == "steps":
        timing = {"steps": value, "record_every": 50}
    elif kind == "after_min":
        timing = {"stop": Plateau(value, 100, 1e-4, max_steps=5000), "record_every": 250}
    else:
        timing = {"stop": Plateau(value, 1000, 1e-3, 20000, "authors"), "record_every": 700}
    lr = 0.2 if case["activation"] in ("tanh", "sigmoid") else 0.05
    schedule = ExpDecay(case["lam_schedule"][1]) if case["lam_schedule"] else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = ens.fit(
            X,
            y,
            rule=case["rule"],
            lr=lr,
            lam=case["lam"],
            lam_schedule=schedule,
            w_decay=case["w_decay"],
            metrics=METRICS + CONSERVATION_METRICS,
            path=case["path"],
            dropout=case.get("dropout", 0.0),
            **timing,
            **_kernel_args(ens.fit, case["kernels"]),
        )
    want = "native" if case["kernels"] == "native" else "torch"
    if h.kernels != want:
        sys.exit(f"case {case}: the kernels that ran were {h.kernels!r}, not {want!r}")
    out = {f"metric/{m}": v for m, v in h.metrics.items()}
    out["steps"] = h.steps.astype(np.float64)
    out["stop_step"] = h.stop_step.astype(np.float64)
    out["beta"] = ens.beta.numpy()
    out["W"] = ens.W.numpy()
    return out


def _key(i: int, case: dict) -> str:
    rule = case["rule"] if isinstance(case["rule"], str) else "mixed"
    return (
        f"{i:03d}:{case['activation']}/{case['path']}/{rule}/{case['kernels']}/"
        f"{'perX' if case['per_member'] else 'sharedX'}/{case['stop'][0]}"
        + ("/dropout" if "dropout" in case else "")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", metavar="FILE")
    group.add_argument("--compare", metavar="FILE")
    ap.add_argument("--tol", type=float, default=1e-12)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    results = {}
    for i, case in enumerate(_cases()):
        for name, arr in _run(case).items():
            results[f"{_key(i, case)}|{name}"] = arr
    if args.save:
        np.savez_compressed(args.save, **results)
        print(f"saved {len(results)} arrays from {i + 1} cases to {args.save}")
        return
    before = np.load(args.compare)
    worst, bad = 0.0, []
    missing = sorted(set(before.files) ^ set(results))
    for name in sorted(set(before.files) & set(results)):
        a, b = before[name], results[name]
        if a.shape != b.shape:
            bad.append(f"{name}: shape {a.shape} before, {b.shape} after")
            continue
        both_nan = np.isnan(a) & np.isnan(b)
        diff = np.where(both_nan, 0.0, np.abs(a - b) / np.maximum(1.0, np.abs(a)))
        d = float(np.nanmax(diff, initial=0.0)) if diff.size else 0.0
        if np.isnan(diff).any():
            d = float("inf")
        worst = max(worst, d)
        if d > args.tol:
            bad.append(f"{name}: differs by {d:.3g}")
    print(f"{len(results)} arrays from {i + 1} cases; largest difference {worst:.3g}")
    for line in missing:
        print(f"only on one side: {line}")
    for line in bad:
        print(line)
    sys.exit(1 if bad or missing else 0)


if __name__ == "__main__":
    main()
