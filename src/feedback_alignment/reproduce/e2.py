"""E2: MSE against step at one width, with the linearised theory overlaid.

One task per activation: every repetition and lambda in one ensemble, trained a fixed
number of full-batch steps. The theory comes from each member's kernels at
initialisation, K = H(0) + G(0) (``twolayer.theory``): the predicted loss curve, the
settle level for constant lambda and lambda_min with its predicted rate.
"""

from __future__ import annotations

import time

import numpy as np

from ..twolayer import theory
from ..twolayer.engine import TwoLayerEnsemble
from .e1 import data_for, stored_members
from .profiles import ACTIVATIONS, LAMS, LR, D, Profile, seed_for
from .work import rep_packs

COLUMNS = ("activation", "lam", "rep", "step", "mse")
PRED_COLUMNS = ("activation", "lam", "rep", "step", "predicted_mse")
KERNEL_COLUMNS = (
    "activation",
    "lam",
    "rep",
    "lambda_min",
    "predicted_rate",
    "settle_mse",
    "measured_final_mse",
)
_EXP = 2


def run_activation(
    activation: str,
    p: int,
    steps: int,
    reps: list[int],
    record_steps: list[int],
    base_seed: int,
    dtype: str,
    checkpoint=None,
) -> dict:
    """Train one activation's repetitions x lambdas; ``checkpoint`` (:mod:`.checkpoints`):
    the fit resumes from it and saves to it (the theory is recomputed, it is quick)."""
    import torch

    lams = LAMS[activation]
    L = len(lams)
    a = ACTIVATIONS.index(activation)
    net_seeds = [seed_for(base_seed, _EXP, a, p, r, 0) for r in reps]
    data = [data_for(activation, p, seed_for(base_seed, _EXP, a, p, r, 1)) for r in reps]
    X = torch.stack([x for x, _ in data for _ in lams])
    y = torch.stack([t for _, t in data for _ in lams])
    seeds = [s for s in net_seeds for _ in lams]
    lam = np.tile(np.asarray(lams, dtype=np.float64), len(reps))
    lr = LR[activation]
    ens = TwoLayerEnsemble(D, p, seeds=seeds, activation=activation, dtype=dtype)

    # theory from the kernels at initialisation (float64 whatever the run's dtype)
    t0 = time.perf_counter()
    f64 = torch.float64
    W0, beta0, b = ens.W0.to(f64), ens.beta0.to(f64), ens.b.to(f64)
    H, G = theory.empirical_kernels(X, W0, beta0, b, activation)
    Kern = H + G
    u0 = torch.einsum("kp,kpn->kn", beta0, ens.activation(W0 @ X.transpose(-1, -2))) / p**0.5
    lmin = theory.lambda_min(Kern).numpy()
    rate = np.asarray(theory.predicted_rate(torch.as_tensor(lmin), lr, "mse", X.shape[1]))
    pred = theory.predict_loss_curve(Kern, y, u0, lr, steps, lam=torch.as_tensor(lam))
    theory_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    h = ens.fit(
        X,
        y,
        rule="fa",
        lr=lr,
        lam=lam,
        steps=steps,
        record_steps=record_steps,
        metrics=("mse",),
        checkpoint=checkpoint,
    )
    seconds = time.perf_counter() - t0
    steps_rec = np.asarray(h.steps, dtype=np.int64)
    mse = h.metrics["mse"]
    pred_at = pred.mse[steps_rec]
    settle = np.asarray(pred.settle_mse, dtype=np.float64)
    members = stored_members(
        h,
        len(reps) * L,
        lambda k: {
            "lambda_min": float(lmin[k]),
            "predicted_rate": float(rate[k]),
            "settle_mse": float(settle[k]),
            "measured_final_mse": float(mse[-1, k]),
        },
        lambda k: {
            "mse": (steps_rec, np.asarray(mse[:, k], dtype=np.float64)),
            "predicted_mse": (steps_rec, np.asarray(pred_at[:, k], dtype=np.float64)),
        },
    )
    resumed_at = h.extra.get("resumed_at", 0)
    return {
        "members": members,
        "seconds": seconds + theory_seconds,
        "fit_seconds": seconds,  # what --dry-run's calibration times
        "resumed_at": resumed_at,
    }


def member_keys(kw: dict) -> list[dict]:
    """The runs of one task, in the order :func:`run_activation` returns them."""
    lams = LAMS[kw["activation"]]
    return [{"lam": float(lam), "rep": r} for r in kw["reps"] for lam in lams]


def tasks(profile: Profile, seed: int) -> list:
    s = profile.e2
    return [
        (
            run_activation,
            {
                "activation": act,
                "p": s.p,
                "steps": s.steps,
                "reps": reps,
                "record_steps": s.record_steps(),
                "base_seed": seed,
                "dtype": s.dtype,
            },
        )
        for act in profile.activations
        for reps in rep_packs(s.reps, len(LAMS[act]), s.p, s.dtype)
    ]


def from_store(runs: list[dict], series) -> dict:
    """E2's rows from its stored runs; ``series(run_id, metric)`` reads a stored series."""
    runs = sorted(
        runs,
        key=lambda r: (
            ACTIVATIONS.index(r["activation"]),
            r["rep"],
            LAMS[r["activation"]].index(r["lam"]),
        ),
    )
    rows, prow, krow = [], [], []
    for r in runs:
        member = {"activation": r["activation"], "lam": float(r["lam"]), "rep": int(r["rep"])}
        steps, mse = series(r["run_id"], "mse")
        _, pred = series(r["run_id"], "predicted_mse")
        for s, m, q in zip(steps.tolist(), mse.tolist(), pred.tolist(), strict=True):
            rows.append({**member, "step": s, "mse": m})
            prow.append({**member, "step": s, "predicted_mse": q})
        krow.append({**member, **{c: float(r[f"final.{c}"]) for c in KERNEL_COLUMNS[3:]}})
    return {
        "rows": rows,
        "prediction": prow,
        "kernels": krow,
        "member_steps": sum(int(r["stop_step"]) for r in runs),
        "diverged": [
            f"E2 {r['activation']} lam={r['lam']} rep {r['rep']}: {r['reason']}"
            for r in runs
            if r["status"] == "diverged"
        ],
    }
