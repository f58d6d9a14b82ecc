"""Running a study: validate, plan, skip what is finished, execute, record, report.

:func:`run_study` is the Python entry point behind ``fa sweep``. Running it again on the
same store resumes: finished runs (``done`` or ``diverged``) are skipped, failed and
missing ones are run. Ctrl-C stops it cleanly: every pack already recorded stays, a pack
being written is completed first, and the packs in flight are redone by the next run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, printable
from ..executors import get_executor
from ..progress import Progress, wanted
from .planner import Pack, plan
from .runner import run_pack
from .spec import Spec, load_spec
from .store import Store, lease_owner


@dataclass
class StudyReport:
    """What one :func:`run_study` call did. ``ok``: nothing failed, not interrupted."""

    store: Path
    total: int
    skipped: int
    ran: int = 0
    done: int = 0
    diverged: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    interrupted: bool = False
    elsewhere: int = 0
    packs: int = 0
    timings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.interrupted

    def summary(self) -> str:
        head = (
            f"{self.total} runs: {self.skipped} already finished, {self.ran} ran now "
            f"({self.done} done, {self.diverged} diverged, {self.failed} failed)"
        )
        if self.elsewhere:
            head += (
                f"; {self.elsewhere} left to another fa sweep running on this store (run this "
                "command again when it is done, to check that nothing is missing)"
            )
        if self.interrupted:
            head += "; interrupted, run the same command again to finish the other runs"
        return head


@functools.cache
def git_commit() -> str:
    """The commit of the source tree the package runs from ('' outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def provenance(executor_name: str) -> dict:
    import torch

    from .. import __version__

    return {
        "executor": executor_name,
        "package_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
    }


@contextlib.contextmanager
def _sigint_deferred():
    """Hold a Ctrl-C (or SIGTERM) that arrives during a store write until the write has
    committed, then deliver it to the handler that was in place."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    sigs = (signal.SIGINT, signal.SIGTERM)
    old = {s: signal.signal(s, lambda signum, _f: pending.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    for s in dict.fromkeys(pending):
        if callable(old[s]):
            old[s](s, None)  # the handler raises (KeyboardInterrupt, or fa's Terminated)
        elif old[s] == signal.SIG_DFL:
            signal.raise_signal(s)  # what the signal would have done, now the write is whole


def _failed(pack: Pack, exc: BaseException) -> list[dict]:
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:2000]
    return [
        {
            "run_id": r.run_id,
            "status": "failed",
            "reason": reason,
            "finals": {},
            "series": {},
            "pack_id": pack.pack_id,
            "pack_size": len(pack.runs),
            "finished": time.time(),
        }
        for r in pack.runs
    ]


def _part(pk: Pack, runs: tuple) -> Pack:
    return (
        pk if len(runs) == len(pk.runs) else Pack(pk.pack_id, pk.system, runs, pk.threads, pk.cost)
    )


def _claimed(st: Store, owner: str, todo: list[Pack], ran: list[Pack]):
    """The packs to run, each claimed in the store (:meth:`Store.claim`) at the moment the
    executor draws it, so that two processes on one store split the runs; a run another
    live process holds is left to it (a second pass takes what a process that died or
    finished meanwhile left over). Appends each pack drawn to ``ran``."""
    pending = todo
    for _ in range(2):
        later = []
        for pk in pending:
            ids = set(st.claim([r.run_id for r in pk.runs], owner))
            rest = tuple(r for r in pk.runs if r.run_id not in ids)
            if rest:
                later.append(_part(pk, rest))
            if ids:
                ran.append(_part(pk, tuple(r for r in pk.runs if r.run_id in ids)))
                yield ran[-1]
        pending = later


def prepare(spec, *, profile=None, pack=None) -> tuple[Spec, list, list[Pack]]:
    """Validate and plan without running: (spec, runs, packs). Raises ConfigError."""
    spec = load_spec(spec, profile)
    runs = spec.runs()
    return spec, runs, plan(runs, spec, pack=pack)


def check_store(store, spec: Spec, runs: list, *, extend: bool = False) -> None:
    """Refuse a store that is not this project's, or holds another study: a different
    study name, or a different spec (``extend=True`` lets through a spec whose runs include
    every run already stored, i.e. one that only adds runs). Reads only (``mode=ro``)."""
    path = Path(store)
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return
    with Store(path, create=False) as st:
        meta = st.meta()
        stored_ids = st.run_ids()
    name = meta.get("study")
    if name is not None and name != spec.name:
        raise ConfigError(
            f"store {str(path)!r} holds study {name!r}, the spec is study {spec.name!r}; "
            "accepted: the same study, or another --store"
        )
    old = meta.get("spec")
    if old is None or old == json.dumps(spec.to_dict(), sort_keys=True):
        return
    new_ids = {r.run_id for r in runs}
    dropped = stored_ids - new_ids
    if dropped:
        raise ConfigError(
            f"store {str(path)!r} holds a different spec for study {spec.name!r}: "
            f"{len(dropped)} of its {len(stored_ids)} runs are not in this spec; accepted: "
            "the stored spec, or another --store"
        )
    if not extend:
        raise ConfigError(
            f"store {str(path)!r} holds a different spec for study {spec.name!r}; this one "
            f"keeps its {len(stored_ids)} runs and adds {len(new_ids - stored_ids)}: accepted "
            "with --extend, or the stored spec"
        )


def run_study(
    spec,
    store,
    *,
    executor="local",
    workers: int | None = None,
    scheduler: str | None = None,
    profile: str | None = None,
    pack=None,
    progress: bool | None = None,
    extend: bool = False,
) -> StudyReport:
    """Run (or resume) a study into a store; returns a :class:`StudyReport`.

    ``spec``: a TOML path, a spec dict or a :class:`~.spec.Spec`; ``store``: the SQLite
    path (created) or an open :class:`~.store.Store`; ``executor``: ``"inline"``,
    ``"local"`` (default), ``"dask"``, any word of ``fa sweep --executor`` (``"local:2"``,
    ``"dask:ADDRESS"``: :func:`~feedback_alignment.executors.get_executor`) or an executor
    object (started here if needed, left open for the caller to reuse and close; one made
    from a word is closed); ``workers``: processes for local/dask (default: the cores);
    ``scheduler``: a Dask scheduler address (default: a LocalCluster on 127.0.0.1); the
    store records the executor's name (``inline``, ``local``, ``dask``); ``pack``:
    ``"auto"`` or the most runs per ensemble (default: the spec's ``study.pack``);
    ``progress``: elapsed time and time left (from the planner's work estimate) on stderr
    (default: when stderr is a terminal; forced into a file, whole lines and no carriage
    returns). The whole spec is validated, and the executor started, before the store
    file is created: bad input raises ConfigError and writes nothing. A store holding
    another study, or a different spec, is refused (:func:`check_store`; ``extend=True``
    accepts a spec that only adds runs).
    """
    t_start = time.perf_counter()
    spec, runs, packs = prepare(spec, profile=profile, pack=pack)
    if not isinstance(store, Store):
        check_store(store, spec, runs, extend=extend)
    t_plan = time.perf_counter() - t_start
    own_executor = isinstance(executor, str)
    ex = get_executor(executor, workers=workers, scheduler=scheduler) if own_executor else executor
    ex.start()
    t0 = time.perf_counter()
    own_store = not isinstance(store, Store)
    try:
        st = Store(store) if own_store else store
    except BaseException:
        if own_executor:
            ex.close()
        raise
    t_store = time.perf_counter() - t0
    report = StudyReport(store=st.path, total=len(runs), skipped=0)
    engine = 0.0
    try:
        t0 = time.perf_counter()
        finished = st.finished_ids()
        todo: list[Pack] = []
        for pk in packs:
            left = tuple(r for r in pk.runs if r.run_id not in finished)
            if left:
                todo.append(_part(pk, left))
        report.skipped = len(runs) - sum(len(pk) for pk in todo)
        st.set_meta(study=spec.name, spec=json.dumps(spec.to_dict(), sort_keys=True))
        prov = provenance(ex.name)
        t_store += time.perf_counter() - t0
        # elapsed time and time left from the planner's work estimate of the packs to run
        bar = Progress(
            sum(pk.cost for pk in todo),
            label=f"fa sweep {printable(spec.name)}",
            enabled=wanted(progress) and bool(todo),
        )
        owner, ran = lease_owner(), []
        try:
            for i, results in ex.run(run_pack, _claimed(st, owner, todo, ran)):
                pk = ran[i]
                if isinstance(results, BaseException):
                    results = _failed(pk, results)
                t0 = time.perf_counter()
                with _sigint_deferred():
                    st.write(pk.runs, results, prov)
                t_store += time.perf_counter() - t0
                seen_packs = set()
                for res in results:
                    report.ran += 1
                    status = res["status"]
                    setattr(report, status, getattr(report, status) + 1)
                    if status == "failed" and len(report.failures) < 5:
                        report.failures.append(res["reason"])
                    if res.get("pack_seconds") and res["pack_id"] not in seen_packs:
                        seen_packs.add(res["pack_id"])
                        engine += res["pack_seconds"]
                bar.done(pk.cost, status=f"{report.skipped + report.ran}/{report.total} runs")
            left = {r.run_id for pk in todo for r in pk.runs} - st.finished_ids()
            report.elsewhere = len(left & st.leased_elsewhere(owner))
        except KeyboardInterrupt:
            report.interrupted = True
            ex.cancel()
        finally:
            bar.close()
            report.packs = len(ran)
            with contextlib.suppress(Exception):
                st.release(owner)
    finally:
        try:
            if own_executor:
                ex.close()
        finally:
            if own_store:
                st.close()
    report.timings = {
        "plan_seconds": t_plan,
        "store_seconds": t_store,
        "engine_seconds": engine,
        "wall_seconds": time.perf_counter() - t_start,
    }
    return report
