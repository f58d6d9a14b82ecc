"""The README's commands do their own set-up: `make data` finds or installs Fashion-MNIST,
or stops with one line naming the command to run; `.ci/run` is `make test` and nothing else."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make(*args, env=None):
    env = {**os.environ, **(env or {})}
    env.pop("MAKEFLAGS", None)  # under `make test`, do not inherit the outer make's flags
    env.pop("MAKELEVEL", None)
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(ROOT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_data_present_is_a_quiet_no_op(tmp_path):
    res = _make("data", f"FASHION_DIR={tmp_path}", "INSTALL_AS=none")
    assert (res.returncode, res.stdout, res.stderr) == (0, "", "")


def test_data_missing_without_root_or_sudo_stops_with_one_line(tmp_path):
    res = _make("data", f"FASHION_DIR={tmp_path / 'missing'}", "INSTALL_AS=none")
    assert res.returncode != 0 and res.stdout == ""
    assert res.stderr.count("\n") == 1
    assert "'sudo apt-get install dataset-fashion-mnist'" in res.stderr
    assert str(tmp_path / "missing") in res.stderr


def test_an_unprivileged_user_without_sudo_is_detected(tmp_path):
    """`id -u` says 1000 and sudo asks for a password: make must not try to install."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for name, body in {"id": "echo 1000", "sudo": "exit 1", "apt-get": "exit 0"}.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    env = {"PATH": f"{bin_}:{os.environ['PATH']}"}
    res = _make("data", f"FASHION_DIR={tmp_path / 'missing'}", env=env)
    assert res.returncode != 0 and res.stderr.count("\n") == 1
    assert "sudo apt-get install dataset-fashion-mnist" in res.stderr
    # and with passwordless sudo it installs through sudo (the fake apt-get installs nothing)
    (bin_ / "sudo").write_text('#!/bin/sh\n[ "$1" = -n ] && shift\n"$@"\n')
    res = _make("data", f"FASHION_DIR={tmp_path / 'missing'}", env=env)
    assert "installing the Debian package dataset-fashion-mnist" in res.stdout
    assert res.returncode != 0 and "did not create" in res.stderr


def test_test_target_sets_up_and_fetches_the_data_itself():
    dry = _make("-n", "test", "VENV=/nonexistent-venv", "FASHION_DIR=/", "INSTALL_AS=none")
    assert dry.returncode == 0
    lines = dry.stdout.splitlines()
    assert any("-m venv /nonexistent-venv" in x for x in lines)
    assert lines[-1].endswith("-m pytest -q")


def test_ci_runs_make_test_and_nothing_else():
    lines = [
        x.strip()
        for x in (ROOT / ".ci" / "run").read_text().splitlines()
        if x.strip() and not x.lstrip().startswith("#")
    ]
    assert lines == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "make test"]
