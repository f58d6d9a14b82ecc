"""Where the reproduction's tasks run: in this process, or in a pool of local processes.

A task is a module-level function and its keyword arguments (picklable); an executor
returns the results in task order, so the numbers never depend on which executor ran them.
Each task seeds everything it draws from its own arguments.

``--executor`` accepts ``local[:N]`` (default: N worker processes, one per core, the cores
split between them) and ``inline[:T]`` (this process, T threads, default all cores).
One thread per process is the robust choice on a small machine: measured on 2 cores
shared with other jobs, one torch process with 2 threads ran a linear E1 ensemble 12x
slower than with 1 thread.
``sweep[:inline|:local:N|:dask:ADDRESS]`` runs E1 through the sweep machinery of
``feedback_alignment.experiments`` (SQLite store in DIR/E1, packing, Dask); see
docs/reproduce.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from ..errors import ConfigError

Task = tuple[Callable, dict]


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _call(fn: Callable, kwargs: dict, threads: int):
    import torch

    torch.set_num_threads(max(1, threads))
    return fn(**kwargs)


@dataclass
class Inline:
    threads: int | None = None  # torch threads (default: every core)
    name: str = "inline"

    def map(self, tasks: Sequence[Task], progress: Callable[[str], None] | None = None) -> list:
        out = []
        for i, (fn, kw) in enumerate(tasks):
            out.append(_call(fn, kw, self.threads or _threads()))
            if progress:
                progress(f"{i + 1}/{len(tasks)}")
        return out


@dataclass
class LocalPool:
    workers: int
    name: str = "local"

    def map(self, tasks: Sequence[Task], progress: Callable[[str], None] | None = None) -> list:
        import multiprocessing as mp

        workers = max(1, min(self.workers, len(tasks)))
        threads = max(1, _threads() // workers)
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futs = [pool.submit(_call, fn, kw, threads) for fn, kw in tasks]
            out = []
            for i, f in enumerate(futs):
                out.append(f.result())
                if progress:
                    progress(f"{i + 1}/{len(tasks)}")
        return out


@dataclass
class Sweep:
    """E1 through ``feedback_alignment.experiments.run_study`` (its store, packing and
    executors: ``inline``, ``local`` with ``workers``, ``dask`` with a ``scheduler``);
    E2 and E3 then run in the local pool."""

    executor: str = "local"
    workers: int | None = None
    scheduler: str | None = None
    name: str = "sweep"

    def map(self, tasks, progress=None) -> list:
        return LocalPool(_threads()).map(tasks, progress)


def _sweep(spec: str) -> Sweep:
    rest = spec.partition(":")[2]
    kind, _, arg = rest.partition(":")
    kind = kind or "local"
    if kind == "inline" and not arg:
        return Sweep("inline")
    if kind == "local":
        try:
            workers = int(arg) if arg else None
        except ValueError:
            workers = 0
        if workers is not None and workers < 1:
            raise ConfigError(f"executor {spec!r}: N in sweep:local:N must be a positive integer")
        return Sweep("local", workers=workers)
    if kind == "dask":
        return Sweep("dask", scheduler=arg or None)
    raise ConfigError(
        f"unknown executor {spec!r}; accepted: 'sweep', 'sweep:inline', 'sweep:local:N', "
        "'sweep:dask[:SCHEDULER_ADDRESS]'"
    )


def get_executor(spec: str):
    """``local[:N]`` (N processes, default one per core) or ``inline[:T]`` (T threads)."""
    spec = (spec or "local").strip()
    if spec == "inline" or spec.startswith("inline:"):
        n = spec.partition(":")[2]
        try:
            threads = int(n) if n else None
        except ValueError:
            threads = 0
        if threads is not None and threads < 1:
            raise ConfigError(f"executor {spec!r}: T in inline:T must be a positive integer")
        return Inline(threads)
    if spec == "sweep" or spec.startswith("sweep:"):
        return _sweep(spec)
    if spec == "local" or spec.startswith("local:"):
        n = spec.partition(":")[2]
        try:
            workers = int(n) if n else _threads()
        except ValueError:
            workers = 0
        if workers < 1:
            raise ConfigError(f"executor {spec!r}: N in local:N must be a positive integer")
        return LocalPool(workers)
    raise ConfigError(
        f"unknown executor {spec!r}; accepted: 'local', 'local:N', 'inline', 'inline:T', "
        "'sweep[:inline|:local:N|:dask:ADDRESS]'"
    )
