"""The reproduction as one plan of packs over one results store.

Every experiment of a profile is a list of packs (:class:`Pack`): E1 one per activation
and width, E2 one per activation plus the two conservation-law runs, E3 one per
repetition, E5 (dropout) one per activation and width as E1. A pack trains several runs
together (an engine ensemble, or E3's three lambdas sharing one initialisation) and
returns one result per run. Each run has an identity (its experiment, its pack's
settings, its lambda and repetition, the profile's seed) hashed into its ``run_id``; its
randomness is drawn from the profile seed and that identity (``profiles.seed_for``),
never from the pack's neighbours, the executor or the order in which packs finish, so
every executor gives the same numbers.

Results go into the SQLite store of :mod:`feedback_alignment.experiments.store` (one
transaction per pack, so a kill leaves a pack's runs all there or all absent). A pack
whose runs are all in the store is not run again: a rerun of the same command resumes.
Every CSV, figure, verdict and the report are then built from the store alone
(:func:`results_from_store`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field

from ..progress import twolayer_work
from . import baselines, conservation, e1, e2, e3, e4, e5
from .profiles import EXPERIMENTS, D, N, Profile
from .work import INPUTS, task_work

STORE = "store.sqlite"
STUDY = "fa reproduce"
# the kinds of pack: the module that runs and reads it, its experiment, the kind of work
KINDS = {
    "E1": (e1, "E1", "twolayer"),
    "E2": (e2, "E2", "twolayer"),
    "E2c": (conservation, "E2", "twolayer"),
    "E3": (e3, "E3", "deep"),
    "E3bp": (baselines.E3_BP, "E3", "deep"),
    "E4": (e4, "E4", "deep"),
    "E4bp": (baselines.E4_BP, "E4", "deep"),
    # E5 trains on the engine's torch ops (dropout takes no native kernel): its own rate
    "E5": (e5, "E5", "dropout"),
}


@dataclass(frozen=True)
class Member:
    """One run of a pack, as :meth:`Store.write` records it."""

    run_id: str
    index: int
    system: str
    rep: int
    seed: int
    net_seed: int | None
    data_seed: int | None
    config: dict


@dataclass
class Pack:
    """A unit of work for an executor: ``fn(**kwargs)`` trains ``members`` together."""

    kind: str
    fn: object
    kwargs: dict
    index: int
    cost: float  # multiply-adds (progress.py): larger packs go first
    bytes: float  # planned peak memory of the worker running it
    members: list[Member] = field(default_factory=list)

    @property
    def experiment(self) -> str:
        return KINDS[self.kind][1]

    @property
    def work_kind(self) -> str:
        return KINDS[self.kind][2]

    @property
    def pack_id(self) -> str:
        return _digest({"kind": self.kind, **self.kwargs})


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def _pack_bytes(kind: str, kw: dict, dtype: str) -> float:
    """Planned peak memory of one pack: the engine's state per member (weights,
    feedback, per-sample activations, data) or E3's / E4's data set and three networks."""
    itemsize = 4 if dtype == "float32" else 8
    if kind in ("E1", "E2", "E2c", "E5"):
        members = len(KINDS[kind][0].member_keys(kw))
        per = kw["p"] * (2 * D + 4 * N) + N * (D + 1)
        extra = 2 * N * N * members * 8 if kind == "E2" else 0  # the kernels H(0), G(0)
        exact = kind in ("E2", "E2c")  # float64 at every profile
        return float(members * per * (8 if exact else itemsize) + extra)
    inputs = INPUTS.get(kw["source"], 784)
    data = 70000 * inputs * itemsize
    h = kw["hidden"]
    weights = h * inputs + 10 * h + (h * h if kind.startswith("E4") else 0)
    nets = 3 * weights * itemsize * 4  # W, feedback B, gradients, a spare
    acts = 3 * kw["batch"] * kw["hidden"] * itemsize * 4
    return float(data + nets + acts)


def plan(exps, prof: Profile, seed: int) -> list[Pack]:
    """Every pack of experiments ``exps`` at profile ``prof`` and seed ``seed``, largest
    work first (so N workers finish together and the last pack to start is short)."""
    packs: list[Pack] = []
    for kind, (mod, exp, _) in KINDS.items():
        if exp not in exps:
            continue
        for fn, kw in mod.tasks(prof, seed):
            dtype = kw.get("dtype", "float64")
            if kind == "E2c":
                cost = twolayer_work(2, kw["steps"], kw["p"], N, D)
            else:
                cost = task_work(exp, kw)
            packs.append(Pack(kind, fn, kw, len(packs), cost, _pack_bytes(kind, kw, dtype)))
    for pk in packs:
        keys = KINDS[pk.kind][0].member_keys(pk.kwargs)
        # a run's identity: its experiment, settings, lambda and repetition, not the pack
        # it shares (which repetitions ride along)
        settings = {k: v for k, v in pk.kwargs.items() if k != "reps"}
        for k, key in enumerate(keys):
            config = {"experiment": pk.experiment, "kind": pk.kind, **settings, **key}
            pk.members.append(
                Member(
                    run_id=_digest(config),
                    index=pk.index * 10000 + k,
                    system=pk.kind,
                    rep=int(key.get("rep", 0)),
                    seed=seed,
                    net_seed=None,
                    data_seed=None,
                    config=config,
                )
            )
    packs.sort(key=lambda pk: (-pk.cost, pk.index))
    return packs


def takes_checkpoint(fn) -> bool:
    """Whether pack function ``fn`` resumes from an in-run checkpoint (``checkpoint=``)."""
    import inspect

    return "checkpoint" in inspect.signature(fn).parameters


def run_pack(item: tuple) -> dict:
    """``fn(**kwargs)`` on ``threads`` torch threads: the function every executor calls, in
    any process; ``(fn, kwargs, threads, checkpoint)`` also passes the pack's in-run
    checkpoint (:mod:`.checkpoints`), which is not part of its identity."""
    import torch

    fn, kwargs, threads, *rest = item
    extra = {"checkpoint": rest[0]} if rest and rest[0] is not None else {}
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        res = fn(**kwargs, **extra)
    finally:
        torch.set_num_threads(old)
    res["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    return res


def records(pk: Pack, res: dict, worker_seconds: float) -> list[dict]:
    """The store's result dicts for the runs of pack ``pk`` from what its function
    returned (one transaction writes them all)."""
    out = []
    for m, r in zip(pk.members, res["members"], strict=True):
        out.append(
            {
                "run_id": m.run_id,
                "status": r["status"],
                "reason": r["reason"],
                "stop_step": r["stop_step"],
                "diverged_at": None,
                "path": r.get("path", ""),
                "engine_seconds": res["seconds"] / len(pk.members),
                "pack_id": pk.pack_id,
                "pack_size": len(pk.members),
                "pack_seconds": res["seconds"],
                "task_seconds": worker_seconds,
                "worker": res.get("worker", ""),
                "finals": r["finals"],
                "series": r["series"],
                "config_extra": r.get("config", {}),
            }
        )
    return out


def with_extra(pk: Pack, recs: list[dict]) -> list[Member]:
    """The pack's members with what their results add to the stored config (E3: the data
    set's name)."""
    return [
        Member(**{**m.__dict__, "config": {**m.config, **r.get("config_extra", {})}})
        for m, r in zip(pk.members, recs, strict=True)
    ]


