"""E5: dropout in place of weight decay: alignment cos(beta, b) against width p, one line
per dropout probability q, per activation (the authors' dropout runs).

E1's setting (n = 50, d = 150, a teacher of the same activation and width, fresh data,
network and b for every repetition) at lambda = 0, with inverted dropout on the hidden
activations psi(Wx) at every training step (``TwoLayerEnsemble.fit(dropout=q)``,
:mod:`feedback_alignment.twolayer.dropout`). The authors' step sizes for these runs
(``lr="paper_dropout"``: 1e-3 ReLU, 1e-1 tanh and sigmoid, 1e-2 linear) and their stop rule
(``Plateau.paper_dropout``: at least rint(N sqrt(p) // 14) steps, N = 5000, 10,000 for
linear; the alignment checked every N/5 steps, on until it changes by < 1e-4 between
checks). One pack per (activation, width): every repetition and probability in one engine
ensemble, as E1 packs its lambdas (:func:`.e1.rep_inputs`): within a repetition the
probabilities share the data, the initial network and b; each member's masks come from
its own seed and step, so no member's numbers depend on its pack-mates.
"""

from __future__ import annotations

from .e1 import cell_tasks, fit_cell, rows_from_store
from .profiles import DROPOUTS, E5_ACTIVATIONS, E5Settings, Profile

COLUMNS = ("activation", "dropout", "p", "rep", "alignment", "steps")
_EXP = 5


def run_cell(
    activation: str,
    p: int,
    reps: list[int],
    base_seed: int,
    dtype: str,
    max_steps: int | None = None,
    rule_divisor: int = 1,
    checkpoint=None,
) -> dict:
    """Train all repetitions x dropout probabilities of one (activation, p); return the
    stored runs and the seconds. ``checkpoint`` (:mod:`.checkpoints`): the fit resumes from
    it and saves to it (its dropout masks are functions of the seed and step)."""
    stop = E5Settings(max_steps=max_steps, rule_divisor=rule_divisor).stop_rule(activation, p)
    cell = (activation, p, reps, base_seed, (_EXP, E5_ACTIVATIONS.index(activation)), dtype)
    return fit_cell(*cell, "dropout", DROPOUTS[activation], stop, checkpoint, lr="paper_dropout")


def member_keys(kw: dict) -> list[dict]:
    """The runs of one task, in the order :func:`run_cell` returns them."""
    return [{"dropout": q, "rep": r} for r in kw["reps"] for q in DROPOUTS[kw["activation"]]]


def tasks(profile: Profile, seed: int) -> list:
    extra = {"rule_divisor": profile.e5.rule_divisor}
    return cell_tasks(run_cell, profile, profile.e5, E5_ACTIVATIONS, DROPOUTS, seed, extra)


def from_store(runs: list[dict], max_steps: int | None) -> dict:
    """E5's rows and totals from its stored runs (``Store.runs`` dicts)."""
    return {
        **rows_from_store(runs, max_steps, "E5", "dropout", E5_ACTIVATIONS),
        "max_steps": max_steps,
    }
