"""Backprop baselines of the MNIST experiments: the same networks trained by backprop, so
that E3's and E4's accuracy panels show what feedback alignment gives up.

- E3 (kind ``E3bp``): the authors' two-layer baseline, ``nn.Linear`` layers with biases
  and PyTorch's default initialisation, 784 -> 1000 ReLU -> 10, output divided by
  sqrt(1000), NLL + lambda |beta|^2 (``deep.lambdas.BP_BASELINE``), lr 1e-2, batch 600,
  lambda in {0, 0.1, 0.3}.
- E4 (kind ``E4bp``): E4's three-layer network trained by backprop from the FA run's
  initial weights (``paper_network("e4", "bp")``), lambda W added to the gradients of
  layers 2 and 3 as in E4.

Each repetition is one pack of the profile's baseline lambdas (``bp_lams``, the authors'
three unless a profile reduces them; copies of one network, one minibatch order: the
order of the FA repetition of the same number), run by :mod:`.lambda_packs`; a lambda's
run does not depend on which others share its pack. The stored runs hold the test
accuracy and the training loss.
"""

from __future__ import annotations

from .lambda_packs import lambda_rep, pack_kwargs, rep_seeds
from .profiles import Profile, seed_for

STORED = {"test_accuracy": "test_accuracy", "loss": "loss"}
COLUMNS = ("lam", "rep", "step", "test_accuracy")


def run_rep(
    experiment: str, rep: int, base_seed: int, lams: list[float], checkpoint=None, **settings
) -> dict:
    """Repetition ``rep`` of experiment ``experiment``'s backprop baseline at ``lams``: the
    order of the FA repetition of the same number; E4's starts from its weights, E3's (the
    authors' baseline) draws its own default initialisation."""
    exp = {"E3": 3, "E4": 4}[experiment]
    seeds = rep_seeds(base_seed, exp, rep)
    if experiment == "E3":
        seeds["net_seed"] = seed_for(base_seed, exp, rep, 3)
    study = {"E3": "bp_baseline", "E4": "e4"}[experiment]
    return lambda_rep(study, "bp", tuple(lams), STORED, seeds, checkpoint, **settings)


class Baseline:
    """The pipeline's view of one experiment's baseline (``tasks``, ``member_keys``)."""

    def __init__(self, experiment: str):
        self.experiment = experiment

    def tasks(self, profile: Profile, seed: int) -> list:
        s = getattr(profile, self.experiment.lower())
        lams = [float(lam) for lam in s.bp_lams]
        return [
            (
                run_rep,
                {
                    "experiment": self.experiment,
                    "lams": lams,
                    **pack_kwargs(s, r, seed, profile.dtype),
                },
            )
            for r in range(s.bp_reps)
        ]

    def member_keys(self, kw: dict) -> list[dict]:
        return [{"lam": float(lam), "rep": kw["rep"]} for lam in kw["lams"]]


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