def results_from_store(st, prof: Profile, exps) -> dict:
    """The experiments' rows (the shape the figures, verdicts and report take) from the
    store ``st`` alone, for each experiment of ``exps`` whose runs are all finished."""
    runs = st.runs(status=("done", "diverged"))
    by_kind: dict[str, list[dict]] = {}
    for r in runs:
        by_kind.setdefault(r["kind"], []).append(r)
    out: dict = {}
    for exp in exps:
        mine = [r for r in runs if r["experiment"] == exp]
        seconds = {r["pack_id"]: r["pack_seconds"] or 0.0 for r in mine}
        if exp == "E1":
            res = e1.from_store(by_kind.get("E1", []), prof.e1.max_steps)
        elif exp == "E2":
            res = e2.from_store(by_kind.get("E2", []), st.series)
            res["conservation"] = conservation.from_store(by_kind.get("E2c", []), st.series)
        elif exp == "E5":
            res = e5.from_store(by_kind.get("E5", []), prof.e5.max_steps)
        elif exp == "E3":
            res = e3.from_store(by_kind.get("E3", []), st.series)
            res["baseline"] = baselines.from_store(by_kind.get("E3bp", []), st.series)
        else:
            res = e4.from_store(by_kind.get("E4", []), st.series)
            res["baseline"] = baselines.from_store(by_kind.get("E4bp", []), st.series)
        if "baseline" in res:  # the experiment's compute includes its baseline's packs
            res["member_steps"] += res["baseline"]["member_steps"]
        res["compute_seconds"] = float(sum(seconds.values()))
        out[exp] = res
    return out


def complete(packs: list[Pack], finished: set[str]) -> list[str]:
    """The experiments (in paper order) all of whose planned runs are in ``finished``."""
    exps = {pk.experiment for pk in packs}
    return [
        e
        for e in EXPERIMENTS
        if e in exps
        and all(m.run_id in finished for pk in packs if pk.experiment == e for m in pk.members)
    ]
