"""E3: the paper's MNIST network trained by feedback alignment with lambda on the last layer.

784 -> hidden ReLU (no biases) -> 10, output times 1/sqrt(hidden), softmax cross-entropy,
W, beta and the feedback matrices all N(0, 1), SGD lr 1e-2, batch 600. Built from the deep
rule family: the network is ``deep.lambdas.paper_network("e3", "fa")`` and the three
lambdas of one repetition are copies of it (one initialisation, one B, one minibatch
order) trained by ``deep.lambdas.train_lambdas`` under the study ``deep.lambdas.E3``
(lambda added to the gradient of the output layer, as the authors' layers add it); one
pack per repetition (:mod:`.lambda_packs`, resumable from an in-run checkpoint).

Recorded at every step on the training batch before its update: the hidden-error alignment
mean_i cos(e_i B, e_i beta) and the weight cosine cos(B, beta); test accuracy every
``eval_every`` steps (and at the end). Data: ``deep.data.load_dataset``.
"""

from __future__ import annotations

from .lambda_packs import lambda_rep, pack_kwargs, rep_seeds
from .profiles import E3_LAMS, Profile

COLUMNS = ("lam", "rep", "step", "alignment", "test_accuracy")
# the paper's end point after 30,000 steps: {lambda: (hidden-error alignment, test accuracy %)}
PAPER_FINAL = {0.0: (0.07, 88.5), 0.1: (0.55, 91.6), 0.3: (0.66, 90.6)}
WEIGHT_COLUMNS = ("lam", "rep", "step", "weight_alignment")
_EXP = 3
STORED = {  # stored metric -> the pack's series
    "alignment": "alignment/out",
    "weight_alignment": "weight_alignment/out",
    "test_accuracy": "test_accuracy",
}


def run_rep(rep: int, base_seed: int, checkpoint=None, **settings) -> dict:
    """Repetition ``rep`` of E3: its three lambdas, one stored run each (``settings``:
    the rest of :func:`.lambda_packs.pack_kwargs`)."""
    seeds = rep_seeds(base_seed, _EXP, rep)
    return lambda_rep("e3", "fa", E3_LAMS, STORED, seeds, checkpoint, **settings)


def member_keys(kw: dict) -> list[dict]:
    """The runs of one task (one repetition), in the order :func:`run_rep` returns them."""
    return [{"lam": float(lam), "rep": kw["rep"]} for lam in E3_LAMS]


def tasks(profile: Profile, seed: int) -> list:
    s = profile.e3
    return [(run_rep, pack_kwargs(s, r, seed, profile.dtype)) for r in range(s.reps)]


def from_store(runs: list[dict], series) -> dict:
    """E3's rows from its stored runs; ``series(run_id, metric)`` reads a stored series."""
    runs = sorted(runs, key=lambda r: (r["rep"], E3_LAMS.index(r["lam"])))
    rows, wrows = [], []
    for r in runs:
        member = {"lam": float(r["lam"]), "rep": int(r["rep"])}
        steps, align = series(r["run_id"], "alignment")
        _, walign = series(r["run_id"], "weight_alignment")
        esteps, acc = series(r["run_id"], "test_accuracy")
        at = dict(zip(esteps.tolist(), acc.tolist(), strict=True))
        for t, a, w in zip(steps.tolist(), align.tolist(), walign.tolist(), strict=True):
            rows.append({**member, "step": t, "alignment": a, "test_accuracy": at.get(t, "")})
            wrows.append({**member, "step": t, "weight_alignment": w})
    first = runs[0] if runs else {}
    return {
        "rows": rows,
        "weight_rows": wrows,
        "member_steps": sum(int(r["stop_step"]) for r in runs),
        "n_test": int(first.get("final.n_test", 0)),
        "n_train": int(first.get("final.n_train", 0)),
        "dataset": first.get("dataset", ""),
        "diverged": [],
    }
