"""The results store: one SQLite file per study (WAL journal), written atomically per pack.

Schema (``SCHEMA_VERSION`` 1; see docs/sweeps.md):

``meta(key, value)``
    ``schema_version``, ``study`` (name), ``spec`` (JSON of the last spec run into it),
    ``created``.
``runs``
    one row per run: ``run_id`` (primary key), ``idx`` (plan order), ``system``, ``rep``,
    ``seed``, ``net_seed``, ``data_seed``, ``config`` (JSON), ``status`` (``done``,
    ``diverged`` or ``failed``), ``reason``, ``stop_step``, ``diverged_at``, ``pack_id``,
    ``pack_size``, ``path``, ``engine_seconds`` (the run's share of the engine's time),
    ``pack_seconds``, ``task_seconds``, ``started``/``finished`` (Unix time), ``worker``,
    ``executor``, ``package_version``, ``git_commit``, ``torch_version``, ``attempts``.
``finals(run_id, metric, value)``
    each recorded metric's value at the run's last step (NULL for NaN).
``series(run_id, metric, steps, vals)``
    the recorded series: ``steps`` int64 and ``vals`` float64, little-endian raw bytes.

``leases(run_id, owner, expires)``
    runs a ``fa sweep`` process has claimed (:meth:`Store.claim`): two processes on one
    store split the runs instead of each running all of them. A lease ends when its owner
    releases it, when its owner (same host) is no longer running, or ``LEASE_SECONDS``
    after it was last renewed. Added to older stores on their first write.

Every pack's results go in one transaction: a crash (even SIGKILL) leaves either all of
them or none. A finished run (``done`` or ``diverged``) is never written twice; a
``failed`` one is replaced when it is run again.

Opening checks the file before anything reads it: a FIFO, device or socket is named for
what it is, a symbolic link is not a store to write through, a damaged file (``PRAGMA
quick_check``) or a store held by another writer is one line, and a row whose ``config``
is not a JSON object or whose series blobs are not whole numbers of 8-byte values is
refused when read, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..outputs import check_input_file, kind

SCHEMA_VERSION = "1"
FINISHED = ("done", "diverged")
STATUSES = ("done", "diverged", "failed")
RUN_COLUMNS = (
    "run_id",
    "idx",
    "system",
    "rep",
    "seed",
    "net_seed",
    "data_seed",
    "config",
    "status",
    "reason",
    "stop_step",
    "diverged_at",
    "pack_id",
    "pack_size",
    "path",
    "engine_seconds",
    "pack_seconds",
    "task_seconds",
    "started",
    "finished",
    "worker",
    "executor",
    "package_version",
    "git_commit",
    "torch_version",
    "attempts",
)
_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    idx INTEGER, system TEXT NOT NULL, rep INTEGER NOT NULL, seed INTEGER NOT NULL,
    net_seed INTEGER, data_seed INTEGER, config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'diverged', 'failed')),
    reason TEXT NOT NULL DEFAULT '',
    stop_step INTEGER, diverged_at INTEGER, pack_id TEXT, pack_size INTEGER, path TEXT,
    engine_seconds REAL, pack_seconds REAL, task_seconds REAL, started REAL, finished REAL,
    worker TEXT, executor TEXT, package_version TEXT, git_commit TEXT, torch_version TEXT,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS finals (
    run_id TEXT NOT NULL, metric TEXT NOT NULL, value REAL, PRIMARY KEY (run_id, metric)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
    run_id TEXT NOT NULL, metric TEXT NOT NULL, steps BLOB NOT NULL, vals BLOB NOT NULL,
    PRIMARY KEY (run_id, metric)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
"""
_LEASE_DDL = """
CREATE TABLE IF NOT EXISTS leases (
    run_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
"""
LEASE_SECONDS = 3600.0  # a lease not renewed for this long is free (another host's owner)
_OPEN_TIMEOUT = 5.0  # seconds to wait for another writer at open before saying it is locked
_WRITE_TIMEOUT = 60.0  # seconds a pack's write waits for another writer's transaction


