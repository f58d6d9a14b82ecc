"""Export a store as a table: CSV (stdlib) or Parquet (pyarrow, the ``parquet`` extra).

Two tables: ``runs`` (one row per run: its columns, every config field, ``final.<metric>``)
and ``series`` (long form: one row per run, metric and recorded step).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..errors import ConfigError
from ..outputs import atomic_path, check_output_file
from .store import RUN_COLUMNS, STATUSES, Store

FORMATS = ("csv", "parquet")
TABLES = ("runs", "series")


def _cell(v):
    if isinstance(v, list | dict):
        return json.dumps(v, sort_keys=True)
    return v


def runs_table(store: Store, status=None) -> tuple[list[str], list[list]]:
    """(columns, rows): run columns, config fields (sorted), final metrics (sorted)."""
    rows = store.runs(status=status)
    fields, finals = set(), set()
    for r in rows:
        fields |= set(r["config"])
        finals |= {k for k in r if k.startswith("final.")}
    base = [c for c in RUN_COLUMNS if c != "config"]
    cols = base + sorted(fields - set(base)) + sorted(finals)
    return cols, [[_cell(r.get(c)) for c in cols] for r in rows]


def series_table(store: Store, status=None) -> tuple[list[str], list[list]]:
    cols = ["run_id", "metric", "step", "value"]
    out = []
    for s in store.all_series(status=status or ("done", "diverged", "failed")):
        for step, value in zip(s["steps"].tolist(), s["values"].tolist(), strict=True):
            out.append([s["run_id"], s["metric"], step, value])
    return cols, out


def export(
    store, fmt: str = "csv", out=None, *, table: str = "runs", status=None, force: bool = False
) -> str | None:
    """Write ``table`` of ``store`` (a path or :class:`Store`) as ``fmt`` to ``out``.

    CSV with ``out=None`` returns the text; Parquet with ``out=None`` writes
    ``STUDY.parquet`` (``STUDY-series.parquet``) beside the store and returns its path.
    ``out`` is checked before anything is read: never the store itself, an existing file
    only with ``force``; it is written atomically."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not accepted; accepted: {', '.join(FORMATS)}")
    if table not in TABLES:
        raise ConfigError(f"--table {table!r} is not accepted; accepted: {', '.join(TABLES)}")
    if fmt == "parquet" and out is None:
        if not isinstance(store, str | Path):
            raise ConfigError("--format parquet needs --out FILE; accepted: a file path")
        suffix = "" if table == "runs" else f"-{table}"
        out = Path(store).with_name(Path(store).stem + suffix + ".parquet")
    if status is not None and status not in STATUSES:
        raise ConfigError(f"--status {status!r} is not accepted; accepted: {', '.join(STATUSES)}")
    if out is not None:
        src = store.path if isinstance(store, Store) else store
        out = check_output_file(out, inputs=[src], force=force)
    if fmt == "parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                "--format parquet needs pyarrow, which is not installed; accepted: pip "
                "install 'feedback-alignment[parquet]', or --format csv"
            ) from None
    st = store if isinstance(store, Store) else Store(store, create=False)
    try:
        cols, rows = (runs_table if table == "runs" else series_table)(st, status)
    finally:
        if st is not store:
            st.close()
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in r])
        if out is None:
            return buf.getvalue()
        with atomic_path(out) as tmp:
            tmp.write_text(buf.getvalue(), newline="")
        return None
    columns = {}
    for j, c in enumerate(cols):
        vals = [r[j] for r in rows]
        if all(v is None or isinstance(v, float | int) and not isinstance(v, bool) for v in vals):
            if any(isinstance(v, float) for v in vals):
                vals = [math.nan if v is None else float(v) for v in vals]
        columns[c] = vals
    try:
        tbl = pa.table(columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        tbl = pa.table(
            {c: [None if v is None else str(v) for v in vs] for c, vs in columns.items()}
        )
    with atomic_path(out) as tmp:
        pq.write_table(tbl, tmp)
    return str(out)
