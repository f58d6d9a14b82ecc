"""Bad-input catalogue, part 1: outputs. Path traversal through a manifest first, then
an output that is the command's own input, then outputs that exist, are directories or
sit under a file. Each case asserts the one-line message, exit status 2, and that every
file the test set up is byte-identical afterwards (``_badinput.refused``)."""

from __future__ import annotations

import json
import os

import pytest

from _badinput import CONFIG, refused, snapshot
from feedback_alignment.errors import ConfigError
from feedback_alignment.outputs import confined, sha256

MANIFEST = ".fa-reproduce.json"
pytestmark = pytest.mark.usefixtures("one_thread")


def _manifest(root, files, hashes=None, **extra):
    from feedback_alignment.reproduce.outdir import identity

    data = {"tool": "fa reproduce", "complete": True, "files": files, **extra}
    data.setdefault("identity", identity("smoke", 0))
    if hashes is not None:
        data["hashes"] = hashes
    (root / MANIFEST).write_text(json.dumps(data))


@pytest.fixture
def victim(tmp_path):
    (tmp_path / "victim.txt").write_text("precious\n")
    (tmp_path / "r").mkdir()
    return tmp_path


# ---------------------------------------------------------------- path traversal
def test_manifest_dotdot_entry_deletes_nothing(victim, capsys):
    """The issue's reproduction: a manifest listing ../victim.txt."""
    r = victim / "r"
    _manifest(r, ["../victim.txt"])
    refused(
        capsys, victim, "reproduce", "E2", "--profile", "smoke", "--out", r, match="no file hashes"
    )
    h = sha256(victim / "victim.txt")
    _manifest(r, ["../victim.txt"], {"../victim.txt": h})
    refused(
        capsys,
        victim,
        "reproduce",
        "E2",
        "--profile",
        "smoke",
        "--out",
        r,
        match="'../victim.txt', which leads outside its directory",
    )
    assert (victim / "victim.txt").read_text() == "precious\n"


def test_manifest_absolute_entry_refused(victim, capsys):
    r = victim / "r"
    target = str(victim / "victim.txt")
    _manifest(r, [target], {target: sha256(victim / "victim.txt")})
    refused(
        capsys,
        victim,
        "reproduce",
        "E2",
        "--profile",
        "smoke",
        "--out",
        r,
        match="leads outside its directory",
    )


def test_manifest_nested_dotdot_entry_refused(victim, capsys):
    r = victim / "r"
    (r / "E1").mkdir()
    _manifest(r, ["E1/../../victim.txt"], {"E1/../../victim.txt": "0" * 64})
    refused(
        capsys,
        victim,
        "reproduce",
        "E1",
        "--profile",
        "smoke",
        "--out",
        r,
        match="leads outside its directory",
    )


def test_manifest_symlink_leading_out_refused(victim, capsys):
    r = victim / "r"
    os.symlink(victim / "victim.txt", r / "link.txt")
    _manifest(r, ["link.txt"], {"link.txt": sha256(victim / "victim.txt")})
    refused(
        capsys,
        victim,
        "reproduce",
        "E2",
        "--profile",
        "smoke",
        "--out",
        r,
        match="resolves outside its directory",
    )


def test_manifest_symlinked_directory_leading_out_refused(victim, capsys):
    r = victim / "r"
    os.symlink(victim, r / "E2")
    _manifest(r, ["E2/victim.txt"], {"E2/victim.txt": sha256(victim / "victim.txt")})
    refused(
        capsys,
        victim,
        "reproduce",
        "E2",
        "--profile",
        "smoke",
        "--out",
        r,
        match="resolves outside its directory",
    )


def test_manifest_hash_mismatch_is_not_proof(victim, capsys):
    """A listed file whose bytes changed since it was written is not deleted."""
    r = victim / "r"
    (r / "report.md").write_text("edited by the user\n")
    _manifest(r, ["report.md"], {"report.md": "0" * 64})
    refused(
        capsys, victim, "reproduce", "E2", "--profile", "smoke", "--out", r, match="does not prove"
    )


