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
from .e1 import data_for
from .profiles import ACTIVATIONS, LAMS, LR, D, Profile, seed_for

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
    reps: int,
    record_steps: list[int],
    base_seed: int,
    dtype: str,
) -> dict:
    import torch

    lams = LAMS[activation]
    L = len(lams)
    a = ACTIVATIONS.index(activation)
    net_seeds = [seed_for(base_seed, _EXP, a, p, r, 0) for r in range(reps)]
    data = [data_for(activation, p, seed_for(base_seed, _EXP, a, p, r, 1)) for r in range(reps)]
    X = torch.stack([data[r][0] for r in range(reps) for _ in lams])
    y = torch.stack([data[r][1] for r in range(reps) for _ in lams])
    seeds = [net_seeds[r] for r in range(reps) for _ in lams]
    lam = np.tile(np.asarray(lams, dtype=np.float64), reps)
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
        X, y, rule="fa", lr=lr, lam=lam, steps=steps, record_steps=record_steps, metrics=("mse",)
    )
    seconds = time.perf_counter() - t0
    steps_rec = h.steps
    mse = h.metrics["mse"]
    pred_at = pred.mse[steps_rec]
    settle = np.asarray(pred.settle_mse, dtype=np.float64)
    rows, prow, krow = [], [], []
    for k in range(reps * L):
        r, i = divmod(k, L)
        member = {"activation": activation, "lam": float(lams[i]), "rep": r}
        for j, s in enumerate(steps_rec):
            rows.append({**member, "step": int(s), "mse": float(mse[j, k])})
            prow.append({**member, "step": int(s), "predicted_mse": float(pred_at[j, k])})
        krow.append(
            {
                **member,
                "lambda_min": float(lmin[k]),
                "predicted_rate": float(rate[k]),
                "settle_mse": float(settle[k]),
                "measured_final_mse": float(mse[-1, k]),
            }
        )
    return {
        "rows": rows,
        "prediction": prow,
        "kernels": krow,
        "seconds": seconds,
        "theory_seconds": theory_seconds,
        "member_steps": int(h.stop_step.sum()),
        "diverged": [h.messages[k] for k in h.diverged],
    }


def tasks(profile: Profile, seed: int) -> list:
    s = profile.e2
    return [
        (
            run_activation,
            {
                "activation": act,
                "p": s.p,
                "steps": s.steps,
                "reps": s.reps,
                "record_steps": s.record_steps(),
                "base_seed": seed,
                "dtype": s.dtype,
            },
        )
        for act in profile.activations
    ]


def collect(results: list[dict]) -> dict:
    return {
        "rows": [row for r in results for row in r["rows"]],
        "prediction": [row for r in results for row in r["prediction"]],
        "kernels": [row for r in results for row in r["kernels"]],
        "compute_seconds": sum(r["seconds"] + r["theory_seconds"] for r in results),
        "member_steps": sum(r["member_steps"] for r in results),
        "diverged": [m for r in results for m in r["diverged"]],
    }
