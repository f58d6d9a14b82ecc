"""Bad-input catalogue, part 2: stores and specs. A foreign SQLite file is refused
untouched (no table added, no WAL switch), read commands never write, a store holding
another study or spec is refused (also under --dry-run), and bad export/plot options are
one line. Each case asserts the line, the exit status and that every file is unchanged."""

from __future__ import annotations

import sqlite3

import pytest

from _badinput import fa, refused, snapshot

SPEC = """
[study]
name = "{name}"
repetitions = 2
seed = 3
[fixed]
n = 6
d = 5
steps = 20
record_every = 10
activation = "{act}"
[grid]
p = {p}
lam = [0.0, 0.2]
"""


def _spec(root, name="tiny", act="relu", p="[4, 8]", file="spec.toml"):
    path = root / file
    path.write_text(SPEC.format(name=name, act=act, p=p))
    return path


def _foreign(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
    db.execute("INSERT INTO contacts VALUES ('Ada', '123')")
    db.commit()
    db.close()
    return path


# ---------------------------------------------------------------- foreign files
def test_sweep_into_foreign_sqlite_touches_nothing(tmp_path, capsys):
    contacts = _foreign(tmp_path / "contacts.sqlite")
    spec = _spec(tmp_path)
    refused(
        capsys,
        tmp_path,
        "sweep",
        spec,
        "--store",
        contacts,
        "--executor",
        "inline",
        match="not a study file (no finals, meta, runs, series table)",
    )
    db = sqlite3.connect(f"file:{contacts}?mode=ro", uri=True)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.close()


def test_sweep_dry_run_into_foreign_sqlite(tmp_path, capsys):
    contacts = _foreign(tmp_path / "contacts.sqlite")
    refused(
        capsys,
        tmp_path,
        "sweep",
        _spec(tmp_path),
        "--store",
        contacts,
        "--dry-run",
        match="not a study file",
    )


def test_results_on_foreign_sqlite_keeps_its_journal(tmp_path, capsys):
    contacts = _foreign(tmp_path / "contacts.sqlite")
    refused(capsys, tmp_path, "results", contacts, match="not a study file")


def test_results_on_empty_file_stays_empty(tmp_path, capsys):
    (tmp_path / "empty.sqlite").write_bytes(b"")
    refused(capsys, tmp_path, "results", tmp_path / "empty.sqlite", match="the file is empty")
    assert (tmp_path / "empty.sqlite").stat().st_size == 0


def test_results_on_text_file(tmp_path, capsys):
    (tmp_path / "notes.sqlite").write_text("not a database at all, just some text\n" * 200)
    refused(capsys, tmp_path, "results", tmp_path / "notes.sqlite", match="not a study file")


def test_results_on_directory_and_missing(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    refused(capsys, tmp_path, "results", tmp_path / "d", match="is a directory")
    refused(capsys, tmp_path, "results", tmp_path / "nope.sqlite", match="does not exist")


def test_sweep_store_is_a_directory(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    refused(
        capsys,
        tmp_path,
        "sweep",
        _spec(tmp_path),
        "--store",
        tmp_path / "d",
        "--executor",
        "inline",
        match="is a directory",
    )


def test_plot_on_foreign_sqlite(tmp_path, capsys):
    contacts = _foreign(tmp_path / "contacts.sqlite")
    refused(
        capsys, tmp_path, "plot", contacts, "--out", tmp_path / "a.png", match="not a study file"
    )


def test_store_with_other_tool_marker(store_copy, capsys):
    root, store = store_copy
    db = sqlite3.connect(store)
    db.execute("UPDATE meta SET value = 'someone else' WHERE key = 'tool'")
    db.commit()
    db.close()
    refused(capsys, root, "results", store, match="its meta names the tool 'someone else'")


def test_store_with_other_schema_version(store_copy, capsys):
    root, store = store_copy
    db = sqlite3.connect(store)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    refused(capsys, root, "results", store, match="has schema version '99'; accepted: '1'")


def test_store_from_before_the_marker_is_still_read_and_marked_on_write(store_copy, capsys):
    root, store = store_copy
    db = sqlite3.connect(store)
    db.execute("DELETE FROM meta WHERE key = 'tool'")
    db.commit()
    db.close()
    before = snapshot(root)
    rc, _ = fa(capsys, "results", store)
    assert rc == 0 and snapshot(root) == before
    rc, _ = fa(capsys, "sweep", _spec(root), "--store", store, "--executor", "inline")
    assert rc == 0
    db = sqlite3.connect(store)
    assert dict(db.execute("SELECT key, value FROM meta"))["tool"].startswith("feedback")
    db.close()


# ---------------------------------------------------------------- read commands never write
def test_results_and_plot_leave_the_store_and_its_directory_unchanged(store_copy, capsys):
    root, store = store_copy
    before = snapshot(root)
    rc, _ = fa(capsys, "results", store, "--table", "series")
    assert rc == 0
    assert snapshot(root) == before  # no -wal/-shm left, not a byte changed
    rc, _ = fa(capsys, "plot", store, "--out", root / "a.png", "--out", root / "a.pdf")
    assert rc == 0
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k not in ("a.png", "a.pdf")} == before


def test_store_opened_read_only_cannot_write(store_copy):
    from feedback_alignment.experiments import Store

    _, store = store_copy
    with Store(store, create=False) as st, pytest.raises(sqlite3.OperationalError):
        st.set_meta(x=1)


# ---------------------------------------------------------------- another study or spec
def test_sweep_other_study_name_refused(store_copy, capsys):
    root, store = store_copy
    other = _spec(root, name="other", act="tanh")
    line = refused(
        capsys,
        root,
        "sweep",
        other,
        "--store",
        store,
        "--executor",
        "inline",
        match="holds study 'tiny', the spec is study 'other'",
    )
    assert line.startswith("fa sweep: error:")


def test_sweep_other_study_name_refused_under_dry_run(store_copy, capsys):
    root, store = store_copy
    refused(
        capsys,
        root,
        "sweep",
        _spec(root, name="other"),
        "--store",
        store,
        "--dry-run",
        match="holds study 'tiny'",
    )


def test_sweep_changed_spec_dropping_runs_refused(store_copy, capsys):
    root, store = store_copy
    refused(
        capsys,
        root,
        "sweep",
        _spec(root, act="tanh"),
        "--store",
        store,
        "--extend",
        "--executor",
        "inline",
        match="8 of its 8 runs are not in this spec",
    )


def test_sweep_spec_adding_runs_needs_extend(store_copy, capsys):
    root, store = store_copy
    wider = _spec(root, p="[4, 8, 12]")
    refused(
        capsys,
        root,
        "sweep",
        wider,
        "--store",
        store,
        "--executor",
        "inline",
        match="keeps its 8 runs and adds 4: accepted with --extend",
    )
    refused(capsys, root, "sweep", wider, "--store", store, "--dry-run", match="--extend")
    rc, lines = fa(capsys, "sweep", wider, "--store", store, "--executor", "inline", "--extend")
    assert rc == 0 and "8 already finished, 4 ran now" in lines[-1]


# ---------------------------------------------------------------- options
@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--status", "bogus"], "--status 'bogus' is not accepted; accepted: done, diverged"),
        (["--format", "xlsx"], "--format 'xlsx' is not accepted; accepted: csv, parquet"),
        (["--table", "everything"], "--table 'everything' is not accepted"),
    ],
)
def test_results_bad_option(store_copy, capsys, argv, needle):
    root, store = store_copy
    refused(capsys, root, "results", store, *argv, match=needle)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--where", "colour=3"], "--where field 'colour' is not a field of these runs"),
        (["--where", "novalue"], "--where 'novalue' is not accepted; accepted: FIELD=VALUE"),
        (["--kind", "pie"], "--kind 'pie' is not accepted; accepted: final, curve"),
        (["--metric", "nope"], "--metric 'nope' was not recorded"),
        (["--x", "nope"], "--x 'nope' is not a field of these runs"),
        (["--by", "nope"], "--by 'nope' is not a field of these runs"),
        (["--kind", "curve", "--where", "colour=3"], "--where field 'colour'"),
    ],
)
def test_plot_bad_option(store_copy, capsys, argv, needle):
    root, store = store_copy
    refused(capsys, root, "plot", store, "--out", root / "a.png", *argv, match=needle)


def test_plot_bad_suffix(store_copy, capsys):
    root, store = store_copy
    refused(capsys, root, "plot", store, "--out", root / "a.gif", match="unknown suffix")


def test_sweep_into_an_immutable_store_leaves_nothing_beside_it(store_copy, capsys):
    """chattr +i: refused before SQLite makes -wal/-shm files beside the store."""
    import shutil
    import subprocess

    root, store = store_copy
    spec = root / "spec.toml"  # the stored study's own spec (conftest.TINY_SPEC)
    spec.write_text(SPEC.format(name="tiny", act="relu", p="[4, 8]"))
    if shutil.which("chattr") is None:
        pytest.skip("no chattr on this machine")
    if subprocess.run(["chattr", "+i", str(store)], capture_output=True).returncode != 0:
        pytest.skip("this file system (or user) cannot set the immutable flag")
    try:
        refused(
            capsys,
            root,
            "sweep",
            spec,
            "--store",
            store,
            "--executor",
            "inline",
            match="cannot be written (a read-only or immutable file)",
        )
    finally:
        subprocess.run(["chattr", "-i", str(store)], check=True)
