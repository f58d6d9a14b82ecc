"""Bad-input catalogue, issue 23: a native kernel cache that checks itself.

A cached library that is truncated (loading it used to kill every ReLU or tanh fit with
SIGBUS, exit 135), empty, garbage, unrecorded, or not a regular file is rebuilt once, with
one warning saying so, and the fit runs native; a compiler that exits 0 having written
nothing is an error for that process (torch ops, one warning) and nothing is cached; a
self-check cache that is garbage or a FIFO is measured again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from feedback_alignment import TwoLayerEnsemble
from feedback_alignment.twolayer import native
from feedback_alignment.twolayer.data import random_teacher
from feedback_alignment.twolayer.native import selfcheck

pytestmark = pytest.mark.skipif(
    native.unavailable() is not None, reason=f"no native kernels here: {native.unavailable()}"
)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A cache directory holding one verified build of this machine's kernels."""
    root = tmp_path_factory.mktemp("xdg")
    env = {**os.environ, "XDG_CACHE_HOME": str(root)}
    code = "from feedback_alignment.twolayer import native; assert native.library() is not None"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600)
    return root


@pytest.fixture(scope="module")
def built_here(tmp_path_factory) -> Path:
    """As ``built``, by this process (the cache key holds the OpenMP runtime this process
    has loaded, which a fresh process may not share)."""
    root = tmp_path_factory.mktemp("xdg-here")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("XDG_CACHE_HOME", str(root))
        m.setattr(native, "_lib", None)
        m.setattr(native, "_failed", None)
        assert native.library() is not None
    return root


@pytest.fixture
def cache(built_here, tmp_path, monkeypatch) -> Path:
    """A private copy of ``built_here``, used by this process (nothing loaded yet)."""
    root = tmp_path / "xdg"
    shutil.copytree(built_here, root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_failed", None)
    monkeypatch.setattr(selfcheck, "_memo", {})
    return root / "feedback-alignment" / "native"


def _lib(cache: Path) -> Path:
    (so,) = cache.glob("rowspace-*.so")
    return so


def _fit():
    X, y = random_teacher(8, 20, 30, "relu", seed=0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        h = TwoLayerEnsemble(20, 30, activation="relu").fit(X, y, steps=3, kernels="native")
    return h, [str(x.message) for x in w if "native" in str(x.message)]


def _record(so: Path) -> dict:
    return json.loads(so.with_name(so.name + ".json").read_text())


DAMAGES = {
    "truncated": (lambda so: os.truncate(so, so.stat().st_size // 2), "bytes, built as"),
    "empty": (lambda so: so.write_bytes(b""), "0 bytes, built as"),
    "garbage": (
        lambda so: so.write_bytes(b"\x7fELF" + os.urandom(so.stat().st_size - 4)),
        "SHA-256",
    ),
    "no-record": (lambda so: so.with_name(so.name + ".json").unlink(), "no record"),
    "bad-record": (lambda so: so.with_name(so.name + ".json").write_text("{garbage"), "unreadable"),
    "fifo": (lambda so: (so.unlink(), os.mkfifo(so)), "not a regular file"),
}


@pytest.mark.parametrize("kind", DAMAGES)
def test_every_damage_to_the_cache_is_seen_before_loading(cache, kind):
    damage, why = DAMAGES[kind]
    so = _lib(cache)
    assert native._cache_problem(so) is None
    damage(so)
    assert why in native._cache_problem(so)


# a rebuild compiles the kernels (about 15 s): two kinds end to end, the others are the
# same path once the problem is seen (test above)
@pytest.mark.parametrize("kind", ["truncated", "fifo"])
def test_a_bad_cached_library_is_rebuilt_once(cache, kind):
    damage, why = DAMAGES[kind]
    so = _lib(cache)
    good = so.read_bytes()
    damage(so)
    h, msgs = _fit()
    assert h.kernels == "native"
    assert len(msgs) == 1 and "rebuilding it" in msgs[0] and why in msgs[0], msgs
    rec = _record(so)
    assert so.stat().st_size == rec["size"] == len(good)
    native._lib, native._failed = None, None  # a new process: verified, loaded, no warning
    h, msgs = _fit()
    assert h.kernels == "native" and msgs == []


def test_a_compiler_that_writes_nothing_caches_nothing(cache, tmp_path, monkeypatch):
    shutil.rmtree(cache)
    monkeypatch.setenv("CXX", shutil.which("true") or "/bin/true")
    X, y = random_teacher(8, 20, 30, "relu", seed=0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        h = TwoLayerEnsemble(20, 30, activation="relu").fit(X, y, steps=3)
    msgs = [str(x.message) for x in w if "native" in str(x.message)]
    assert h.kernels == "torch"
    assert len(msgs) == 1 and "wrote nothing (nothing was cached)" in msgs[0], msgs
    assert not list(cache.glob("rowspace-*"))  # no empty library left to load next time


@pytest.mark.parametrize("content", [b"{truncated", b"[1, 2]", b'{"k": {"native_s": -1}}'])
def test_a_bad_self_check_file_is_measured_again(cache, content):
    f = selfcheck.cache_file()
    f.write_bytes(content)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        v = selfcheck.verdict("relu", __import__("torch").float64, True, 2, 64, 10)
    assert v is None or v.startswith("self-check: native")
    data = json.loads(f.read_text())
    assert data and all(selfcheck._valid(e) for e in data.values())


def test_a_self_check_file_that_is_a_fifo_does_not_block(cache):
    f = selfcheck.cache_file()
    f.unlink(missing_ok=True)
    os.mkfifo(f)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        selfcheck.verdict("relu", __import__("torch").float64, True, 2, 64, 10)
    assert any("self-check cache" in str(x.message) for x in w)
    assert f.is_file()  # replaced by a regular file of verdicts


def test_fa_sweep_with_a_truncated_library(built, tmp_path):
    """The issue's case: under fa sweep with the local executor every run failed
    (BrokenProcessPool, the workers killed by SIGBUS); now the library is rebuilt."""
    root = tmp_path / "xdg"
    shutil.copytree(built, root)
    so = _lib(root / "feedback-alignment" / "native")
    os.truncate(so, so.stat().st_size // 3)
    (tmp_path / "spec.toml").write_text(
        '[study]\nname = "sigbus"\nrepetitions = 2\nseed = 1\npack = 1\n'
        '[fixed]\nn = 8\nd = 20\nsteps = 30\nactivation = "relu"\n'
        "[grid]\np = [30, 40]\n"
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "feedback_alignment.cli",
            "sweep",
            "spec.toml",
            "--store",
            "s.sqlite",
            "--executor",
            "local",
            "--workers",
            "2",
            "--no-progress",
        ],
        cwd=tmp_path,
        env={**os.environ, "XDG_CACHE_HOME": str(root), "FA_NATIVE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    assert "4 done, 0 diverged, 0 failed" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert so.stat().st_size == _record(so)["size"]
