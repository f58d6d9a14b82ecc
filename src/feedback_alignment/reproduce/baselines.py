"""Backprop baselines of the MNIST experiments: the same networks trained by backprop, so
that E3's and E4's accuracy panels show what feedback alignment gives up.

- E3 (kind ``E3bp``): the authors' two-layer baseline, ``nn.Linear`` layers with biases
  and PyTorch's default initialisation, 784 -> 1000 ReLU -> 10, output divided by
  sqrt(1000), NLL + lambda |beta|^2 (``deep.lambdas.BP_BASELINE``), lr 1e-2, batch 600,
  lambda in {0, 0.1, 0.3}.
- E4 (kind ``E4bp``): E4's three-layer network trained by backprop from the FA run's
  initial weights (``paper_network("e4", "bp")``), lambda W added to the gradients of
  layers 2 and 3 as in E4.

Each repetition is one pack of the three lambdas (copies of one network, one minibatch
order: the order of the FA repetition of the same number), run by :mod:`.lambda_packs`;
the stored runs hold the test accuracy and the training loss.
"""

from __future__ import annotations

from . import e3, e4
from .lambda_packs import members, pack_kwargs, run_lambda_pack
from .profiles import E3_LAMS, E4_LAMS, Profile, seed_for

STORED = {"test_accuracy": "test_accuracy", "loss": "loss"}
COLUMNS = ("lam", "rep", "step", "test_accuracy")
LAMS = {"E3": E3_LAMS, "E4": E4_LAMS}


def _seeds(experiment: str, base_seed: int, rep: int) -> dict:
    if experiment == "E3":  # the authors' baseline draws its own (default) initialisation
        return {**e3.seeds(base_seed, rep), "net_seed": seed_for(base_seed, 3, rep, 3)}
    return e4.seeds(base_seed, rep)


def run_rep(
    experiment: str,
    rep: int,
    base_seed: int,
    source: str,
    train: int | None,
    test: int | None,
    hidden: int,
    batch: int,
    steps: int,
    eval_every: int,
    lr: float,
    dtype: str,
    checkpoint=None,
) -> dict:
    """Repetition ``rep`` of experiment ``experiment``'s backprop baseline."""
    study = {"E3": "bp_baseline", "E4": "e4"}[experiment]
    res = run_lambda_pack(
        study=study, rule="bp", lams=LAMS[experiment], **_seeds(experiment, base_seed, rep),
        source=source, train=train, test=test, hidden=hidden, batch=batch, steps=steps,
        eval_every=eval_every, lr=lr, dtype=dtype, checkpoint=checkpoint,
    )  # fmt: skip
    return {"members": members(res, LAMS[experiment], STORED), "seconds": res["seconds"]}


class Baseline:
    """The pipeline's view of one experiment's baseline (``tasks``, ``member_keys``)."""

    def __init__(self, experiment: str):
        self.experiment = experiment

    def tasks(self, profile: Profile, seed: int) -> list:
        s = getattr(profile, self.experiment.lower())
        return [
            (run_rep, {"experiment": self.experiment, **pack_kwargs(s, r, seed, profile.dtype)})
            for r in range(s.bp_reps)
        ]

    def member_keys(self, kw: dict) -> list[dict]:
        return [{"lam": float(lam), "rep": kw["rep"]} for lam in LAMS[self.experiment]]


E3_BP, E4_BP = Baseline("E3"), Baseline("E4")


def from_store(runs: list[dict], series) -> dict:
    """A baseline's rows (lam, rep, step, test_accuracy) from its stored runs."""
    rows = []
    for r in sorted(runs, key=lambda r: (r["rep"], r["lam"])):
        steps, acc = series(r["run_id"], "test_accuracy")
        for t, a in zip(steps.tolist(), acc.tolist(), strict=True):
            rows.append(
                {"lam": float(r["lam"]), "rep": int(r["rep"]), "step": t, "test_accuracy": a}
            )
    return {"rows": rows, "member_steps": sum(int(r["stop_step"]) for r in runs)}
