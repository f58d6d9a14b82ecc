"""Bad-input catalogue, issue 23: damaged, hand-edited, locked and half-closed stores.

An overwritten page, a zeroed tail, a ``config`` that is not a JSON object, a series blob
that is not whole 8-byte values: one line naming the store and the cause, exit 2, every
file as it was (they used to be sqlite3.DatabaseError or JSON tracebacks). A store held by
another writer is said to be locked, within seconds (it used to take 60 s and say "not a
study file"). A leftover ``-wal`` is read without creating a ``-shm`` beside it."""

from __future__ import annotations

import shutil
import sqlite3
import time

import pytest

from _badinput import fa, refused, snapshot

PAGE = 4096


def _page_size(path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()


def test_an_overwritten_page_is_one_line(store_copy, capsys):
    root, store = store_copy
    size = _page_size(store)
    data = bytearray(store.read_bytes())
    assert len(data) >= 3 * size
    data[size : 2 * size] = b"\xa5" * size  # page 2: a b-tree page, now garbage
    store.write_bytes(bytes(data))
    refused(capsys, root, "results", store, match="is damaged")
    refused(capsys, root, "plot", store, "--out", root / "a.png", match="is damaged")


def test_a_zeroed_tail_is_one_line(store_copy, capsys):
    root, store = store_copy
    size = _page_size(store)
    data = bytearray(store.read_bytes())
    n = len(data) // size
    data[(n // 2) * size :] = bytes(len(data) - (n // 2) * size)
    store.write_bytes(bytes(data))
    refused(capsys, root, "results", store, "--table", "series", match="is damaged")


def test_a_damaged_store_is_not_resumed(store_copy, capsys):
    from test_bad_input_stores import _spec

    root, store = store_copy
    spec = _spec(root)
    size = _page_size(store)
    data = bytearray(store.read_bytes())
    data[size : 2 * size] = b"\xa5" * size
    store.write_bytes(bytes(data))
    refused(capsys, root, "sweep", spec, "--store", store, "--executor", "inline", match="damaged")


def _edit(store, sql, *args):
    db = sqlite3.connect(store)
    db.execute(sql, args)
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for side in ("-wal", "-shm"):
        p = store.with_name(store.name + side)
        if p.exists():
            p.unlink()


@pytest.mark.parametrize(
    "value, needle",
    [("{not json", "not a JSON object"), ("[1, 2]", "not a JSON object"), ("7", "not a JSON")],
)
def test_a_config_that_is_not_a_json_object(store_copy, capsys, value, needle):
    root, store = store_copy
    _edit(store, "UPDATE runs SET config = ? WHERE idx = 0", value)
    line = refused(capsys, root, "results", store, match=needle)
    assert "is damaged" in line and "run '" in line


@pytest.mark.parametrize("column", ["vals", "steps"])
def test_a_series_blob_of_five_bytes(store_copy, capsys, column):
    root, store = store_copy
    _edit(store, f"UPDATE series SET {column} = ? WHERE metric = 'mse'", b"\x01" * 5)
    refused(capsys, root, "results", store, "--table", "series", match="holds 5 bytes, not a whole")
    refused(
        capsys,
        root,
        "plot",
        store,
        "--kind",
        "curve",
        "--out",
        root / "c.png",
        match="holds 5 bytes",
    )


def test_steps_and_values_of_different_lengths(store_copy, capsys):
    root, store = store_copy
    _edit(store, "UPDATE series SET vals = ? WHERE metric = 'mse'", b"\x00" * 8)
    refused(capsys, root, "results", store, "--table", "series", match="steps but 1 values")


# ---------------------------------------------------------------- locks and journals
def test_a_store_locked_by_another_writer_is_said_to_be_locked(store_copy, capsys):
    from test_bad_input_stores import _spec

    root, store = store_copy
    spec = _spec(root)
    holder = sqlite3.connect(store, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO meta VALUES ('held', '1')")
        t0 = time.perf_counter()
        refused(
            capsys,
            root,
            "sweep",
            spec,
            "--store",
            store,
            "--executor",
            "inline",
            match="is locked by another process",
        )
        assert time.perf_counter() - t0 < 20  # it used to wait 60 s
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_results_on_a_store_with_a_leftover_wal_makes_no_shm(tiny_store, tmp_path, capsys):
    """A writer killed before its checkpoint leaves s.sqlite-wal: reading it used to
    create s.sqlite-shm beside it. Its committed rows are read all the same."""
    src = tmp_path / "live"
    src.mkdir()
    shutil.copyfile(tiny_store, src / "s.sqlite")
    writer = sqlite3.connect(src / "s.sqlite", isolation_level=None)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("UPDATE runs SET reason = 'from the wal' WHERE idx = 0")
    root = tmp_path / "crashed"
    root.mkdir()
    for side in ("", "-wal"):  # as a crash leaves them: no -shm
        shutil.copyfile(src / f"s.sqlite{side}", root / f"s.sqlite{side}")
    writer.close()
    assert (root / "s.sqlite-wal").stat().st_size > 0
    before = snapshot(root)
    rc, lines = fa(capsys, "results", root / "s.sqlite", "--out", tmp_path / "r.csv")
    assert rc == 0, lines
    assert snapshot(root) == before  # no -shm, not a byte changed
    assert "from the wal" in (tmp_path / "r.csv").read_text()
