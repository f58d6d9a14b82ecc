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

Every pack's results go in one transaction: a crash (even SIGKILL) leaves either all of
them or none. A finished run (``done`` or ``diverged``) is never written twice; a
``failed`` one is replaced when it is run again.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ConfigError

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


def _nan_to_none(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


MARKER = ("tool", "feedback-alignment study store")
_TABLES = {"meta", "runs", "finals", "series"}


def _uri(path: Path, immutable: bool = False) -> str:
    from urllib.parse import quote

    return f"file:{quote(str(path.resolve()))}?mode=ro" + ("&immutable=1" if immutable else "")


def _not_ours(path: Path, why: str) -> ConfigError:
    return ConfigError(
        f"store {str(path)!r} is not a study file ({why}); accepted: a SQLite file written "
        "by fa sweep (it was left untouched)"
    )


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
        if self.path.is_dir():
            raise ConfigError(
                f"store {str(self.path)!r} is a directory; accepted: a study file (SQLite)"
            )
        exists = self.path.is_file()
        if (not create or self.readonly) and not exists:
            raise ConfigError(f"store {str(self.path)!r} does not exist; accepted: a study file")
        if self.readonly and self.path.stat().st_size == 0:
            raise _not_ours(self.path, "the file is empty")
        try:
            if self.readonly:
                self.db = self._connect_ro()
                meta = _inspect(self.db, self.path)
                if meta is None:
                    raise _not_ours(self.path, "it holds no tables")
                return
            if exists:
                # look before touching: a read-only connection, no journal change
                probe = self._connect_ro()
                try:
                    meta = _inspect(probe, self.path)
                finally:
                    probe.close()
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
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            if meta is None:
                self.db.executescript(_DDL)
                self.db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
                )
                self.db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('created', ?)", (str(time.time()),)
                )
            self.db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", MARKER)
        except sqlite3.DatabaseError as exc:
            raise _not_ours(self.path, str(exc)) from None

    def _connect_ro(self):
        """A read-only connection that creates no file: a store with no ``-wal`` beside it
        (no writer active, closed cleanly) is opened ``immutable`` (so no ``-shm`` is made,
        and a read-only directory works); otherwise ``mode=ro`` reads the WAL too."""
        wal = self.path.with_name(self.path.name + "-wal")
        db = sqlite3.connect(
            _uri(self.path, immutable=not wal.exists()), uri=True, timeout=60, isolation_level=None
        )
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return db

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        self.db.close()

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

    # ------------------------------------------------------------------ reading
    def finished_ids(self) -> set[str]:
        """Ids of runs that are done or diverged (a resume skips them)."""
        q = "SELECT run_id FROM runs WHERE status IN ('done', 'diverged')"
        return {r[0] for r in self.db.execute(q)}

    def run_ids(self) -> set[str]:
        """Ids of every run recorded, whatever its status."""
        return {r[0] for r in self.db.execute("SELECT run_id FROM runs")}

    def counts(self) -> dict[str, int]:
        """Runs per status."""
        return dict(self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"))

    def metrics(self) -> list[str]:
        """Names of the metrics recorded in any run."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT metric FROM finals ORDER BY 1")]

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
            cfg = json.loads(row["config"])
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
        return np.frombuffer(row[0], dtype="<i8").copy(), np.frombuffer(row[1], dtype="<f8").copy()

    def run_metrics(self, run_id: str) -> list[str]:
        q = "SELECT metric FROM series WHERE run_id = ? ORDER BY metric"
        return [r[0] for r in self.db.execute(q, (run_id,))]

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
                out.append(
                    {
                        **runs[run_id],
                        "metric": m,
                        "steps": np.frombuffer(s, dtype="<i8").copy(),
                        "values": np.frombuffer(v, dtype="<f8").copy(),
                    }
                )
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
