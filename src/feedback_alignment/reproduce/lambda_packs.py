"""One pack of the MNIST experiments: copies of one network trained side by side over the
lambdas (E3, E4 and their backprop baselines), on the deep rule family.

The network is a study's network of :mod:`feedback_alignment.deep.lambdas` (``e3``,
``e4``, ``bp_baseline``) converted to a rule (``fa``, or ``bp`` for a baseline), copied
once per lambda (:func:`~feedback_alignment.deep.lambdas.replicate`: one initialisation,
one feedback, one minibatch order for every lambda) and trained by
:func:`~feedback_alignment.deep.lambdas.train_lambdas` for steps 0..steps-1, the state
reached at ``steps`` recorded too. The steps run in chunks of :data:`CHUNK` steps; between
chunks, when the pack's in-run checkpoint (:mod:`.checkpoints`) says a save is due, the
networks and the series so far are saved, and a pack started again resumes from the last
save and gives the numbers of an uninterrupted run (the minibatch order of epoch k is a
function of the order seed and k alone; plain SGD has no other state).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..deep.data import load_dataset
from ..deep.lambdas import STUDIES, paper_network, replicate, train_lambdas
from .profiles import seed_for

CHUNK = 100  # steps between checkpoint opportunities (train_lambdas calls)
_SERIES = ("step", "loss", "eval_step", "test_accuracy")


def prepared_data(source: str, train: int | None, test: int | None, dtype):
    """(x_train, y_train, x_test, y_test) of ``source``, normalised and flattened, and the
    data set (its name, classes)."""
    ds = load_dataset(source)
    if train or test:
        ds = ds.limit(train, test)
    xtr = ds.prepare(ds.x_train, dtype).flatten(1)
    xte = ds.prepare(ds.x_test, dtype).flatten(1)
    return (xtr, ds.y_train, xte, ds.y_test), ds


def run_lambda_pack(
    *,
    study: str,
    rule: str,
    lams: tuple[float, ...],
    net_seed: int,
    feedback_seed: int,
    order_seed: int,
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
    """Train the copies of study ``study``'s network under ``rule`` for ``steps`` steps;
    return ``{"series": {...}, "seconds": s, "n_train", "n_test", "dataset"}``, series as
    numpy arrays: ``step`` (T,), ``loss`` (T, L), ``alignment/<layer>`` and
    ``weight_alignment/<layer>`` (T, L), ``eval_step`` (E,), ``test_accuracy`` (E, L)."""
    import torch

    dt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    data, ds = prepared_data(source, train, test, dt)
    n, inputs = data[0].shape
    spec = replace(STUDIES[study], lams=tuple(lams), lr=lr, batch=batch, eval_every=eval_every)
    net = paper_network(
        study, rule, hidden=hidden, inputs=inputs, classes=ds.classes, seed=net_seed,
        feedback_seed=feedback_seed, dtype=dt,
    )  # fmt: skip
    nets = replicate(net, len(spec.lams))
    done, seconds, parts = 0, 0.0, []
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        for m, sd in zip(nets, saved["nets"], strict=True):
            m.load_state_dict(sd)
        done, seconds = int(saved["done"]), float(saved["seconds"])
        parts = [{k: v.numpy() for k, v in saved["series"].items()}]
    while done < steps or not parts:  # steps = 0: the initial state alone is recorded
        stop = min(done + CHUNK, steps)
        r = train_lambdas(
            nets, data, spec, order_seed=order_seed, start=done, stop=stop,
            record_end=stop == steps,
        )  # fmt: skip
        seconds += r["seconds"]
        parts.append(_flat(r))
        done = stop
        if checkpoint is not None and done < steps and checkpoint.due():
            parts = [_joined(parts)]  # joined only when saved, not after every chunk
            checkpoint.save(
                {
                    "done": done,
                    "seconds": seconds,
                    "nets": [m.state_dict() for m in nets],
                    "series": {k: torch.from_numpy(v.copy()) for k, v in parts[0].items()},
                }
            )
    return {
        "series": _joined(parts),
        "seconds": seconds,
        "n_train": n,
        "n_test": int(data[2].shape[0]),
        "dataset": ds.name,
    }


def rep_seeds(base_seed: int, experiment: int, rep: int) -> dict:
    """Repetition ``rep``'s network, feedback and minibatch-order seeds in experiment number
    ``experiment`` (3: E3, 4: E4), from the profile seed and that identity alone."""
    roles = ("net_seed", "feedback_seed", "order_seed")
    return {name: seed_for(base_seed, experiment, rep, role) for role, name in enumerate(roles)}


def lambda_rep(
    study: str, rule: str, lams, stored: dict, seeds: dict, checkpoint=None, **settings
) -> dict:
    """One repetition's pack as the pipeline stores it: :func:`run_lambda_pack` of study
    ``study`` under ``rule`` with ``seeds`` and the pack's ``settings`` (:func:`pack_kwargs`
    less rep and base_seed), its runs renamed by ``stored`` (:func:`members`)."""
    res = run_lambda_pack(
        study=study, rule=rule, lams=lams, **seeds, checkpoint=checkpoint, **settings
    )
    return {"members": members(res, lams, stored), "seconds": res["seconds"]}


def pack_kwargs(s, rep: int, seed: int, dtype: str) -> dict:
    """The keyword arguments of repetition ``rep``'s pack from E3 or E4 settings ``s``
    (the pack's identity: every run's id is hashed from them)."""
    return {
        "rep": rep,
        "base_seed": seed,
        "source": s.source,
        "train": s.train,
        "test": s.test,
        "hidden": s.hidden,
        "batch": s.batch,
        "steps": s.steps,
        "eval_every": s.eval_every,
        "lr": s.lr,
        "dtype": dtype,
    }


def _joined(parts: list[dict]) -> dict[str, np.ndarray]:
    """The series of consecutive chunks, one array per key."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[-1]}


def _flat(r: dict) -> dict[str, np.ndarray]:
    out = {k: r[k] for k in _SERIES}
    for what in ("alignment", "weight_alignment"):
        for layer, v in r[what].items():
            out[f"{what}/{layer}"] = v
    return out


def members(res: dict, lams, names: dict[str, str]) -> list[dict]:
    """The pack's stored runs, one per lambda: the series of ``res`` renamed by ``names``
    (stored metric -> key of ``res["series"]``), ``test_accuracy`` at its eval steps and
    every other series at every step."""
    s = res["series"]
    out = []
    for i in range(len(lams)):
        series = {}
        for metric, key in names.items():
            steps = s["eval_step"] if key == "test_accuracy" else s["step"]
            series[metric] = (steps.copy(), np.ascontiguousarray(s[key][:, i], dtype=np.float64))
        out.append(
            {
                "status": "done",
                "reason": "",
                "stop_step": int(s["step"][-1]),
                "path": "",
                "config": {"dataset": res["dataset"]},
                "finals": {"n_test": float(res["n_test"]), "n_train": float(res["n_train"])},
                "series": series,
            }
        )
    return out
