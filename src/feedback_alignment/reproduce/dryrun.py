"""``fa reproduce ... --dry-run``: the plan and what it will cost, computing none of it.

The packs per experiment, their runs and work (multiply-adds, :mod:`.work`), the peak
memory of the largest pack (what one worker must hold), and the projected time: each
kind of work (two-layer engine, the engine with dropout masks, E3's trainer) is timed on
this machine with one short calibration pack of the profile's own shape on one thread,
and the pack times are then
scheduled largest first on N workers. E1 and E5 count their minimum run lengths (the
authors' rules can train longer: E1's linear lambda > 0 members up to ~5x; E5's members
until their noisy alignment happens to change by < 1e-4 between checks, or the profile's
cap), so the projection is a floor.
"""

from __future__ import annotations

import heapq
import time

from ..bounds import fmt_bytes
from ..progress import duration, twolayer_work
from .pipeline import Pack
from .profiles import D, N, Profile

WORKERS = (1, 2, 8, 32, 128)


def _calibrate(packs: list[Pack], prof: Profile) -> dict[str, float]:
    """Multiply-adds per second of each kind of work on one thread, from a short pack."""
    import torch

    from . import e3
    from .e1 import run_cell
    from .work import task_work

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    rates = {}
    try:
        two = [pk for pk in packs if pk.work_kind == "twolayer"]
        if two:
            p = max(min(pk.kwargs["p"] for pk in two), 200)
            t0 = time.perf_counter()
            res = run_cell(
                "relu", p, [0], 0, prof.dtype, max_steps=300, min_base=1, check_every=300
            )
            seconds = time.perf_counter() - t0
            steps = sum(m["stop_step"] for m in res["members"])
            rates["twolayer"] = twolayer_work(1, steps, p, N, D) / seconds
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
            kw = {**deep[0].kwargs, "steps": 30, "eval_every": 10**9, "rep": 0}
            t0 = time.perf_counter()
            e3.run_rep(**kw)
            rates["deep"] = task_work("E3", kw) / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    return rates


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
    seconds = [pk.cost / rates[pk.work_kind] for pk in packs]
    shown = ", ".join(f"{k} {r / 1e9:.3g}" for k, r in rates.items())
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
