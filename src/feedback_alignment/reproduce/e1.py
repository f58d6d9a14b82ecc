"""E1: alignment cos(beta, b) against width p, one line per lambda, per activation.

One task per (activation, width): every repetition and lambda in one engine ensemble.
Within a repetition the lambdas share the data, the initial network and b (paired
comparisons; each repetition draws fresh ones, as in the paper).
"""

from __future__ import annotations

import time

import numpy as np

from ..twolayer.data import linear_teacher, random_teacher
from ..twolayer.engine import Plateau, TwoLayerEnsemble, paper_min_steps
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
    max_steps: int | None = None,
    min_base: int = 5000,
    check_every: int = 1000,
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
    # the paper's run length, as the authors' code runs it (docs/reproduce.md)
    stop = Plateau(paper_min_steps(p, min_base), check_every, 1e-3, max_steps, "authors")
    t0 = time.perf_counter()
    # only MSE and alignment are read, so the row-space path may drop A (a lighter step)
    h = ens.fit(
        X,
        y,
        rule="fa",
        lr=LR[activation],
        lam=lam,
        metrics=("mse", "alignment"),
        stop=stop,
        keep_weights=False,
    )
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
        "capped": int((h.stop_step >= max_steps).sum()) if max_steps else 0,
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
                "max_steps": s.max_steps,
                "min_base": s.min_base,
                "check_every": s.check_every,
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
        "capped": sum(r.get("capped", 0) for r in results),
        "diverged": [m for r in results for m in r["diverged"]],
    }


# ------------------------------------------------------------------ through fa sweep
def sweep_spec(profile: Profile, seed: int) -> dict:
    """E1 as a spec of ``feedback_alignment.experiments`` (docs/sweeps.md).

    Each activation is zipped with its task and its lambda set; widths form the grid.
    The sweep machinery derives its own seeds (repetition seeds shared across lambdas and
    widths), so its numbers differ from the built-in executors' for the same ``seed``.
    """
    s = profile.e1
    acts, tasks_, lams = [], [], []
    for act in profile.activations:
        for lam in LAMS[act]:
            acts.append(act)
            tasks_.append("linear" if act == "linear" else "teacher")
            lams.append(float(lam))
    fixed = {
        "n": N,
        "d": D,
        "rule": "fa",
        "lr": "paper",
        "metrics": ["mse", "alignment"],
        "dtype": profile.dtype,
        "record_every": 0,
    }
    if s.paper_rule:
        fixed.update(stop="paper", steps=0)
    else:  # smoke's scaled-down rule: the sweep's own plateau rule (checks from the minimum)
        fixed.update(stop="plateau", min_steps=s.min_base, check_every=s.check_every, steps=0)
    if s.max_steps:
        fixed["max_steps"] = int(s.max_steps)
    return {
        "study": {"name": f"reproduce-E1-{profile.name}", "repetitions": s.reps, "seed": seed},
        "fixed": fixed,
        "grid": {"p": list(s.widths)},
        "zip": [{"activation": acts, "task": tasks_, "lam": lams}],
    }


def run_sweep(profile: Profile, seed: int, store, executor) -> dict:
    """Run E1 through ``run_study`` on ``executor`` (closed after) into ``store`` and read
    the rows back."""
    from ..errors import ConfigError
    from ..experiments import Store, run_study

    s = profile.e1
    t0 = time.perf_counter()
    try:
        report = run_study(sweep_spec(profile, seed), str(store), executor=executor, progress=False)
    finally:
        executor.close()
    if not report.ok:
        raise ConfigError(f"E1 through fa sweep did not finish: {report.summary()}")
    rows, member_steps, diverged = [], 0, []
    with Store(str(store), create=False) as st:  # closed: its bytes are final (hashed next)
        stored = st.runs()
    for r in stored:
        if r["status"] == "diverged":
            diverged.append(f"E1 {r['activation']} p={r['p']} lam={r['lam']}: {r['reason']}")
        rows.append(
            {
                "activation": r["activation"],
                "lam": float(r["lam"]),
                "p": int(r["p"]),
                "rep": int(r["rep"]),
                "alignment": float(r["final.alignment"]),
                "steps": int(r["stop_step"]),
            }
        )
        member_steps += int(r["stop_step"])
    rows.sort(key=lambda x: (ACTIVATIONS.index(x["activation"]), x["lam"], x["p"], x["rep"]))
    capped = sum(r["steps"] >= s.max_steps for r in rows) if s.max_steps else 0
    return {
        "rows": rows,
        "compute_seconds": time.perf_counter() - t0,
        "member_steps": member_steps,
        "capped": int(capped),
        "diverged": diverged,
    }
