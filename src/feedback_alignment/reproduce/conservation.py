"""E2's network seen through the conservation law: where the alignment's numerator comes from.

For the first repetition of E2 (same data, network and b) at E2's width and length, linear
and ReLU, lambda = 0 and one lambda > 0: the alignment cos(beta, b) against step, and its
numerator b.beta(t) split into the initial term, the W-norm growth, the step-size
correction and the weight-decay term (:mod:`..twolayer.conservation`). Always float64: the
law is exact, and the split is checked to add up to 1e-10 of the numerator's change.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..outputs import atomic_path
from ..twolayer.conservation import TERMS, decompose
from ..twolayer.engine import TwoLayerEnsemble
from .e1 import data_for
from .figures import conservation_figure
from .profiles import ACTIVATIONS, LAMS, LR, D, Profile, seed_for

ACTS = ("linear", "relu")  # psi(z) = z psi'(z): the law is exact for these
DRAWN = tuple(t for t in TERMS if t != "first_layer_decay")  # E2 has no first-layer decay
COLUMNS = ("activation", "lam", "step", "alignment", "b_beta", *DRAWN)
_EXP = 2  # E2's seeds: the same first repetition as E2


def run_activation(activation: str, p: int, steps: int, base_seed: int) -> dict:
    """Decomposition for lambda = 0 and LAMS[activation][2] on E2's first repetition."""
    lams = (0.0, LAMS[activation][2])
    a = ACTIVATIONS.index(activation)
    X, y = data_for(activation, p, seed_for(base_seed, _EXP, a, p, 0, 1))
    seed = seed_for(base_seed, _EXP, a, p, 0, 0)
    ens = TwoLayerEnsemble(D, p, seeds=[seed, seed], activation=activation, dtype="float64")
    dec = decompose(
        ens, X, y, steps=steps, lr=LR[activation], lam=list(lams), record_every=max(1, steps // 200)
    )
    rows = []
    for k, lam in enumerate(lams):
        for j, s in enumerate(dec.steps):
            rows.append(
                {
                    "activation": activation,
                    "lam": lam,
                    "step": int(s),
                    "alignment": float(dec.alignment[j, k]),
                    "b_beta": float(dec.b_beta[j, k]),
                    **{t: float(dec.terms[t][j, k]) for t in DRAWN},
                }
            )
    change = dec.b_beta[-1, 0] - dec.b_beta[0, 0]
    explained = dec.terms["w_growth"][-1, 0] + dec.terms["step_correction"][-1, 0]
    return {
        "rows": rows,
        "lams": lams,
        "lam0_gap": float(abs(change - explained) / abs(change)),
        "seconds": dec.history.seconds,
    }


def run(profile: Profile, seed: int, directory: Path, say=print) -> tuple[list[str], tuple]:
    """Run, write ``conservation.csv`` and the figure into ``directory``; return the files
    written (relative to its parent) and the report's (figure, caption)."""
    p, steps = profile.e2.p, profile.e2.steps
    results = {}
    for act in ACTS:
        say(f"E2 conservation: {act}, p = {p}, {steps} steps")
        results[act] = run_activation(act, p, steps, seed)
    with atomic_path(directory / "conservation.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for res in results.values():
            w.writerows(res["rows"])
    conservation_figure(results, directory / "conservation", p)
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
