"""The planner: packs compatible runs into one ensemble run of the two-layer engine.

Runs whose networks have the same shape and training protocol (everything but the
per-member settings ``lr``, ``lam``, ``w_decay`` and the data task) go into one
:class:`~feedback_alignment.twolayer.engine.TwoLayerEnsemble`, so a grid gets the engine's
batched speed. The rule is part of the key too: an all-FA ensemble may take a faster exact
path, and a run's numbers should not depend on what else the grid holds.

Packs are a pure function of the spec (never of the executor or its worker count), so
every executor runs the same ensembles and gives the same numbers. Deep-trainer runs are
one per pack.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from ..bounds import DAY_SECONDS, MANY_RUNS, check_memory, fmt_bytes, machine_flops
from ..errors import ConfigError
from ..progress import twolayer_work
from .spec import Run, Spec
from .stops import planned_steps

# per-member settings of TwoLayerEnsemble.fit (and the data, drawn per member)
PER_MEMBER = ("lr", "lam", "w_decay", "dropout", "task")
AUTO_MAX_MEMBERS = 32
AUTO_MAX_BYTES = 512e6


@dataclass(frozen=True)
class Pack:
    """A unit of work for an executor: runs trained together (one ensemble or one deep run)."""

    pack_id: str
    system: str
    runs: tuple[Run, ...]
    threads: int = 1
    cost: float = 1.0  # relative work estimate, for scheduling big packs first

    def __len__(self) -> int:
        return len(self.runs)


def group_key(run: Run) -> tuple:
    """Runs with equal keys can share an ensemble."""
    if run.system != "twolayer":
        return ("deep", run.run_id)
    return tuple((k, repr(v)) for k, v in sorted(run.config.items()) if k not in PER_MEMBER)


def member_bytes(cfg: dict) -> int:
    """Planned state of one ensemble member: weights, feedback and the per-sample
    activations (p x (2d + 4n)) plus its data (n x d), in the run's dtype."""
    itemsize = 4 if cfg["dtype"] == "float32" else 8
    return itemsize * (cfg["p"] * (2 * cfg["d"] + 4 * cfg["n"]) + cfg["n"] * (cfg["d"] + 1))


def _max_members(cfg: dict, pack) -> int:
    if pack != "auto":
        return int(pack)
    return max(1, min(AUTO_MAX_MEMBERS, int(AUTO_MAX_BYTES // member_bytes(cfg))))


def _cost(run: Run) -> float:
    c = run.config
    if run.system != "twolayer":
        return 1.0
    return twolayer_work(1, max(planned_steps(c), 1), c["p"], c["n"], c["d"])


def plan(runs: list[Run], spec: Spec | None = None, *, pack=None, threads: int | None = None):
    """Group ``runs`` into :class:`Pack` objects, largest work first.

    ``pack``: ``"auto"`` (at most 32 members and ~512 MB per ensemble) or the most runs per
    ensemble (1 = one run per task); default the spec's ``study.pack``. Groups are split
    into balanced packs in plan order, so the same runs always form the same packs.
    """
    pack = pack if pack is not None else (spec.study["pack"] if spec else "auto")
    if not (pack == "auto" or (isinstance(pack, int) and not isinstance(pack, bool) and pack >= 1)):
        raise ConfigError(f"pack {pack!r} is not accepted; accepted: 'auto' or an integer >= 1")
    threads = threads if threads is not None else (spec.study["threads"] if spec else 1)
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        groups.setdefault(group_key(r), []).append(r)
    packs: list[Pack] = []
    for members in groups.values():
        members.sort(key=lambda r: r.index)
        if members[0].system == "twolayer":
            cap = _max_members(members[0].config, pack)
        else:
            cap = 1
        chunks = math.ceil(len(members) / cap)
        size = math.ceil(len(members) / chunks)
        for i in range(0, len(members), size):
            part = tuple(members[i : i + size])
            pid = hashlib.sha256("".join(r.run_id for r in part).encode()).hexdigest()[:16]
            cost = sum(_cost(r) for r in part)
            packs.append(Pack(pid, part[0].system, part, threads, cost))
    packs.sort(key=lambda pk: (-pk.cost, pk.runs[0].index))
    _check_pack_memory(packs)
    return packs


def _check_pack_memory(packs: list[Pack]) -> None:
    """Refuse a plan whose biggest ensemble would not fit in the memory available now."""
    big = max(
        (pk for pk in packs if pk.system == "twolayer"),
        key=lambda pk: len(pk) * member_bytes(pk.runs[0].config),
        default=None,
    )
    if big is None:
        return
    c = big.runs[0].config
    check_memory(
        len(big) * member_bytes(c),
        f"an ensemble of {len(big)} run(s) at p = {c['p']}, d = {c['d']}, n = {c['n']} "
        f"({c['dtype']})",
        "smaller p, d or n, float32, or a smaller --pack",
    )


def warnings_for(runs: list[Run], packs: list[Pack]) -> list[str]:
    """One line per reason to think twice: more than 1e5 runs, or more work than this
    machine does in a day (its float64 matrix speed, measured)."""
    out = []
    if len(runs) > MANY_RUNS:
        out.append(f"{len(runs)} runs is more than {MANY_RUNS:.0e}; check the grid")
    two = [r for r in runs if r.system == "twolayer"]
    if two:
        work = 3.0 * sum(_cost(r) for r in two)  # forward, backward, update
        # under a day even at 1e8 multiply-adds/s: no need to measure this machine
        seconds = 0.0 if work < DAY_SECONDS * 1e8 else work / machine_flops()
        if seconds > DAY_SECONDS:
            steps = sum(planned_steps(r.config) for r in two)
            out.append(
                f"{steps:.3g} member-steps of planned work, about {seconds / DAY_SECONDS:.3g} "
                f"days on this machine at its measured {machine_flops() / 1e9:.3g} GFLOP/s "
                f"(one core); the largest ensemble holds {fmt_bytes(_largest(packs))}"
            )
    return out


def _largest(packs: list[Pack]) -> float:
    return max(
        (len(pk) * member_bytes(pk.runs[0].config) for pk in packs if pk.system == "twolayer"),
        default=0,
    )
