"""E1: alignment cos(beta, b) against width p, one line per lambda, per activation.

One task per (activation, width): every repetition and lambda in one engine ensemble.
Within a repetition the lambdas share the data, the initial network and b (paired
comparisons; each repetition draws fresh ones, as in the paper).
"""

from __future__ import annotations

import time

import numpy as np

from ..activations import get_activation
from ..twolayer.data import task_data
from ..twolayer.engine import Plateau, TwoLayerEnsemble, paper_min_steps
from ..twolayer.monitor import PAPER_CHECK_EVERY, PAPER_MIN_BASE, PAPER_TOL
from .profiles import ACTIVATIONS, LAMS, D, N, Profile, seed_for
from .work import rep_packs

COLUMNS = ("activation", "lam", "p", "rep", "alignment", "steps")
_EXP = 1


def data_for(activation: str, p: int, seed: int):
    """The paper's task for one repetition: linear teacher or same-width random teacher."""
    task = "linear" if get_activation(activation).identity else "teacher"
    return task_data(task, N, D, p, activation, seed)


def rep_inputs(activation: str, p: int, reps: list[int], base_seed: int, key: tuple, copies: int):
    """(X, y, seeds) of an ensemble of ``copies`` members per repetition: each repetition's
    data and network seed drawn from (base seed, ``key`` = (experiment, activation index),
    p, rep), shared by its copies (paired comparisons); fresh for every repetition."""
    import torch

    net_seeds = [seed_for(base_seed, *key, p, r, 0) for r in reps]
    data = [data_for(activation, p, seed_for(base_seed, *key, p, r, 1)) for r in reps]
    X = torch.stack([x for x, _ in data for _ in range(copies)])
    y = torch.stack([t for _, t in data for _ in range(copies)])
    return X, y, [s for s in net_seeds for _ in range(copies)]


def run_cell(
    activation: str,
    p: int,
    reps: list[int],
    base_seed: int,
    dtype: str,
    max_steps: int | None = None,
    min_base: int = PAPER_MIN_BASE,
    check_every: int = PAPER_CHECK_EVERY,
    checkpoint=None,
) -> dict:
    """Train all repetitions x lambdas of one (activation, p); return the rows and timing.
    ``checkpoint`` (:mod:`.checkpoints`): the fit resumes from it and saves to it."""
    # the paper's run length, as the authors' code runs it (docs/reproduce.md)
    stop = Plateau(paper_min_steps(p, min_base), check_every, PAPER_TOL, max_steps, "authors")
    cell = (activation, p, reps, base_seed, (_EXP, ACTIVATIONS.index(activation)), dtype)
    return fit_cell(*cell, "lam", LAMS[activation], stop, checkpoint, lr="paper")


def fit_cell(
    activation, p, reps, base_seed, key, dtype, name, values, stop, checkpoint, **options
) -> dict:
    """Fit one (activation, p) cell of E1 or E5: a member per repetition and per value of
    the fit option ``name`` (``values``), the copies of a repetition sharing its data and
    network (:func:`rep_inputs`, ``key``); the stored runs, the seconds and the step the
    fit resumed at (``checkpoint``, :mod:`.checkpoints`). ``options`` go to the fit."""
    X, y, seeds = rep_inputs(activation, p, reps, base_seed, key, len(values))
    per_member = np.tile(np.asarray(values, dtype=np.float64), len(reps))
    ens = TwoLayerEnsemble(D, p, seeds=seeds, activation=activation, dtype=dtype)
    t0 = time.perf_counter()
    # only MSE and alignment are read, so the row-space path may drop A (a lighter step)
    h = ens.fit(
        X,
        y,
        **{name: per_member},
        **options,
        metrics=("mse", "alignment"),
        stop=stop,
        keep_weights=False,
        checkpoint=checkpoint,
    )
    seconds = time.perf_counter() - t0
    members = stored_members(h, len(seeds), lambda k: {"alignment": float(h.final["alignment"][k])})
    return {"members": members, "seconds": seconds, "resumed_at": h.extra.get("resumed_at", 0)}


def stored_members(h, count: int, finals, series=lambda k: {}) -> list[dict]:
    """The stored run of each of a fit's ``count`` members: its status (done or diverged,
    with the reason), stop step, path, ``finals(k)`` and ``series(k)``."""
    diverged = {int(k): h.messages[k] for k in h.diverged}
    return [
        {
            "status": "diverged" if k in diverged else "done",
            "reason": diverged.get(k, ""),
            "stop_step": int(h.stop_step[k]),
            "path": h.path,
            "finals": finals(k),
            "series": series(k),
        }
        for k in range(count)
    ]


def member_keys(kw: dict) -> list[dict]:
    """The runs of one task, in the order :func:`run_cell` returns them."""
    lams = LAMS[kw["activation"]]
    return [{"lam": float(lam), "rep": r} for r in kw["reps"] for lam in lams]


def tasks(profile: Profile, seed: int) -> list:
    s = profile.e1
    extra = {"min_base": s.min_base, "check_every": s.check_every}
    return cell_tasks(run_cell, profile, s, profile.activations, LAMS, seed, extra)


def cell_tasks(fn, profile: Profile, s, activations, lines: dict, seed: int, extra: dict) -> list:
    """One task ``fn(**kwargs)`` per activation, width (widest first, so a pool's
    stragglers are the short tasks) and pack of whole repetitions of settings ``s`` (its
    widths, reps, max_steps), each repetition ``len(lines[act])`` members."""
    return [
        (
            fn,
            {
                "activation": act,
                "p": p,
                "reps": reps,
                "base_seed": seed,
                "dtype": profile.dtype,
                "max_steps": s.max_steps,
                **extra,
            },
        )
        for act in activations
        for p in sorted(s.widths, reverse=True)
        for reps in rep_packs(s.reps, len(lines[act]), p, profile.dtype)
    ]


def from_store(runs: list[dict], max_steps: int | None) -> dict:
    """E1's rows and totals from its stored runs (``Store.runs`` dicts)."""
    return rows_from_store(runs, max_steps, "E1", "lam", ACTIVATIONS)


def rows_from_store(runs: list[dict], max_steps, exp: str, line: str, activations) -> dict:
    """An alignment-vs-width experiment's rows (one per run: activation, ``line`` (the
    quantity each line of its figure holds fixed), p, rep, alignment, steps) and totals."""
    rows = [
        {
            "activation": r["activation"],
            line: float(r[line]),
            "p": int(r["p"]),
            "rep": int(r["rep"]),
            "alignment": float(r["final.alignment"]),
            "steps": int(r["stop_step"]),
        }
        for r in runs
    ]
    rows.sort(key=lambda x: (activations.index(x["activation"]), x[line], x["p"], x["rep"]))
    return {
        "rows": rows,
        "member_steps": sum(r["steps"] for r in rows),
        "capped": sum(r["steps"] >= max_steps for r in rows) if max_steps else 0,
        "diverged": [
            f"{exp} {r['activation']} p={r['p']} {line}={r[line]} rep {r['rep']}: {r['reason']}"
            for r in runs
            if r["status"] == "diverged"
        ],
    }
