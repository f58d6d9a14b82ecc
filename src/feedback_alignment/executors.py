"""Executors: where independent tasks run. In this process, a local process pool, or Dask.

``fa sweep`` runs its packs through them (:func:`~.experiments.runner.run_pack` on each
pack) and ``fa reproduce`` its experiments' tasks. A task is a module-level function and
one picklable argument: ``run(fn, items)`` yields ``(index, result)`` as tasks finish
(``result`` is what ``fn(item)`` returned, or the exception that stopped the task's worker,
e.g. a worker process that died), and ``map(tasks)`` runs ``(fn, kwargs)`` pairs and
returns their results in task order. Every task seeds what it draws from its own
arguments and runs with a set number of torch threads, so the numbers do not depend on
the executor.

* :class:`Inline` runs tasks one after another in this process.
* :class:`LocalPool` (the default) runs them in ``workers`` processes (default: the cores
  this process may use), ``threads`` torch threads each (default: the cores split between
  the workers, so one each by default: more threads than cores slow torch down badly on a
  small, shared machine; docs/performance.md). Workers ignore Ctrl-C (the driver handles
  it) and exit by themselves when the driver process dies, even by SIGKILL. A single task
  runs in this process (no pool could finish it sooner).
* :class:`Dask` submits them to a Dask distributed cluster: any scheduler address
  (``tcp://host:8786``; a dask-jobqueue SLURMCluster/PBSCluster's ``scheduler_address``),
  or, without an address, a LocalCluster of ``workers`` processes bound to 127.0.0.1 with
  the dashboard off.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence

from .errors import ConfigError, check

EXECUTORS = ("inline", "local", "dask")
Result = tuple[int, object]  # (task index, its result or the exception that stopped it)


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _call(fn: Callable, item, threads: int):
    """``fn(item)`` on ``threads`` torch threads (the caller's count restored after)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(item)
    finally:
        torch.set_num_threads(old)


def _apply(task: tuple[Callable, dict]):
    fn, kwargs = task
    return fn(**kwargs)


class _Executor:
    """What every executor shares: :meth:`map` over :meth:`run`, and the no-op hooks."""

    def start(self) -> None:
        pass

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass

    def map(self, tasks: Sequence[tuple[Callable, dict]], on_done=None) -> list:
        """Run ``(fn, kwargs)`` tasks; their results in task order. ``on_done(index, done,
        total)`` is called as each finishes; a task that raised raises here."""
        out: list = [None] * len(tasks)
        self.start()
        try:
            for done, (i, res) in enumerate(self.run(_apply, tasks), 1):
                if isinstance(res, BaseException):
                    raise res
                out[i] = res
                if on_done is not None:
                    on_done(i, done, len(tasks))
        except BaseException:
            self.cancel()
            raise
        finally:
            self.close()
        return out


def _workers(workers: int | None) -> int:
    n = cores() if workers is None else workers
    check(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1,
        f"--workers {n!r} is not accepted; accepted: an integer >= 1",
    )
    return n


class Inline(_Executor):
    """Tasks one after another in this process, on ``threads`` torch threads (default:
    every core)."""

    name = "inline"
    workers = 1

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def run(self, fn: Callable, items: Sequence) -> Iterator[Result]:
        for i, item in enumerate(items):
            yield i, _call(fn, item, self.threads or cores())


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


class LocalPool(_Executor):
    """A pool of ``workers`` processes on this machine, ``threads`` torch threads each
    (forked from a forkserver that has imported the task's module, and so torch, once;
    spawned where there is no forkserver)."""

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None):
        self.workers = _workers(workers)
        self.threads = threads
        self.pool = None

    def run(self, fn: Callable, items: Iterable) -> Iterator[Result]:
        """Results as they finish, ``(index in draw order, result)``. ``items`` may be
        lazy: an item is drawn only when a worker is free for it (``fa sweep`` claims a
        pack in its store at that moment)."""
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        it = iter(items)
        head = list(itertools.islice(it, max(2, self.workers)))
        if not head:
            return
        if len(head) == 1:
            # one task: a pool could not run it sooner, and starting one takes a while
            yield 0, _call(fn, head[0], self.threads or cores())
            return
        n = max(1, min(self.workers, len(head)))
        threads = self.threads or max(1, cores() // n)
        if "forkserver" in mp.get_all_start_methods():
            # one server imports the task's module (and torch) once; workers fork from it
            # (fork-safe: it has run no torch thread pool) instead of each importing torch
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload([fn.__module__])
        else:  # pragma: no cover - not Linux
            ctx = mp.get_context("spawn")
        self.pool = ProcessPoolExecutor(
            n, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(), threads)
        )
        futs = {self.pool.submit(fn, item): i for i, item in enumerate(head)}
        drawn = len(head)
        try:
            while futs:
                done, _ = wait(futs, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=futs.get):
                    try:
                        res = fut.result()
                    except Exception as exc:  # the task raised, or a worker died
                        res = exc
                    i = futs.pop(fut)
                    yield i, res
                    for item in itertools.islice(it, 1):  # the freed worker's next task
                        futs[self.pool.submit(fn, item)] = drawn
                        drawn += 1
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
class Dask(_Executor):
    """A Dask distributed cluster: ``scheduler`` address, or a loopback LocalCluster."""

    name = "dask"

    def __init__(
        self, scheduler: str | None = None, workers: int | None = None, timeout: float = 20
    ):
        self.scheduler = scheduler
        self.timeout = timeout
        self.workers = _workers(workers)
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
        tornado = logging.getLogger("tornado.application")
        if _not_distributed_cancel_bug not in tornado.filters:
            tornado.addFilter(_not_distributed_cancel_bug)
        if self.scheduler:
            try:
                self.client = Client(self.scheduler, timeout=f"{self.timeout}s")
            except (OSError, TimeoutError, ValueError) as exc:
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise ConfigError(
                    f"no Dask scheduler answered at {self.scheduler!r} ({first}); "
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

    def run(self, fn: Callable, items: Sequence) -> Iterator[Result]:
        from distributed import as_completed

        token = uuid.uuid4().hex[:8]
        it = iter(items)  # drawn as workers free up (see LocalPool.run)
        futs = {}

        def submit(i, item):
            fut = self.client.submit(fn, item, pure=False, key=f"fa-{token}-{i}")
            futs[fut] = i
            self.futures.append(fut)
            return fut

        self.futures = []
        first = [submit(i, item) for i, item in enumerate(itertools.islice(it, 2 * self.workers))]
        drawn = len(first)
        queue = as_completed(first)
        for fut in queue:
            try:
                res = fut.result()
            except Exception as exc:
                res = exc
            yield futs.pop(fut), res
            for item in itertools.islice(it, 1):
                queue.add(submit(drawn, item))
                drawn += 1

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


def _not_distributed_cancel_bug(record) -> bool:
    """False for the one log record distributed (2026.8) writes when Ctrl-C lands in
    ``utils.sync`` before its future exists: its ``cancel`` callback reads the unassigned
    ``future`` and tornado logs the NameError with a traceback. The interrupt itself goes
    on as a KeyboardInterrupt, so the record only puts a traceback before our one line."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (
        isinstance(exc, NameError)
        and "'future'" in str(exc)
        and exc.__traceback__ is not None
        and any(
            f.f_code.co_name == "cancel" and "distributed" in f.f_code.co_filename
            for f, _ in traceback.walk_tb(exc.__traceback__)
        )
    )


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


# --------------------------------------------------------------------------- by name
FORMS = {"inline": "inline[:T]", "local": "local[:N]", "dask": "dask[:ADDRESS]"}


def add_flags(parser, *, sweep: bool = False) -> None:
    """``--executor WORD`` (:func:`from_text`), as ``fa reproduce`` takes it; with ``sweep``,
    as ``fa sweep`` does: also ``--workers N`` and ``--scheduler ADDRESS``, its other
    spellings of ``local:N`` and ``dask:ADDRESS``, and ``inline`` without T (a sweep's
    packs run on its spec's ``study.threads``)."""
    forms = {**FORMS, "inline": "inline"} if sweep else FORMS
    inline = (
        "inline (this process, each pack on the spec's study.threads)"
        if sweep
        else "inline (this process, all cores), inline:T (T threads)"
    )
    parser.add_argument(
        "--executor",
        default="local",
        metavar="{" + ",".join(forms.values()) + "}",
        help=f"local (default: one process per core, one thread each), local:N processes, "
        f"{inline}, dask (a LocalCluster on 127.0.0.1, dashboard off) or dask:ADDRESS (a "
        "running scheduler); the same numbers on every executor",
    )
    if sweep:
        parser.add_argument(
            "--scheduler", metavar="ADDRESS", help="Dask scheduler address, as dask:ADDRESS"
        )
        parser.add_argument(
            "--workers",
            type=int,
            metavar="N",
            help="processes, as local:N, or of dask's loopback cluster (default: the cores)",
        )


def from_text(text: str | None, *, workers: int | None = None, scheduler: str | None = None):
    """An executor from one word: ``inline[:T]`` (T torch threads), ``local[:N]`` (N
    processes) or ``dask[:ADDRESS]`` (no address: a loopback cluster). ``workers`` and
    ``scheduler`` (``fa sweep --workers`` and ``--scheduler``) say the same as N and
    ADDRESS: either may be given, both only when they agree. ``workers`` is also the size
    of a loopback Dask cluster; an inline executor has none."""
    text = (text or "local").strip()
    kind, _, arg = text.partition(":")
    if kind not in EXECUTORS:
        accepted = ", ".join(FORMS.values())
        raise ConfigError(f"--executor {text!r} is not accepted; accepted: {accepted}")
    if workers is not None:
        _workers(workers)
    if scheduler and kind != "dask":
        raise ConfigError(f"--scheduler {scheduler!r} needs --executor dask; got --executor {text}")
    if kind == "dask":
        if arg and scheduler and arg != scheduler:
            raise ConfigError(
                f"--executor {text!r} and --scheduler {scheduler!r} name two schedulers; "
                "accepted: one of them (dask:ADDRESS, or dask with --scheduler ADDRESS)"
            )
        return Dask(arg or scheduler or None, workers)
    n = (int(arg) if arg.isascii() and arg.isdigit() else 0) if arg else None
    if n is not None and n < 1:
        letter = "T" if kind == "inline" else "N"
        raise ConfigError(
            f"--executor {text!r} is not accepted; accepted: {kind}:{letter} "
            f"with {letter} an integer >= 1"
        )
    if kind == "inline":
        check(
            workers is None,
            f"--workers {workers} with --executor {text!r}: inline runs in this process; "
            "accepted: --workers with local or dask",
        )
        return Inline(n)
    if n is not None and workers is not None and n != workers:
        raise ConfigError(
            f"--executor {text!r} and --workers {workers} give two process counts; "
            "accepted: one of them (local:N, or local with --workers N)"
        )
    return LocalPool(workers if n is None else n)


def get_executor(name: str = "local", *, workers: int | None = None, scheduler=None):
    """An executor by name, ``inline``, ``local`` (default) or ``dask``, or by any word
    :func:`from_text` takes; ``workers``: the processes of ``local`` or ``dask`` (default:
    the cores); ``scheduler``: ``dask``'s scheduler address (default: a loopback cluster)."""
    return from_text(name, workers=workers, scheduler=scheduler)
