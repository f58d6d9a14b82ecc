"""Executors: where packs run. In-process, a local process pool, or a Dask cluster.

Each executor takes :class:`~.planner.Pack` objects and yields ``(pack, results)`` as packs
finish (``results`` is the list from :func:`~.runner.run_pack`, or the exception that
stopped the pack's task, e.g. a worker process that died). All of them call the same pure
:func:`~.runner.run_pack`, which sets torch's thread count from the pack, so the numbers do
not depend on the executor.

* :class:`Inline` runs packs one after another in this process.
* :class:`LocalPool` (the default) runs them in ``workers`` processes (default:
  the cores this process may use). Workers ignore Ctrl-C (the driver handles it) and exit
  by themselves when the driver process dies, even by SIGKILL. A single pack runs in this
  process (no pool could finish it sooner).
* :class:`Dask` submits them to a Dask distributed cluster: any scheduler address
  (``tcp://host:8786``; a dask-jobqueue SLURMCluster/PBSCluster's ``scheduler_address``),
  or, without an address, a LocalCluster of ``workers`` processes bound to 127.0.0.1 with
  the dashboard off.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Sequence

from ..errors import ConfigError, check
from .planner import Pack
from .runner import run_pack

EXECUTORS = ("inline", "local", "dask")


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class Inline:
    """Packs one after another in this process."""

    name = "inline"
    workers = 1

    def start(self) -> None:
        pass

    def run(self, packs: Sequence[Pack]) -> Iterator[tuple[Pack, list | BaseException]]:
        for pk in packs:
            yield pk, run_pack(pk)

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- local pool
def _driver_alive(driver: int, parent: int) -> bool:
    if os.getppid() != parent:  # our parent (driver or forkserver) died: reparented
        return False
    try:
        os.kill(driver, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, someone else's
        return True
    return True


def _watch_driver(driver: int, parent: int) -> None:
    while _driver_alive(driver, parent):
        time.sleep(0.5)
    os._exit(1)  # the driver is gone (killed): stop computing for nobody


def _init_worker(driver: int, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    args = (driver, os.getppid())
    threading.Thread(target=_watch_driver, args=args, daemon=True).start()


class LocalPool:
    """A pool of ``workers`` processes on this machine (forked from a forkserver that has
    imported torch, or spawned where there is no forkserver)."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = cores() if workers is None else workers
        check(
            isinstance(self.workers, int) and self.workers >= 1,
            f"--workers {self.workers!r} is not accepted; accepted: an integer >= 1",
        )
        self.pool = None

    def start(self) -> None:
        pass  # the pool starts lazily, sized to the work

    def run(self, packs: Sequence[Pack]) -> Iterator[tuple[Pack, list | BaseException]]:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        if not packs:
            return
        if len(packs) == 1:
            # one pack: a pool could not run it sooner, and starting one costs ~1 s
            yield packs[0], run_pack(packs[0])
            return
        n = max(1, min(self.workers, len(packs)))
        if "forkserver" in mp.get_all_start_methods():
            # one server imports torch once; workers fork from it (fork-safe: it has run
            # no torch thread pool), instead of every spawned worker importing torch
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["feedback_alignment.experiments.runner"])
        else:  # pragma: no cover - not Linux
            ctx = mp.get_context("spawn")
        self.pool = ProcessPoolExecutor(
            n,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(os.getpid(), packs[0].threads),
        )
        futs = {self.pool.submit(run_pack, pk): pk for pk in packs}
        try:
            for fut in as_completed(futs):
                try:
                    res = fut.result()
                except Exception as exc:  # a worker died: the pool is broken
                    res = exc
                yield futs[fut], res
        finally:
            self.close()

    def cancel(self) -> None:
        if self.pool is not None:
            procs = list(getattr(self.pool, "_processes", {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(5)
            self.pool = None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


# --------------------------------------------------------------------------- dask
class Dask:
    """A Dask distributed cluster: ``scheduler`` address, or a loopback LocalCluster."""

    name = "dask"

    def __init__(
        self, scheduler: str | None = None, workers: int | None = None, timeout: float = 20
    ):
        self.scheduler = scheduler
        self.timeout = timeout
        self.workers = cores() if workers is None else workers
        check(
            isinstance(self.workers, int) and self.workers >= 1,
            f"--workers {self.workers!r} is not accepted; accepted: an integer >= 1",
        )
        self.client = None
        self.cluster = None
        self.futures: list = []

    def start(self) -> None:
        if self.client is not None:
            return
        try:
            import logging
            import warnings

            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError(
                "executor 'dask' needs dask and distributed, which are not installed; "
                "accepted: pip install 'feedback-alignment[dask]', or --executor local/inline"
            ) from None
        if self.scheduler:
            try:
                self.client = Client(self.scheduler, timeout=f"{self.timeout}s")
            except (OSError, TimeoutError, ValueError) as exc:
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise ConfigError(
                    f"--scheduler {self.scheduler!r}: no Dask scheduler answered ({first}); "
                    "accepted: the address of a running scheduler, e.g. tcp://127.0.0.1:8786"
                ) from None
        else:
            with warnings.catch_warnings(), _workers_ignore_sigint():
                # no dashboard; the scheduler's bare HTTP endpoint binds to 127.0.0.1 too and
                # moves to a free port when 8787 is taken (that is all the warning says)
                warnings.filterwarnings("ignore", message="Port .* is already in use")
                self.cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            self.client = Client(self.cluster)

    def run(self, packs: Sequence[Pack]) -> Iterator[tuple[Pack, list | BaseException]]:
        from distributed import as_completed

        token = uuid.uuid4().hex[:8]
        futs = {}
        for pk in packs:
            fut = self.client.submit(run_pack, pk, pure=False, key=f"fa-{pk.pack_id}-{token}")
            futs[fut] = pk
        self.futures = list(futs)
        for fut in as_completed(futs):
            try:
                yield futs[fut], fut.result()
            except Exception as exc:
                yield futs[fut], exc

    def cancel(self) -> None:
        if self.client is not None and self.futures:
            try:
                self.client.cancel(self.futures)
            except Exception:  # pragma: no cover - best effort on the way out
                pass
        self.futures = []

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None


@contextlib.contextmanager
def _workers_ignore_sigint():
    """Start processes with Ctrl-C ignored (inherited through spawn): the driver alone
    handles it and closes the cluster, instead of every worker printing a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def get_executor(name: str = "local", *, workers: int | None = None, scheduler=None):
    """An executor by name: ``inline``, ``local`` (default) or ``dask``."""
    if name not in EXECUTORS:
        raise ConfigError(f"--executor {name!r} is not accepted; accepted: {', '.join(EXECUTORS)}")
    if scheduler and name != "dask":
        raise ConfigError(f"--scheduler {scheduler!r} needs --executor dask; got --executor {name}")
    if name == "inline":
        return Inline()
    if name == "local":
        return LocalPool(workers)
    return Dask(scheduler, workers)
