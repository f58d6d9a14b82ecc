"""The known work of a reproduction, for the time-left estimate of ``fa reproduce``.

Each task's cost is computed from its arguments before it runs, in multiply-adds
(:mod:`feedback_alignment.progress`): E1 and E2 members x steps x p n (n + d) for the
two-layer engine (E1 and E5 under the authors' run-length rules count their minimum steps,
so the estimate can grow when members train longer), E3 and E4 (and their backprop
baselines, whose tasks name their own ``lams``) 3 x lambdas x steps x batch x weights.
"""

from __future__ import annotations

from ..progress import deep_work, twolayer_work
from ..twolayer.engine import paper_min_steps
from .profiles import DROPOUTS, E3_LAMS, E4_LAMS, LAMS, D, E5Settings, N

KIND = {"E1": "twolayer", "E2": "twolayer", "E3": "deep", "E4": "deep", "E5": "dropout"}
INPUTS = {"digits": 64}  # every other source is 28 x 28 images
CLASSES = 10


def task_work(exp: str, kw: dict) -> float:
    """Multiply-adds of one task of experiment ``exp`` with arguments ``kw``."""
    if exp == "E1":
        p = kw["p"]
        steps = paper_min_steps(p, kw["min_base"])
        return twolayer_work(_count(kw["reps"]) * len(LAMS[kw["activation"]]), steps, p, N, D)
    if exp == "E2":
        members = _count(kw["reps"]) * len(LAMS[kw["activation"]])
        return twolayer_work(members, kw["steps"], kw["p"], N, D)
    if exp == "E5":
        members = _count(kw["reps"]) * len(DROPOUTS[kw["activation"]])
        rule = E5Settings(max_steps=kw["max_steps"], rule_divisor=kw["rule_divisor"])
        return twolayer_work(
            members, rule.stop_rule(kw["activation"], kw["p"]).min_steps, kw["p"], N, D
        )
    if exp == "E3":
        inputs = INPUTS.get(kw["source"], 784)
        layers = [(inputs, kw["hidden"]), (kw["hidden"], CLASSES)]
        return deep_work(kw["steps"], kw["batch"], layers, copies=len(kw.get("lams", E3_LAMS)))
    if exp == "E4":
        inputs, h = INPUTS.get(kw["source"], 784), kw["hidden"]
        layers = [(inputs, h), (h, h), (h, CLASSES)]
        return deep_work(kw["steps"], kw["batch"], layers, copies=len(kw.get("lams", E4_LAMS)))
    raise ValueError(f"unknown experiment {exp!r}")


def _count(reps) -> int:
    return reps if isinstance(reps, int) else len(reps)


def rep_packs(reps: int, lams: int, p: int, dtype: str) -> list[list[int]]:
    """Repetitions 0..reps-1 split into packs of whole repetitions (every lambda of a
    repetition shares its data and network) as the sweep planner sizes ensembles: at most
    ``AUTO_MAX_MEMBERS`` members and ``AUTO_MAX_BYTES`` of engine state, balanced. A run's
    seeds come from its repetition, so the split changes no run's randomness."""
    from ..experiments.planner import AUTO_MAX_BYTES, AUTO_MAX_MEMBERS, member_bytes

    per_rep = lams * member_bytes({"p": p, "d": D, "n": N, "dtype": dtype})
    cap = max(1, min(AUTO_MAX_MEMBERS // lams, int(AUTO_MAX_BYTES // per_rep)))
    chunks = -(-reps // cap)
    size = -(-reps // chunks)
    return [list(range(i, min(i + size, reps))) for i in range(0, reps, size)]


def plan_work(exps, tasks_of) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per experiment the cost of each task (in task order), and the total by kind.

    ``tasks_of(exp)`` returns the experiment's task list [(fn, kwargs), ...].
    """
    costs = {e: [task_work(e, kw) for _, kw in tasks_of(e)] for e in exps}
    totals: dict[str, float] = {}
    for e, c in costs.items():
        totals[KIND[e]] = totals.get(KIND[e], 0.0) + sum(c)
    return costs, totals
