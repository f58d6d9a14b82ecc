"""E1: alignment cos(beta, b) against width p, one line per lambda, per activation.

One task per (activation, width): every repetition and lambda in one engine ensemble.
Within a repetition the lambdas share the data, the initial network and b (paired
comparisons; each repetition draws fresh ones, as in the paper).
"""

from __future__ import annotations

import time

import numpy as np

from ..twolayer.data import linear_teacher, random_teacher
from ..twolayer.engine import Plateau, TwoLayerEnsemble
from .profiles import ACTIVATIONS, LAMS, LR, D, N, Profile, seed_for

COLUMNS = ("activation", "lam", "p", "rep", "alignment", "steps")
_EXP = 1


def data_for(activation: str, p: int, seed: int):
    """The paper's task for one repetition: linear teacher or same-width random teacher."""
    if activation == "linear":
        return linear_teacher(N, D, seed=seed)
    return random_teacher(N, D, p, activation=activation, seed=seed)


def run_cell(
    activation: str,
    p: int,
    reps: int,
    base_seed: int,
    dtype: str,
    stop: str,
    min_steps: int,
    max_steps: int | None,
) -> dict:
    """Train all repetitions x lambdas of one (activation, p); return the rows and timing."""
    import torch

    lams = LAMS[activation]
    a = ACTIVATIONS.index(activation)
    net_seeds = [seed_for(base_seed, _EXP, a, p, r, 0) for r in range(reps)]
    data = [data_for(activation, p, seed_for(base_seed, _EXP, a, p, r, 1)) for r in range(reps)]
    L = len(lams)
    X = torch.stack([data[r][0] for r in range(reps) for _ in lams])
    y = torch.stack([data[r][1] for r in range(reps) for _ in lams])
    seeds = [net_seeds[r] for r in range(reps) for _ in lams]
    lam = np.tile(np.asarray(lams, dtype=np.float64), reps)
    ens = TwoLayerEnsemble(D, p, seeds=seeds, activation=activation, dtype=dtype)
    if stop == "plateau":
        kw = {"stop": Plateau(round(min_steps * (p / 200) ** 0.5), 1000, 1e-3, max_steps)}
    else:
        kw = {"steps": int(min_steps)}
    t0 = time.perf_counter()
    h = ens.fit(X, y, rule="fa", lr=LR[activation], lam=lam, metrics=("mse", "alignment"), **kw)
    seconds = time.perf_counter() - t0
    rows = []
    for k in range(reps * L):
        r, i = divmod(k, L)
        rows.append(
            {
                "activation": activation,
                "lam": float(lams[i]),
                "p": int(p),
                "rep": int(r),
                "alignment": float(h.final["alignment"][k]),
                "steps": int(h.stop_step[k]),
            }
        )
    return {
        "rows": rows,
        "seconds": seconds,
        "member_steps": int(h.stop_step.sum()),
        "diverged": [h.messages[k] for k in h.diverged],
        "path": h.path,
    }


def tasks(profile: Profile, seed: int) -> list:
    s = profile.e1
    return [
        (
            run_cell,
            {
                "activation": act,
                "p": p,
                "reps": s.reps,
                "base_seed": seed,
                "dtype": profile.dtype,
                "stop": s.stop,
                "min_steps": s.min_steps,
                "max_steps": s.max_steps,
            },
        )
        for act in profile.activations
        # widest first so a pool's stragglers are the short tasks
        for p in sorted(s.widths, reverse=True)
    ]


def collect(results: list[dict]) -> dict:
    rows = [row for r in results for row in r["rows"]]
    rows.sort(key=lambda x: (ACTIVATIONS.index(x["activation"]), x["lam"], x["p"], x["rep"]))
    return {
        "rows": rows,
        "compute_seconds": sum(r["seconds"] for r in results),
        "member_steps": sum(r["member_steps"] for r in results),
        "diverged": [m for r in results for m in r["diverged"]],
    }
