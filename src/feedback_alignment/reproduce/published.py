"""The paper's published E1 values and the per-cell comparison with a reproduction.

The values ship as package data (``data/paper_e1_published.json``: mean and standard
deviation of the final alignment cos(beta, b) over the authors' 50 repetitions, for every
activation, lambda and width, with its provenance line). A reproduced cell agrees with the
published one when

    |ours - paper| <= max(AGREE_FLOOR, AGREE_Z * sqrt(sd^2 / reps + sd^2 / PAPER_REPS))

with ``sd`` the paper's standard deviation and ``reps`` our repetitions: the difference of
two means of samples with that spread, ``AGREE_Z`` standard errors wide, and never narrower
than ``AGREE_FLOOR`` (a cell with a tiny spread still allows for the paper's rounding and
run-to-run differences in the data draws).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

PAPER_REPS = 50  # the authors' repetitions per cell
AGREE_FLOOR = 0.08  # smallest tolerance on |ours - paper|
AGREE_Z = 3.0  # tolerance in standard errors of the difference
AGREE_RULE = (
    f"|ours - paper| <= max({AGREE_FLOOR:g}, {AGREE_Z:g} sqrt(sd^2/reps + sd^2/{PAPER_REPS})), "
    "sd the paper's standard deviation, reps ours"
)


@lru_cache(maxsize=1)
def load() -> dict:
    """The published values: ``{"what": provenance, "p": [...], "cells": {(act, lam, p):
    (mean, sd)}}``."""
    text = resources.files(__package__).joinpath("data/paper_e1_published.json").read_text()
    raw = json.loads(text)
    cells = {}
    for act, by_lam in raw["activations"].items():
        for lam, vals in by_lam.items():
            for p, v in zip(raw["p"], vals, strict=True):
                cells[(act, float(lam), int(p))] = (float(v["mean"]), float(v["sd"]))
    return {"what": raw["what"], "p": tuple(raw["p"]), "cells": cells}


def provenance() -> str:
    return load()["what"]


@dataclass(frozen=True)
class Cell:
    activation: str
    lam: float
    p: int
    reps: int
    mean: float  # ours
    se: float  # ours, standard error of the mean
    paper_mean: float
    paper_sd: float
    diff: float  # ours - paper
    z: float  # diff in standard errors of the difference (:func:`_diff_se`)
    tolerance: float
    agree: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _diff_se(sd: float, reps: int) -> float:
    """Standard error of (our mean - the paper's mean), both samples of spread ``sd``."""
    return math.sqrt(sd * sd / reps + sd * sd / PAPER_REPS)


def tolerance(sd: float, reps: int) -> float:
    """The largest |ours - paper| that still agrees (see the module docstring)."""
    return max(AGREE_FLOOR, AGREE_Z * _diff_se(sd, reps))


def compare(rows) -> list[Cell]:
    """One :class:`Cell` per (activation, lambda, p) of ``rows`` that the paper reports."""
    pub = load()["cells"]
    by: dict[tuple, list[float]] = {}
    for r in rows:
        by.setdefault((r["activation"], float(r["lam"]), int(r["p"])), []).append(
            float(r["alignment"])
        )
    out = []
    for key in sorted(by, key=lambda k: (k[0], k[1], k[2])):
        if key not in pub:
            continue
        x = np.asarray(by[key])
        reps = x.size
        mean = float(x.mean())
        se = float(x.std(ddof=1) / math.sqrt(reps)) if reps > 1 else float("nan")
        pm, psd = pub[key]
        diff = mean - pm
        scale = _diff_se(psd, reps)
        tol = tolerance(psd, reps)
        out.append(
            Cell(
                activation=key[0],
                lam=key[1],
                p=key[2],
                reps=reps,
                mean=mean,
                se=se,
                paper_mean=pm,
                paper_sd=psd,
                diff=diff,
                z=diff / scale if scale > 0 else math.copysign(math.inf, diff),
                tolerance=tol,
                agree=abs(diff) <= tol,
            )
        )
    return out


def headline(cells: list[Cell]) -> str:
    if not cells:
        return "E1: no cell of this profile is among the published ones (no comparison)"
    n = sum(c.agree for c in cells)
    return f"E1: {n} of {len(cells)} cells agree with the published values"


# E4, the authors' three-layer MNIST network: their single run (15,000 steps), lambda 0 /
# 0.1 / 0.3, from the output of their public simulation code as issue 21 quotes it. They
# recorded the output layer only (their second-layer columns repeat the third layer's).
E4_AUTHORS = {
    "test_accuracy_percent": [83.68, 85.43, 80.09],  # at the end of training
    "fc3_alignment_last1000": [0.047, 0.900, 0.828],  # error signals, mean of the last 1000 steps
    "fc3_weight_alignment_final": [0.035, 0.869, 0.817],  # cos(B, W) of the output layer
}
E4_PROVENANCE = (
    "the authors' public simulation code, its three-layer MNIST run (one run, 15,000 steps, "
    "lambda 0 / 0.1 / 0.3 on layers 2 and 3); values as quoted in this project's issue 21"
)
