"""``fa reproduce ... --dry-run``: the plan and what it will cost, computing none of it.

The packs per experiment, their runs and work (multiply-adds, :mod:`.work`), the peak
memory of the largest pack (what one worker must hold), and the projected time: each
group of packs that run at one rate (two-layer packs by kind, activation and width; the
engine with dropout masks, E5; the deep trainer of E3, E4 and the baselines) is timed on
this machine on one thread with its largest pack's own function and shape (E5 and the deep
trainer: one short pack), cut short (the fit alone is timed, after a warm-up that builds
and picks the kernels), and the pack times are then scheduled largest first on N workers.
E1 and E5 count their minimum run lengths (the authors' rules can train longer: E1's
linear lambda > 0 members up to ~5x; E5's members until their noisy alignment happens to
change by < 1e-4 between checks, or the profile's cap), so the projection is a floor.
"""

from __future__ import annotations

import heapq
import time

from ..bounds import fmt_bytes
from ..progress import duration, twolayer_work
from .pipeline import Pack
from .profiles import D, N, Profile

WORKERS = (1, 2, 8, 32, 128)
_MIN_STEPS, _MAX_STEPS = 10, 20000  # the calibration runs' lengths


def _shortened(pk: Pack, steps: int) -> dict:
    """Pack ``pk``'s arguments for a run of ``steps`` steps at its own shape (its members,
    width, activation, dtype and fit options): the calibration's workload."""
    kw = dict(pk.kwargs)
    if pk.kind == "E1":  # the paper's rule with its minimum length cut to (about) 1 step
        from ..twolayer.monitor import paper_min_steps

        steps = max(steps, paper_min_steps(kw["p"], 1))
        kw.update(max_steps=steps, min_base=1, check_every=steps)
    else:
        kw["steps"] = steps
        if "record_steps" in kw:
            kw["record_steps"] = [s for s in kw["record_steps"] if s <= steps]
    return kw


def _pack_rate(pk: Pack, target: float = 0.3) -> float:
    """Multiply-adds per second of pack ``pk``'s own function on one thread: a warm-up run
    (kernel build, self-check, compilation), then runs of growing length until one takes
    ``target`` seconds; only the fit is timed (the data and E2's theory are not)."""

    def timed(steps: int) -> tuple[float, float]:
        res = pk.fn(**_shortened(pk, steps))
        done = sum(m["stop_step"] for m in res["members"])
        return twolayer_work(1, done, pk.kwargs["p"], N, D), res.get("fit_seconds", res["seconds"])

    timed(_MIN_STEPS)
    steps = _MIN_STEPS
    while True:
        work, seconds = timed(steps)
        if seconds >= target or steps >= _MAX_STEPS:
            return work / max(seconds, 1e-9)
        grow = int(steps * 1.2 * target / max(seconds, 1e-3))
        steps = min(_MAX_STEPS, max(2 * steps, grow))


def _calibrate(packs: list[Pack], prof: Profile) -> dict[str, float]:
    """Multiply-adds per second on one thread, by rate group (:func:`_group`): each
    two-layer group timed on its largest pack's own workload, E3 on a short pack."""
    import torch

    from .work import task_work

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    rates = {}
    try:
        largest: dict[str, Pack] = {}
        for pk in packs:
            g = _group(pk)
            if pk.work_kind == "twolayer" and (g not in largest or pk.cost > largest[g].cost):
                largest[g] = pk
        for g, pk in largest.items():
            rates[g] = _pack_rate(pk)
        drop = [pk for pk in packs if pk.work_kind == "dropout"]
        if drop:  # E5: the engine's torch ops with masks, one short ReLU pack
            from .e5 import run_cell as dropout_cell

            # at p = 800 where the plan reaches it: narrower packs are dominated by the
            # per-step overhead of the masks, which would understate the rate of wide ones
            ps = [pk.kwargs["p"] for pk in drop]
            p = max(min(ps), min(max(ps), 800))
            res = dropout_cell("relu", p, [0], 0, prof.dtype, max_steps=600, rule_divisor=50)
            steps = sum(m["stop_step"] for m in res["members"])
            # the fit's own seconds: the teacher and network drawn once per pack, not per step
            rates["dropout"] = twolayer_work(1, steps, p, N, D) / res["seconds"]
        deep = [pk for pk in packs if pk.work_kind == "deep"]
        if deep:
            pk = deep[0]  # E3, E4 or a baseline: the same trainer
            kw = {**pk.kwargs, "steps": 30, "eval_every": 10**9, "rep": 0}
            t0 = time.perf_counter()
            pk.fn(**kw)
            rates["deep"] = task_work(pk.experiment, kw) / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return rates


def _group(pk: Pack) -> str:
    """The packs that run at one rate: two-layer packs by kind, activation and width (the
    linear FA path's step does not grow with p, the kernels differ by activation and
    width, E2 keeps the first layer and records more), E3's as one."""
    if pk.work_kind == "twolayer":
        return f"{pk.kind} {pk.kwargs['activation']} p={pk.kwargs['p']}"
    return pk.work_kind


def makespan(seconds: list[float], workers: int) -> float:
    """Wall time of packs taking ``seconds`` each, largest first, on ``workers`` workers."""
    loads = [0.0] * workers
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(loads, loads[0] + s)
    return max(loads)


def describe(packs: list[Pack], prof: Profile, seed: int, here: int) -> list[str]:
    """The dry run's lines."""
    lines = [f"fa reproduce --profile {prof.name} --seed {seed}: {len(packs)} packs, "]
    lines[0] += f"{sum(len(pk.members) for pk in packs)} runs (nothing computed)"
    for exp in sorted({pk.experiment for pk in packs}):
        mine = [pk for pk in packs if pk.experiment == exp]
        big = max(mine, key=lambda pk: pk.bytes)
        lines.append(
            f"  {exp}: {len(mine)} packs, {sum(len(pk.members) for pk in mine)} runs, "
            f"{sum(pk.cost for pk in mine):.3g} multiply-adds, largest pack "
            f"{fmt_bytes(big.bytes)} ({big.kind} {_what(big)})"
        )
    peak = max(pk.bytes for pk in packs)
    lines.append(f"peak memory per worker: {fmt_bytes(peak)} (its largest pack)")
    rates = _calibrate(packs, prof)
    seconds = [pk.cost / rates[_group(pk)] for pk in packs]
    two = [r for g, r in rates.items() if g != "deep"]
    parts = []
    if two:
        parts.append(f"two-layer {min(two) / 1e9:.3g}-{max(two) / 1e9:.3g} ({len(two)} shapes)")
    if "deep" in rates:
        parts.append(f"E3 {rates['deep'] / 1e9:.3g}")
    shown = ", ".join(parts)
    lines.append(
        f"projected time (one thread per worker, measured here: {shown} G multiply-adds/s; "
        "E1 and E5 at their minimum run lengths, so a floor):"
    )
    lines.append(f"  this machine ({here} workers): {duration(makespan(seconds, here))}")
    for n in WORKERS:
        lines.append(f"  {n} workers like these: {duration(makespan(seconds, n))}")
    longest = max(seconds)
    lines.append(f"  the longest pack alone: {duration(longest)} (no number of workers beats it)")
    return lines


def _what(pk: Pack) -> str:
    kw = pk.kwargs
    if pk.work_kind == "deep":
        return f"rep {kw['rep']}, {kw['hidden']} hidden, {kw['steps']} steps"
    return f"{kw['activation']}, p = {kw['p']}, {len(pk.members)} members"
