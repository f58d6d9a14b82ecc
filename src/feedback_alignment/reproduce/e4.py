"""E4: the authors' three-layer MNIST network, trained by feedback alignment with lambda on
layers 2 and 3 (from their public simulation code; the paper does not show it).

784 -> 1000 ReLU -> 1000 ReLU -> 10, no biases, every layer an FA layer with its own fixed
N(0, 1) feedback matrix, W drawn N(0, 1), the output divided by 1000 (the width), log-softmax
and NLL, inputs normalised (0.1307, 0.3081), SGD lr 1e-2, batch 600 shuffled each epoch,
lambda in {0, 0.1, 0.3} added to the gradients of layers 2 and 3, the three networks
copies of one initial network (``deep.lambdas.paper_network("e4", "fa")`` trained by
``deep.lambdas.train_lambdas`` under ``deep.lambdas.E4``); one pack per repetition
(:mod:`.lambda_packs`, resumable from an in-run checkpoint).

Recorded at every step on the training batch before its update, for layers 2 (``fc2``)
and 3 (``fc3``): the error-signal alignment (one cosine over the whole batch between e_l B_l
and e_l W_l, e_l the gradient at layer l's output, as the authors' code computes it) and
the weight alignment cos(B_l, W_l); test accuracy every ``eval_every`` steps and at the end.
The authors recorded only the output layer; layer 2's alignment is a new measurement.
"""

from __future__ import annotations

from .lambda_packs import lambda_rep, pack_kwargs, rep_seeds
from .profiles import E4_LAMS, Profile

LAYERS = ("fc2", "fc3")
METRICS = tuple(f"{layer}_{m}" for layer in LAYERS for m in ("alignment", "weight_alignment"))
COLUMNS = ("lam", "rep", "step", *METRICS, "test_accuracy")
STORED = {
    **{f"{layer}_alignment": f"alignment/{layer}" for layer in LAYERS},
    **{f"{layer}_weight_alignment": f"weight_alignment/{layer}" for layer in LAYERS},
    "test_accuracy": "test_accuracy",
}
_EXP = 4


def run_rep(rep: int, base_seed: int, checkpoint=None, **settings) -> dict:
    """Repetition ``rep`` of E4: its three lambdas, one stored run each (``settings``:
    the rest of :func:`.lambda_packs.pack_kwargs`)."""
    seeds = rep_seeds(base_seed, _EXP, rep)
    return lambda_rep("e4", "fa", E4_LAMS, STORED, seeds, checkpoint, **settings)


def member_keys(kw: dict) -> list[dict]:
    """The runs of one pack (one repetition), in the order :func:`run_rep` returns them."""
    return [{"lam": float(lam), "rep": kw["rep"]} for lam in E4_LAMS]


def tasks(profile: Profile, seed: int) -> list:
    s = profile.e4
    return [(run_rep, pack_kwargs(s, r, seed, profile.dtype)) for r in range(s.reps)]


def from_store(runs: list[dict], series) -> dict:
    """E4's rows from its stored runs; ``series(run_id, metric)`` reads a stored series."""
    runs = sorted(runs, key=lambda r: (r["rep"], E4_LAMS.index(r["lam"])))
    rows = []
    for r in runs:
        member = {"lam": float(r["lam"]), "rep": int(r["rep"])}
        cols = {m: series(r["run_id"], m) for m in METRICS}
        esteps, acc = series(r["run_id"], "test_accuracy")
        at = dict(zip(esteps.tolist(), acc.tolist(), strict=True))
        steps = cols[METRICS[0]][0].tolist()
        vals = {m: cols[m][1].tolist() for m in METRICS}
        for i, t in enumerate(steps):
            rows.append(
                {**member, "step": t, **{m: vals[m][i] for m in METRICS},
                 "test_accuracy": at.get(t, "")}
            )  # fmt: skip
    first = runs[0] if runs else {}
    return {
        "rows": rows,
        "member_steps": sum(int(r["stop_step"]) for r in runs),
        "n_test": int(first.get("final.n_test", 0)),
        "n_train": int(first.get("final.n_train", 0)),
        "dataset": first.get("dataset", ""),
        "diverged": [],
    }
