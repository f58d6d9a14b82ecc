"""Two `fa sweep` processes on one store split the runs (leases in the store) instead of
each running all of them, and each run is stored once (issue 23)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from feedback_alignment.experiments import Store, run_study
from feedback_alignment.experiments.store import lease_owner


def _ids(n):
    return [f"r{i}" for i in range(n)]


def _store(tmp_path) -> Store:
    return Store(tmp_path / "s.sqlite")


def test_a_claimed_run_is_not_claimed_again(tmp_path):
    with _store(tmp_path) as st:
        a, b = lease_owner(), lease_owner()
        assert a != b
        assert st.claim(_ids(4)[:2], a) == ["r0", "r1"]
        assert st.claim(_ids(4), b) == ["r2", "r3"]  # a is alive (this very process)
        assert st.claim(_ids(4), a) == ["r0", "r1"]  # its own leases, renewed
        assert st.leased_elsewhere(b) == {"r0", "r1"}
        st.release(a)
        assert st.claim(_ids(4), b) == _ids(4)
        assert st.leased_elsewhere(a) == set(_ids(4))


def test_a_dead_owners_lease_is_free_at_once(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    ghost = f"{socket.gethostname()}:{dead}:00000000"
    with _store(tmp_path) as st:
        st.claim(["r0"], ghost)
        assert st.leased_elsewhere(lease_owner()) == set()
        assert st.claim(["r0"], lease_owner()) == ["r0"]


def test_another_hosts_lease_holds_until_it_expires(tmp_path):
    far = "elsewhere.example:1:abcd"
    with _store(tmp_path) as st:
        st.claim(["r0", "r1"], far, seconds=3600)
        st.db.execute("UPDATE leases SET expires = 0 WHERE run_id = 'r1'")  # not renewed
        me = lease_owner()
        assert st.claim(["r0", "r1"], me) == ["r1"]
        assert st.leased_elsewhere(me) == {"r0"}


def test_finished_runs_are_never_claimed(tmp_path):
    from conftest import TINY_SPEC

    path = tmp_path / "s.sqlite"
    assert run_study(TINY_SPEC, path, executor="inline").ok
    with Store(path) as st:
        ids = sorted(st.run_ids())
        assert st.claim(ids, lease_owner()) == []
        # run_study released its leases when it ended
        assert st.db.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


SPEC = """
[study]
name = "lease"
repetitions = 4
seed = 5
pack = 1

[fixed]
n = 10
d = 20
steps = 3000
# every step recorded: each step is taken from Python (the native kernels take the
# steps between two records in one call), so a fit lasts long enough for the timing below
record_every = 1
activation = "tanh"
metrics = ["mse"]

[grid]
p = [16, 32]
lam = [0.0, 0.05]
"""
TOTAL = 16


def test_two_sweeps_on_one_store_split_the_runs(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC)
    cmd = [
        sys.executable,
        "-m",
        "feedback_alignment.cli",
        "sweep",
        "spec.toml",
        "--store",
        "s.sqlite",
        "--executor",
        "inline",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the store exists before both start, as when a second process joins a running sweep
    first = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while not (tmp_path / "s.sqlite").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env)
    outs = []
    for proc in (first, second):
        assert proc.wait(timeout=600) == 0
        outs.append(proc.stderr.read())
    ran = [int(o.split(" ran now")[0].rsplit(", ", 1)[-1]) for o in outs]
    assert sum(ran) >= TOTAL and all(r > 0 for r in ran), outs  # both took part
    assert sum(ran) == TOTAL, outs  # no run was run twice
    with Store(tmp_path / "s.sqlite", create=False) as st:
        runs = st.runs()
        assert len(runs) == TOTAL == len({r["run_id"] for r in runs})
        assert all(r["attempts"] == 1 and r["status"] == "done" for r in runs)
        assert Path(tmp_path / "s.sqlite").exists()
