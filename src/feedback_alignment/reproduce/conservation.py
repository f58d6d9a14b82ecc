"""E2's network seen through the conservation law: where the alignment's numerator comes from.

For the first repetition of E2 (same data, network and b) at E2's width and length, linear
and ReLU, lambda = 0 and one lambda > 0: the alignment cos(beta, b) against step, and its
numerator b.beta(t) split into the initial term, the W-norm growth, the step-size
correction and the weight-decay term (:mod:`..twolayer.conservation`). Always float64: the
law is exact, and the split is checked to add up to 1e-10 of the numerator's change.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..twolayer.conservation import TERMS, decompose
from ..twolayer.engine import TwoLayerEnsemble
from .e1 import data_for
from .figures import conservation_figure
from .profiles import ACTIVATIONS, LAMS, LR, D, Profile, seed_for

ACTS = ("linear", "relu")  # psi(z) = z psi'(z): the law is exact for these
DRAWN = tuple(t for t in TERMS if t != "first_layer_decay")  # E2 has no first-layer decay
COLUMNS = ("activation", "lam", "step", "alignment", "b_beta", *DRAWN)
_EXP = 2  # E2's seeds: the same first repetition as E2


def run_activation(activation: str, p: int, steps: int, base_seed: int, checkpoint=None) -> dict:
    """Decomposition for lambda = 0 and LAMS[activation][2] on E2's first repetition;
    ``checkpoint`` (:mod:`.checkpoints`): the fit resumes from it and saves to it."""
    lams = (0.0, LAMS[activation][2])
    a = ACTIVATIONS.index(activation)
    X, y = data_for(activation, p, seed_for(base_seed, _EXP, a, p, 0, 1))
    seed = seed_for(base_seed, _EXP, a, p, 0, 0)
    ens = TwoLayerEnsemble(D, p, seeds=[seed, seed], activation=activation, dtype="float64")
    dec = decompose(
        ens,
        X,
        y,
        steps=steps,
        lr=LR[activation],
        lam=list(lams),
        record_every=max(1, steps // 200),
        checkpoint=checkpoint,
    )
    change = dec.b_beta[-1, 0] - dec.b_beta[0, 0]
    explained = dec.terms["w_growth"][-1, 0] + dec.terms["step_correction"][-1, 0]
    gap = float(abs(change - explained) / abs(change))
    steps_rec = np.asarray(dec.steps, dtype=np.int64)
    members = [
        {
            "status": "done",
            "reason": "",
            "stop_step": int(steps),
            "path": dec.history.path,
            "finals": {"lam0_gap": gap},
            "series": {
                name: (steps_rec, np.asarray(values[:, k], dtype=np.float64))
                for name, values in (
                    ("alignment", dec.alignment),
                    ("b_beta", dec.b_beta),
                    *((t, dec.terms[t]) for t in DRAWN),
                )
            },
        }
        for k in range(len(lams))
    ]
    resumed_at = dec.history.extra.get("resumed_at", 0)
    return {"members": members, "seconds": dec.history.seconds, "resumed_at": resumed_at}


def member_keys(kw: dict) -> list[dict]:
    """The runs of one task, in the order :func:`run_activation` returns them."""
    return [{"lam": float(lam)} for lam in (0.0, LAMS[kw["activation"]][2])]


def tasks(profile: Profile, seed: int) -> list:
    return [
        (
            run_activation,
            {"activation": act, "p": profile.e2.p, "steps": profile.e2.steps, "base_seed": seed},
        )
        for act in ACTS
    ]


def figure_data(activation: str, members: list[dict]) -> dict:
    """{"rows", "lams", "lam0_gap"} of one activation, as the figure and CSV take it, from
    its members (what :func:`run_activation` returns, or the same read from the store)."""
    lams = tuple(m["lam"] for m in members)
    rows = []
    for lam, m in zip(lams, members, strict=True):
        steps = m["series"]["alignment"][0].tolist()
        cols = ("alignment", "b_beta", *DRAWN)
        for j, s in enumerate(steps):
            rows.append(
                {
                    "activation": activation,
                    "lam": float(lam),
                    "step": int(s),
                    **{c: float(m["series"][c][1][j]) for c in cols},
                }
            )
    return {"rows": rows, "lams": lams, "lam0_gap": float(members[0]["finals"]["lam0_gap"])}


def from_store(runs: list[dict], series) -> dict:
    """{activation: figure data} from the stored runs; ``series(run_id, metric)`` reads one."""
    out: dict = {}
    for act in ACTS:
        mine = sorted((r for r in runs if r["activation"] == act), key=lambda r: r["lam"])
        if mine:
            members = [
                {
                    "lam": float(r["lam"]),
                    "finals": {"lam0_gap": r["final.lam0_gap"]},
                    "series": {c: series(r["run_id"], c) for c in ("alignment", "b_beta", *DRAWN)},
                }
                for r in mine
            ]
            out[act] = figure_data(act, members)
    return out


def write(results: dict, directory: Path, p: int, write_bytes) -> tuple[list[str], tuple]:
    """Write ``conservation.csv`` and the figure into ``directory`` through
    ``write_bytes(path, bytes)``; return the files written (relative to its parent) and the
    report's (figure, caption)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\r\n")
    w.writeheader()
    for res in results.values():
        w.writerows(res["rows"])
    write_bytes(directory / "conservation.csv", buf.getvalue().encode())
    conservation_figure(results, directory / "conservation", p, write_bytes)
    gaps = ", ".join(f"{a} {r['lam0_gap']:.1e}" for a, r in results.items())
    caption = (
        f"where the alignment's numerator comes from (E2's first repetition, p = {p}, "
        "float64). Top: cos(beta, b) for lambda = 0 and one lambda > 0. Below: b.beta(t) and "
        "the terms of the exact conservation law that add up to it: the initial value, the "
        "growth 1/2(|W_t|^2 - |W_0|^2) of the first layer's norm, the step-size correction "
        "-sum 1/2|dW_s|^2 and the weight-decay term -sum lr lam b.beta(s) (docs/theory.md). "
        "Without weight decay the W-growth term pays for the whole change of b.beta up to the "
        f"step-size correction (relative gap: {gaps}). b.beta is only the numerator: lambda "
        "also shrinks |beta|, the denominator."
    )
    name = directory.name
    files = [f"{name}/conservation.csv", f"{name}/conservation.png", f"{name}/conservation.pdf"]
    return files, (f"{name}/conservation.png", caption)