def test_manifest_bad_hash_and_foreign_tool_and_garbage(victim, capsys):
    r = victim / "r"
    (r / "report.md").write_text("x")
    _manifest(r, ["report.md"], {"report.md": "not-a-hash"})
    refused(
        capsys,
        victim,
        "reproduce",
        "E2",
        "--profile",
        "smoke",
        "--out",
        r,
        match="accepted: a SHA-256",
    )
    (r / MANIFEST).write_text(json.dumps({"tool": "other", "hashes": {}}))
    refused(
        capsys,
        victim,
        "reproduce",
        "E2",
        "--profile",
        "smoke",
        "--out",
        r,
        match="was not written by 'fa reproduce'",
    )
    (r / MANIFEST).write_text("{not json")
    refused(
        capsys, victim, "reproduce", "E2", "--profile", "smoke", "--out", r, match="is unreadable"
    )


def test_confined_rejects_every_escape(tmp_path):
    for bad in ("../x", "/etc/passwd", "a/../../x", "", ".", "a//b", "a\\..\\x", 3):
        with pytest.raises(ConfigError):
            confined(tmp_path, bad, "manifest")
    assert confined(tmp_path, "E1/alignment.csv", "m") == tmp_path / "E1" / "alignment.csv"


def test_reproduce_out_is_a_file_or_under_a_file(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    refused(
        capsys,
        tmp_path,
        "reproduce",
        "E2",
        "--profile",
        "smoke",
        "--out",
        f,
        match="exists and is not a directory",
    )
    refused(
        capsys,
        tmp_path,
        "reproduce",
        "E2",
        "--profile",
        "smoke",
        "--out",
        f / "sub",
        match="is a file, not a directory",
    )


def test_reproduce_foreign_file_in_out_dir(tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    refused(
        capsys,
        tmp_path,
        "reproduce",
        "E2",
        "--profile",
        "smoke",
        "--out",
        tmp_path / "r",
        match="not written by 'fa reproduce'",
    )


# ---------------------------------------------------------------- output == input
def test_results_out_is_the_store(store_copy, capsys):
    root, store = store_copy
    refused(capsys, root, "results", store, "--out", store, match="same file as the input")


def test_results_out_is_the_store_through_a_symlink(store_copy, capsys):
    root, store = store_copy
    os.symlink(store, root / "alias.sqlite")
    refused(
        capsys,
        root,
        "results",
        store,
        "--out",
        root / "alias.sqlite",
        "--force",
        match="same file as the input",
    )


def test_results_out_is_the_store_through_a_hard_link(store_copy, capsys):
    root, store = store_copy
    os.link(store, root / "hard.csv")
    refused(
        capsys,
        root,
        "results",
        store,
        "--out",
        root / "hard.csv",
        "--force",
        match="same file as the input",
    )


def test_plot_out_is_the_store(store_copy, capsys):
    root, store = store_copy
    png = root / "s.png"
    os.symlink(store, png)
    refused(capsys, root, "plot", store, "--out", png, "--force", match="same file as the input")


def test_train_out_is_the_config(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    refused(capsys, tmp_path, "train", cfg, "--out", cfg, "--force", match="same file as the input")


def test_train_checkpoint_dir_is_the_config(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    refused(
        capsys,
        tmp_path,
        "train",
        cfg,
        "--set",
        f"train.checkpoint_dir='{cfg}'",
        match="exists and is not a directory",
    )


# ---------------------------------------------------------------- existing outputs
def test_results_out_exists_needs_force(store_copy, capsys):
    root, store = store_copy
    (root / "old.csv").write_text("keep me\n")
    refused(
        capsys,
        root,
        "results",
        store,
        "--out",
        root / "old.csv",
        match="exists; accepted: a new path, or --force",
    )


def test_results_out_is_a_directory(store_copy, capsys):
    root, store = store_copy
    (root / "d").mkdir()
    refused(capsys, root, "results", store, "--out", root / "d", match="is a directory")


def test_results_out_under_a_file(store_copy, capsys):
    root, store = store_copy
    (root / "f").write_text("x")
    refused(
        capsys,
        root,
        "results",
        store,
        "--out",
        root / "f" / "x.csv",
        match="is a file, not a directory",
    )


def test_results_parquet_default_beside_store_exists(store_copy, capsys):
    pytest.importorskip("pyarrow")
    root, store = store_copy
    (root / "s.parquet").write_text("keep me\n")
    refused(capsys, root, "results", store, "--format", "parquet", match="exists; accepted")


def test_plot_second_out_bad_writes_neither(store_copy, capsys):
    """--out a.png --out f/b.pdf: the second cannot be written, so a.png is not either."""
    root, store = store_copy
    (root / "f").write_text("x")
    refused(
        capsys,
        root,
        "plot",
        store,
        "--out",
        root / "a.png",
        "--out",
        root / "f" / "b.pdf",
        match="is a file, not a directory",
    )
    assert not (root / "a.png").exists()


def test_plot_out_exists_or_is_a_directory_or_twice(store_copy, capsys):
    root, store = store_copy
    (root / "old.png").write_bytes(b"\x89PNG old")
    refused(capsys, root, "plot", store, "--out", root / "old.png", match="exists; accepted")
    (root / "d.png").mkdir()
    refused(capsys, root, "plot", store, "--out", root / "d.png", match="is a directory")
    refused(
        capsys,
        root,
        "plot",
        store,
        "--out",
        root / "n.png",
        "--out",
        root / "n.png",
        match="is given twice",
    )


def test_train_out_exists_needs_force(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    (tmp_path / "res.json").write_text("{}")
    refused(
        capsys,
        tmp_path,
        "train",
        cfg,
        "--out",
        tmp_path / "res.json",
        match="exists; accepted: a new path, or --force",
    )


def test_train_out_is_a_directory(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    (tmp_path / "d").mkdir()
    refused(capsys, tmp_path, "train", cfg, "--out", tmp_path / "d", match="is a directory")


def test_demo_out_is_a_file(tmp_path, capsys):
    (tmp_path / "d").write_text("x")
    refused(
        capsys,
        tmp_path,
        "demo",
        "--out",
        tmp_path / "d",
        "--steps",
        "1",
        "--reps",
        "1",
        match="exists and is not a directory",
    )


def test_demo_summary_exists_needs_force(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "summary.json").write_text('{"mine": 1}')
    refused(
        capsys,
        tmp_path,
        "demo",
        "--out",
        tmp_path / "d",
        "--steps",
        "1",
        "--reps",
        "1",
        match="not written by 'fa demo'",  # a user's summary.json: refused, --force or not
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_locations(store_copy, capsys):
    root, store = store_copy
    ro = root / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        refused(capsys, root, "results", store, "--out", ro / "x.csv", match="not writable")
        refused(
            capsys,
            root,
            "reproduce",
            "E2",
            "--profile",
            "smoke",
            "--out",
            ro / "r",
            match="not writable",
        )
    finally:
        ro.chmod(0o700)


# ---------------------------------------------------------------- what --force does
def test_force_overwrites_atomically_and_train_writes_results(tmp_path, capsys):
    from _badinput import fa

    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    (tmp_path / "res.json").write_text("{}")
    before = snapshot(tmp_path)
    rc, _ = fa(capsys, "train", cfg, "--out", tmp_path / "res.json", "--force")
    assert rc == 0
    assert json.loads((tmp_path / "res.json").read_text())["config"]["seed"] == 1
    after = snapshot(tmp_path)
    assert set(after) == set(before)  # no temporary file left beside it