def lease_owner() -> str:
    """This process as a lease owner: host, pid and a token (a reused pid is not us)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def _owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host (is its pid running?), None for another host."""
    host, _, rest = owner.partition(":")
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(rest.partition(":")[0]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def _nan_to_none(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


MARKER = ("tool", "feedback-alignment study store")
_SIDE = ("-wal", "-shm", "-journal")  # the files SQLite keeps beside a store
_TABLES = {"meta", "runs", "finals", "series"}


def _uri(path: Path, immutable: bool = False) -> str:
    from urllib.parse import quote

    return f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")


def _not_ours(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"store {str(path)!r} is not a study file ({why}); accepted: a SQLite file written "
        "by fa sweep (it was left untouched)"
    )


def _locked(exc: sqlite3.Error) -> bool:
    return any(w in str(exc).lower() for w in ("locked", "busy"))


def _is_locked(path: Path) -> ConfigError:
    return ConfigError(
        f"store {str(path)!r} is locked by another process (a fa sweep writing it, or an "
        "open SQLite session); accepted: try again when it is done (it was left untouched)"
    )


def _damaged(path: Path, why: str) -> ConfigError:
    why = " ".join(why.split())  # one line, whatever SQLite said
    return ConfigError(
        f"store {str(path)!r} is damaged ({why}); accepted: an intact study file (it was "
        "left untouched; a copy from before the damage, or fa sweep into a new --store)"
    )


def _check_intact(db, path: Path) -> None:
    """``PRAGMA quick_check``: every page and index well formed (an overwritten page, a
    zeroed tail)."""
    try:
        rows = db.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        if _locked(exc):
            raise _is_locked(path) from None
        raise _damaged(path, str(exc)) from None
    if rows != [("ok",)]:
        raise _damaged(path, " ".join("; ".join(str(r[0]) for r in rows).split())[:300])


def _inspect(db, path: Path) -> dict[str, str] | None:
    """The meta of a store this project wrote, None for an empty database; raises
    ConfigError (touching nothing) for any other SQLite file."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return None
    if not _TABLES <= tables:
        missing = sorted(_TABLES - tables)
        raise _not_ours(path, f"no {', '.join(missing)} table")
    meta = dict(db.execute("SELECT key, value FROM meta"))
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"store {str(path)!r} has schema version {version!r}; accepted: {SCHEMA_VERSION!r}"
        )
    if meta.get(MARKER[0], MARKER[1]) != MARKER[1]:
        raise _not_ours(path, f"its meta names the tool {meta[MARKER[0]]!r}")
    cols = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
    if not set(RUN_COLUMNS) <= cols:
        raise _not_ours(path, "its runs table lacks this project's columns")
    return meta


def _reading(method):
    """A reading method: SQLite's complaint about a page it meets (damage that the open
    check did not reach) becomes one line naming the store."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if _locked(exc):
                raise _is_locked(self.path) from None
            raise _damaged(self.path, str(exc)) from None

    return wrapper


def _config(path: Path, run_id, text) -> dict:
    try:
        cfg = json.loads(text)
    except (TypeError, ValueError):
        cfg = None
    if not isinstance(cfg, dict):
        raise _damaged(path, f"run {run_id!r} has a config that is not a JSON object")
    return cfg


def _arrays(path: Path, run_id, metric, steps, vals) -> tuple[np.ndarray, np.ndarray]:
    for name, blob in (("steps", steps), ("vals", vals)):
        if not isinstance(blob, bytes) or len(blob) % 8:
            size = len(blob) if isinstance(blob, bytes) else type(blob).__name__
            raise _damaged(
                path,
                f"run {run_id!r}, metric {metric!r}: its {name} blob holds {size} bytes, not "
                "a whole number of 8-byte values",
            )
    s = np.frombuffer(steps, dtype="<i8").copy()
    v = np.frombuffer(vals, dtype="<f8").copy()
    if s.shape != v.shape:
        raise _damaged(
            path, f"run {run_id!r}, metric {metric!r}: {s.size} steps but {v.size} values"
        )
    return s, v


class Store:
    """A study's SQLite file. ``Store(path)`` opens or creates it for writing;
    ``create=False``: the file must exist, and it is opened read-only (``mode=ro``, no
    journal change; a store in a read-only directory can be read). Reading methods return
    plain Python: no pandas needed.

    Before anything is written the file is recognised as this project's: a ``meta`` table
    with the project's marker and ``SCHEMA_VERSION`` (stores written before the marker
    existed are recognised by their schema version and tables, and get the marker on their
    first write). Any other SQLite file is refused untouched."""

    def __init__(self, path, *, create: bool = True, readonly: bool | None = None):
        self.path = Path(path)
        self.readonly = (not create) if readonly is None else readonly
        self._tmpdir: str | None = None
        self._check_path()
        exists = self.path.is_file()
        if (not create or self.readonly) and not exists:
            raise ConfigError(f"store {str(self.path)!r} does not exist; accepted: a study file")
        if self.readonly and self.path.stat().st_size == 0:
            raise _not_ours(self.path, "the file is empty")
        try:
            if self.readonly:
                self.db = self._connect_ro()
                try:
                    meta = _inspect(self.db, self.path)
                    if meta is None:
                        raise _not_ours(self.path, "it holds no tables")
                    _check_intact(self.db, self.path)
                except BaseException:
                    self.close()
                    raise
                return
            if exists:
                # look before touching: a read-only connection, no journal change
                probe = self._connect_ro()
                try:
                    meta = _inspect(probe, self.path)
                    if meta is not None:
                        _check_intact(probe, self.path)
                finally:
                    probe.close()
                    self._drop_tmpdir()
                # a write would fail only after SQLite made -wal/-shm beside it (an
                # immutable or read-only file): refuse first, leaving the folder as it was
                if not os.access(self.path, os.W_OK):
                    raise ConfigError(
                        f"store {str(self.path)!r} cannot be written (a read-only or immutable "
                        "file); accepted: a writable study file (fa results and fa plot read "
                        "it as it is)"
                    )
            else:
                meta = None
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=_OPEN_TIMEOUT, isolation_level=None)
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                if meta is None:
                    self.db.executescript(_DDL)
                    self.db.execute(
                        "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                        (SCHEMA_VERSION,),
                    )
                    self.db.execute(
                        "INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(time.time()),)
                    )
                self.db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", MARKER)
                self.db.executescript(_LEASE_DDL)
                self.db.execute(f"PRAGMA busy_timeout = {int(_WRITE_TIMEOUT * 1000)}")
            except BaseException:
                self.db.close()
                raise
        except sqlite3.DatabaseError as exc:
            if _locked(exc):
                raise _is_locked(self.path) from None
            if any(w in str(exc) for w in ("malformed", "corrupt")):
                raise _damaged(self.path, str(exc)) from None
            raise _not_ours(self.path, str(exc)) from None

    def _check_path(self) -> None:
        """What is at the path, before anything opens it: a directory, FIFO, device or
        socket is named for what it is; a store to write is a regular file or a new path
        (a symbolic link is refused, and so is a -wal/-shm/-journal that is not a file)."""
        what = "store"
        k = kind(self.path, what)
        if k == "a directory":
            raise ConfigError(
                f"store {str(self.path)!r} is a directory; accepted: a study file (SQLite)"
            )
        if self.readonly:
            check_input_file(self.path, what)
            return
        for p in [self.path] + [self.path.with_name(self.path.name + x) for x in _SIDE]:
            k = kind(p, what)
            if k == "a symbolic link":
                raise ConfigError(
                    f"store {str(p)!r} is a symbolic link (to {os.readlink(p)!r}); accepted: "
                    "a regular file or a new path (links are not written through)"
                )
            if k not in (None, "a regular file"):
                raise ConfigError(f"store {str(p)!r} is {k}; accepted: a regular file")

    def _connect_ro(self):
        """A read-only connection that creates no file beside the store. With no ``-wal``
        (no writer active, closed cleanly) the file is opened ``immutable`` (no ``-shm``
        is made, a read-only directory works); with a ``-wal`` and its ``-shm`` (a writer
        active) ``mode=ro`` reads both; a leftover ``-wal`` without ``-shm`` (a writer that
        was killed) is read from a private copy, since reading it in place would create a
        ``-shm`` beside it."""
        wal = self.path.with_name(self.path.name + "-wal")
        shm = self.path.with_name(self.path.name + "-shm")
        has_wal = wal.is_file() and wal.stat().st_size > 0
        target = self.path
        if has_wal and not shm.exists():
            self._tmpdir = tempfile.mkdtemp(prefix="fa-store-")
            target = Path(self._tmpdir) / self.path.name
            shutil.copyfile(self.path, target)
            shutil.copyfile(wal, target.with_name(target.name + "-wal"))
            db = sqlite3.connect(target, timeout=_OPEN_TIMEOUT, isolation_level=None)
        else:
            db = sqlite3.connect(
                _uri(target, immutable=not has_wal),
                uri=True,
                timeout=_OPEN_TIMEOUT,
                isolation_level=None,
            )
        try:
            db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except BaseException:
            db.close()
            raise
        return db

    def _drop_tmpdir(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        with contextlib.suppress(AttributeError, sqlite3.Error):
            self.db.close()
        self._drop_tmpdir()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ meta
    def set_meta(self, **items) -> None:
        with self._tx():
            for k, v in items.items():
                self.db.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    (k, v if isinstance(v, str) else json.dumps(v)),
                )

    @_reading
    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta"))

    # ------------------------------------------------------------------ writing
    class _Tx:
        def __init__(self, db):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type, *_):
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def _tx(self):
        return Store._Tx(self.db)

    def write(self, runs: Iterable, results: Iterable[dict], provenance: dict) -> int:
        """Record results (one transaction for all of them). ``runs`` are the
        :class:`~.spec.Run` objects the results belong to (matched by ``run_id``);
        ``provenance`` holds ``executor``, ``package_version``, ``git_commit``,
        ``torch_version``. A finished run already in the store is left as it is.
        Returns the number of runs written."""
        by_id = {r.run_id: r for r in runs}
        written = 0
        with self._tx():
            for res in results:
                run = by_id[res["run_id"]]
                prev = self.db.execute(
                    "SELECT status, attempts FROM runs WHERE run_id = ?", (run.run_id,)
                ).fetchone()
                if prev is not None and prev[0] in FINISHED:
                    continue
                attempts = 1 if prev is None else prev[1] + 1
                row = {
                    "run_id": run.run_id,
                    "idx": run.index,
                    "system": run.system,
                    "rep": run.rep,
                    "seed": run.seed,
                    "net_seed": run.net_seed,
                    "data_seed": run.data_seed,
                    "config": json.dumps(run.config, sort_keys=True),
                    "attempts": attempts,
                    **provenance,
                }
                for k in RUN_COLUMNS:
                    if k not in row:
                        row[k] = res.get(k)
                self.db.execute("DELETE FROM finals WHERE run_id = ?", (run.run_id,))
                self.db.execute("DELETE FROM series WHERE run_id = ?", (run.run_id,))
                self.db.execute(
                    f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(RUN_COLUMNS))})",
                    [row[k] for k in RUN_COLUMNS],
                )
                self.db.executemany(
                    "INSERT INTO finals VALUES (?, ?, ?)",
                    [(run.run_id, m, _nan_to_none(v)) for m, v in res["finals"].items()],
                )
                self.db.executemany(
                    "INSERT INTO series VALUES (?, ?, ?, ?)",
                    [
                        (
                            run.run_id,
                            m,
                            np.ascontiguousarray(s, dtype="<i8").tobytes(),
                            np.ascontiguousarray(v, dtype="<f8").tobytes(),
                        )
                        for m, (s, v) in res["series"].items()
                    ],
                )
                written += 1
        return written

    # ------------------------------------------------------------------ leases
    def claim(self, run_ids: Iterable[str], owner: str, seconds: float = LEASE_SECONDS):
        """Claim the runs of ``run_ids`` that are neither finished nor leased by another
        live owner (one transaction); returns those claimed, in order. Renews every lease
        ``owner`` already holds."""
        now = time.time()
        claimed = []
        with self._tx():
            self.db.execute("UPDATE leases SET expires = ? WHERE owner = ?", (now + seconds, owner))
            for rid in run_ids:
                row = self.db.execute(
                    "SELECT r.status, l.owner, l.expires FROM (SELECT ? AS run_id) q "
                    "LEFT JOIN runs r ON r.run_id = q.run_id "
                    "LEFT JOIN leases l ON l.run_id = q.run_id",
                    (rid,),
                ).fetchone()
                status, holder, expires = row
                if status in FINISHED:
                    continue
                if holder is not None and holder != owner:
                    alive = _owner_alive(holder)
                    if alive or (alive is None and expires > now):
                        continue
                self.db.execute(
                    "INSERT OR REPLACE INTO leases VALUES (?, ?, ?)", (rid, owner, now + seconds)
                )
                claimed.append(rid)
        return claimed

    def release(self, owner: str) -> None:
        """End every lease ``owner`` holds."""
        with self._tx():
            self.db.execute("DELETE FROM leases WHERE owner = ?", (owner,))

    @_reading
    def leased_elsewhere(self, owner: str) -> set[str]:
        """Unfinished runs that another live owner holds."""
        now, out = time.time(), set()
        q = (
            "SELECT l.run_id, l.owner, l.expires FROM leases l LEFT JOIN runs r "
            "ON r.run_id = l.run_id WHERE l.owner != ? AND "
            "(r.status IS NULL OR r.status NOT IN ('done', 'diverged'))"
        )
        for rid, holder, expires in self.db.execute(q, (owner,)):
            alive = _owner_alive(holder)
            if alive or (alive is None and expires > now):
                out.add(rid)
        return out

    # ------------------------------------------------------------------ reading
    @_reading
    def finished_ids(self) -> set[str]:
        """Ids of runs that are done or diverged (a resume skips them)."""
        q = "SELECT run_id FROM runs WHERE status IN ('done', 'diverged')"
        return {r[0] for r in self.db.execute(q)}

    @_reading
    def run_ids(self) -> set[str]:
        """Ids of every run recorded, whatever its status."""
        return {r[0] for r in self.db.execute("SELECT run_id FROM runs")}

    @_reading
    def counts(self) -> dict[str, int]:
        """Runs per status."""
        return dict(self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"))

    @_reading
    def metrics(self) -> list[str]:
        """Names of the metrics recorded in any run."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT metric FROM finals ORDER BY 1")]

    @_reading
    def runs(self, status: str | Iterable[str] | None = None, **where) -> list[dict]:
        """One flat dict per run, in plan order: the run columns (``config`` parsed), every
        config field under its own name, and each final value as ``final.<metric>``.

        ``status`` filters by status; ``where`` by config fields (``p=800``, or a list of
        accepted values: ``lam=[0, 0.2]``)."""
        q = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
        args: list = []
        if status is not None:
            sts = [status] if isinstance(status, str) else list(status)
            q += f" WHERE status IN ({', '.join('?' * len(sts))})"
            args += sts
        q += " ORDER BY idx, run_id"
        rows = []
        finals: dict[str, dict] = {}
        for run_id, metric, value in self.db.execute("SELECT run_id, metric, value FROM finals"):
            finals.setdefault(run_id, {})[metric] = float("nan") if value is None else value
        for values in self.db.execute(q, args):
            row = dict(zip(RUN_COLUMNS, values, strict=True))
            cfg = _config(self.path, row["run_id"], row["config"])
            row["config"] = cfg
            if not _matches(cfg, where):
                continue
            flat = {k: v for k, v in row.items()}
            for k, v in cfg.items():
                flat.setdefault(k, v)
            for m, v in finals.get(row["run_id"], {}).items():
                flat[f"final.{m}"] = v
            rows.append(flat)
        return rows

    @_reading
    def series(self, run_id: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps int64, values float64) of one run's recorded metric."""
        row = self.db.execute(
            "SELECT steps, vals FROM series WHERE run_id = ? AND metric = ?", (run_id, metric)
        ).fetchone()
        if row is None:
            raise ConfigError(
                f"run {run_id!r} has no recorded metric {metric!r}; accepted: "
                f"{', '.join(self.run_metrics(run_id)) or 'none recorded'}"
            )
        return _arrays(self.path, run_id, metric, row[0], row[1])

    @_reading
    def run_metrics(self, run_id: str) -> list[str]:
        q = "SELECT metric FROM series WHERE run_id = ? ORDER BY metric"
        return [r[0] for r in self.db.execute(q, (run_id,))]

    @_reading
    def all_series(self, metric: str | None = None, status=FINISHED, **where) -> list[dict]:
        """Long-form series: one dict per (run, metric) with ``steps`` and ``values`` arrays
        plus the run's flat fields (as :meth:`runs`)."""
        runs = {r["run_id"]: r for r in self.runs(status=status, **where)}
        q = "SELECT run_id, metric, steps, vals FROM series"
        args: tuple = ()
        if metric is not None:
            q += " WHERE metric = ?"
            args = (metric,)
        out = []
        for run_id, m, s, v in self.db.execute(q, args):
            if run_id in runs:
                steps, values = _arrays(self.path, run_id, m, s, v)
                out.append({**runs[run_id], "metric": m, "steps": steps, "values": values})
        out.sort(key=lambda r: (r["idx"], r["metric"]))
        return out


def _matches(cfg: dict, where: dict) -> bool:
    for k, want in where.items():
        if k not in cfg:
            return False
        accepted = want if isinstance(want, list | tuple | set) else [want]
        if cfg[k] not in accepted:
            return False
    return True
