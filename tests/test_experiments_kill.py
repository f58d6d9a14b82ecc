"""Durability: `fa sweep` killed with SIGKILL at random moments, then re-run, ends with
every run exactly once and the same numbers as an uninterrupted sweep; a killed driver's
pool workers exit by themselves."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from feedback_alignment.experiments import Store

SPEC = """
[study]
name = "kill"
repetitions = 10
seed = 21
pack = 1

[fixed]
n = 10
d = 20
steps = 600
# every step recorded: each step is taken from Python (the native kernels take the
# steps between two records in one call), so a fit lasts long enough for the timing below
record_every = 1
activation = "tanh"
metrics = ["mse", "alignment"]

[grid]
p = [16, 32]
lam = [0.0, 0.05]
"""
TOTAL = 40


def _sweep(tmp_path: Path, store: str, *extra) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "feedback_alignment.cli", "sweep", "spec.toml", "--store", store]
    return subprocess.Popen(
        [*cmd, "--no-progress", *extra],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # as in a terminal: a harness that runs the tests in the background (SIGINT
        # ignored, which children inherit) must not make the sweep deaf to Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _check_consistent(path: Path) -> int:
    """Integrity, and every stored run complete (all of its series): returns the count."""
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        if db.execute("SELECT name FROM sqlite_master WHERE name='runs'").fetchone() is None:
            return 0
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        n = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        assert db.execute("SELECT COUNT(DISTINCT run_id) FROM runs").fetchone()[0] == n
        incomplete = db.execute(
            "SELECT COUNT(*) FROM runs r WHERE (SELECT COUNT(*) FROM series s "
            "WHERE s.run_id = r.run_id) != 2 OR (SELECT COUNT(*) FROM finals f "
            "WHERE f.run_id = r.run_id) != 2"
        ).fetchone()[0]
        assert incomplete == 0
        return n
    finally:
        db.close()


def _count(path: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:  # not created yet
        return 0


def _numbers(path: Path) -> dict:
    with Store(path, create=False) as st:
        out = {}
        for r in st.runs():
            series = tuple(st.series(r["run_id"], m)[1].tobytes() for m in ("mse", "alignment"))
            out[r["run_id"]] = (r["status"], r["final.mse"], r["final.alignment"], series)
        return out


def test_sigkill_at_random_moments_then_resume(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC)
    ref = _sweep(tmp_path, "ref.sqlite", "--executor", "inline")
    assert ref.wait(timeout=120) == 0, ref.stderr.read()
    assert _check_consistent(tmp_path / "ref.sqlite") == TOTAL

    rng = random.Random(1234)
    counts = []
    kills = 0
    while kills < 12 and (not counts or counts[-1] < TOTAL):
        before = counts[-1] if counts else 0
        proc = _sweep(tmp_path, "study.sqlite", "--executor", "inline")
        if kills % 4 == 3:
            # a moment while it starts: importing, validating, opening the store
            time.sleep(rng.uniform(0.0, 1.5))
        else:
            # a moment while it runs: after 1-3 more runs are stored, plus up to one run
            target = before + rng.randint(1, 3)
            deadline = time.time() + 60
            while _count(tmp_path / "study.sqlite") < target and proc.poll() is None:
                assert time.time() < deadline
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.1))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
        counts.append(_check_consistent(tmp_path / "study.sqlite"))
    assert kills >= 10, counts
    kills_mid_sweep = sum(0 < c < TOTAL for c in counts)
    assert kills_mid_sweep >= 8, counts  # most kills landed while runs were being written
    assert counts == sorted(counts)  # nothing finished is ever lost

    final = _sweep(tmp_path, "study.sqlite", "--executor", "inline")
    assert final.wait(timeout=120) == 0, final.stderr.read()
    assert _check_consistent(tmp_path / "study.sqlite") == TOTAL
    got, want = _numbers(tmp_path / "study.sqlite"), _numbers(tmp_path / "ref.sqlite")
    assert got.keys() == want.keys() and len(got) == TOTAL
    assert got == want  # bit for bit
    with Store(tmp_path / "study.sqlite", create=False) as st:
        assert st.counts() == {"done": TOTAL}


def _group_alive(pgid: int) -> list[int]:
    alive = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(d.name))
    return alive


def test_killed_driver_leaves_no_pool_workers(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC.replace("steps = 600", "steps = 3000"))
    proc = _sweep(tmp_path, "s.sqlite", "--executor", "local", "--workers", "2")
    deadline = time.time() + 60
    while _check_consistent(tmp_path / "s.sqlite") == 0 and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None and len(_group_alive(proc.pid)) >= 3  # driver + workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 15
    while _group_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert _group_alive(proc.pid) == []
    n = _check_consistent(tmp_path / "s.sqlite")
    assert 0 < n < TOTAL


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    """SIGINT to the whole process group (what a terminal's Ctrl-C sends): exit 130, the
    stored runs stay, the workers go, and the next run finishes the study."""
    spec = SPEC.replace("steps = 600", "steps = 2000").replace(
        "repetitions = 10", "repetitions = 3"
    )
    (tmp_path / "spec.toml").write_text(spec)
    proc = _sweep(tmp_path, "s.sqlite", "--executor", "local", "--workers", "2")
    deadline = time.time() + 60
    while _count(tmp_path / "s.sqlite") < 2 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    err = proc.stderr.read().decode()
    assert "interrupted, run the same command again" in err, err
    assert "Traceback" not in err, err
    n = _check_consistent(tmp_path / "s.sqlite")
    assert 2 <= n < 12
    deadline = time.time() + 15
    while _group_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert _group_alive(proc.pid) == []
    again = _sweep(tmp_path, "s.sqlite", "--executor", "local", "--workers", "2")
    assert again.wait(timeout=120) == 0
    assert f"{n} already finished" in again.stderr.read().decode()
    assert _check_consistent(tmp_path / "s.sqlite") == 12


def test_ctrl_c_with_dask_closes_the_cluster(tmp_path):
    """Ctrl-C on `fa sweep --executor dask` (its own loopback LocalCluster): exit 130, no
    worker tracebacks, no process left behind."""
    pytest.importorskip("distributed")
    spec = SPEC.replace("steps = 600", "steps = 4000").replace(
        "repetitions = 10", "repetitions = 3"
    )
    (tmp_path / "spec.toml").write_text(spec)
    proc = _sweep(tmp_path, "s.sqlite", "--executor", "dask", "--workers", "2")
    deadline = time.time() + 90
    while _count(tmp_path / "s.sqlite") < 1 and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    err = proc.stderr.read().decode()
    assert "interrupted, run the same command again" in err and "Traceback" not in err, err
    deadline = time.time() + 15
    while _group_alive(proc.pid) and time.time() < deadline:
        time.sleep(0.2)
    assert _group_alive(proc.pid) == []
    assert 1 <= _check_consistent(tmp_path / "s.sqlite") < 12
