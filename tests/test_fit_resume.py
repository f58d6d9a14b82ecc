"""A fit killed mid-run and resumed from its last saved state gives exactly the numbers of
an uninterrupted fit: every path and kernel kind, float32 and float64, dropout, both
plateau rules (twolayer/fitstate.py)."""

import io

import numpy as np
import pytest
import torch

from feedback_alignment.errors import ConfigError
from feedback_alignment.twolayer import native
from feedback_alignment.twolayer.data import random_teacher
from feedback_alignment.twolayer.engine import Plateau, TwoLayerEnsemble


class Killed(Exception):
    """Stands for SIGKILL: the fit stops where it is, its memory is lost."""


class MemoryCheckpoint:
    """Saves into bytes (through torch.save/torch.load with weights_only=True, as a file
    would) at the first chance at or past every ``every`` steps; raises Killed at the
    ``kill_after``-th save. The engine asks ``due`` after every step, or after a run of
    steps with nothing to record or check (taken in one call, engine.py), so the step is
    read from the state: ``killed_at`` is the step of the killing save."""

    def __init__(self, every: int, kill_after: int | None = None):
        self.every, self.kill_after = every, kill_after
        self.blob, self.saves, self.next, self.killed_at = None, 0, every, None

    def load(self):
        if self.blob is None:
            return None
        return torch.load(io.BytesIO(self.blob), weights_only=True)

    def due(self) -> bool:
        return True  # save() picks the steps

    def save(self, state: dict) -> None:
        if state["t"] < self.next:
            return
        self.next = (state["t"] // self.every + 1) * self.every
        buf = io.BytesIO()
        torch.save(state, buf)
        self.blob = buf.getvalue()
        self.saves += 1
        if self.kill_after is not None and self.saves >= self.kill_after:
            self.killed_at = state["t"]
            raise Killed


def _data(K, n, d, seed=3):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(K, n, d, generator=g, dtype=torch.float64)
    y = torch.randn(K, n, generator=g, dtype=torch.float64)
    return X, y


def _fit(make, X, y, checkpoint=None, **kw):
    ens = make()
    h = ens.fit(X, y, checkpoint=checkpoint, **kw)
    return ens, h


def _killed_and_resumed(make, X, y, every: int, kill_after: int, **kw):
    """(uninterrupted fit, fit killed after ``kill_after`` saves every ``every`` steps and
    resumed in a new ensemble, as a fresh process would): each (ensemble, history)."""
    ck = MemoryCheckpoint(every=every, kill_after=kill_after)
    with pytest.raises(Killed):
        _fit(make, X, y, checkpoint=ck, **kw)
    ck.kill_after = None
    whole, resumed = _fit(make, X, y, **kw), _fit(make, X, y, checkpoint=ck, **kw)
    assert resumed[1].extra["resumed_at"] == ck.killed_at
    return whole, resumed


def _same(a, b):
    (ens_a, h_a), (ens_b, h_b) = a, b
    assert np.array_equal(h_a.steps, h_b.steps)
    assert h_a.metrics.keys() == h_b.metrics.keys()
    for m in h_a.metrics:
        assert np.array_equal(h_a.metrics[m], h_b.metrics[m], equal_nan=True), m
        assert np.array_equal(h_a.final[m], h_b.final[m], equal_nan=True), m
    assert np.array_equal(h_a.stop_step, h_b.stop_step)
    assert h_a.status == h_b.status and h_a.kernels == h_b.kernels and h_a.path == h_b.path
    assert torch.equal(ens_a.beta, ens_b.beta)
    assert ens_a.t == ens_b.t


CASES = {
    # name: (activation, fit options, ensemble options)
    "explicit": ("tanh", {"path": "explicit", "kernels": "torch"}),
    "rowspace": ("relu", {"path": "rowspace", "kernels": "torch"}),
    "rowspace-noweights": (
        "tanh",
        {"path": "rowspace", "kernels": "torch", "keep_weights": False},
    ),
    "linear_fa": ("linear", {"path": "linear_fa"}),
    "dropout-explicit": ("relu", {"path": "explicit", "dropout": 0.3}),
    "dropout-rowspace": ("tanh", {"path": "rowspace", "dropout": [0.2, 0.0, 0.5, 0.1]}),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_killed_and_resumed_fit_equals_uninterrupted(case, dtype):
    act, opts = CASES[case]
    K, n, d, p = 4, 12, 30, 40
    X, y = _data(K, n, d)

    def make():
        return TwoLayerEnsemble(d, p, seeds=[1, 2, 3, 4], activation=act, dtype=dtype)

    metrics = ("mse", "alignment", "beta_change")
    if opts.get("keep_weights", True):
        metrics += ("w_change",)
    kw = {
        "rule": ["fa", "bp", "fa", "fa"] if act != "linear" else "fa",
        "lr": 0.05,
        "lam": [0.0, 0.01, 0.1, 0.0],
        "steps": 230,
        "record_every": 20,
        "metrics": metrics,
        **opts,
    }
    whole, resumed = _killed_and_resumed(make, X, y, 37, 3, **kw)  # killed past 111
    _same(whole, resumed)
    if opts.get("keep_weights", True):
        assert torch.equal(whole[0].W, resumed[0].W)


@pytest.mark.parametrize("checks", ["authors", "after_min"])
def test_resume_keeps_the_stopping_rule_state(checks):
    """Members stop at different steps by a plateau; a kill between the checks resumes
    with the same settled/checkpoint MSEs, so every member stops where it would have."""
    K, n, d, p = 4, 10, 20, 30
    X, y = _data(K, n, d, seed=5)

    def make():
        return TwoLayerEnsemble(d, p, seeds=[7, 8, 9, 10], activation="relu", dtype="float64")

    stop = Plateau(120, 40, 1e-2, 2000, checks)
    kw = {"rule": "fa", "lr": [0.02, 0.05, 0.1, 0.2], "lam": 0.01, "stop": stop}
    whole, resumed = _killed_and_resumed(make, X, y, 53, 2, **kw)
    assert len(set(whole[1].stop_step.tolist())) > 1  # the members stop apart
    _same(whole, resumed)


@pytest.mark.skipif(native.unavailable() is not None, reason="no native kernels here")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resume_on_the_native_kernels(dtype):
    K, n, d, p = 3, 16, 40, 64
    X, y = _data(K, n, d, seed=11)

    def make():
        return TwoLayerEnsemble(d, p, seeds=[4, 5, 6], activation="tanh", dtype=dtype)

    kw = {"rule": "fa", "lr": 0.05, "lam": 0.01, "steps": 150, "record_every": 25}
    kw["metrics"] = ("mse", "alignment", "beta_change")
    kw |= {"path": "rowspace", "kernels": "native", "keep_weights": False}
    whole, resumed = _killed_and_resumed(make, X, y, 41, 2, **kw)
    assert whole[1].kernels == "native"
    _same(whole, resumed)


def test_a_state_of_another_fit_is_refused():
    X, y = _data(2, 8, 10)
    ck = MemoryCheckpoint(every=10, kill_after=1)
    with pytest.raises(Killed):
        TwoLayerEnsemble(10, 20, seeds=[1, 2]).fit(X, y, lr=0.05, steps=50, checkpoint=ck)
    ck.kill_after = None
    with pytest.raises(ConfigError, match="another fit") as exc:  # another seed
        TwoLayerEnsemble(10, 20, seeds=[1, 3]).fit(X, y, lr=0.05, steps=50, checkpoint=ck)
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="another fit"):  # another lr
        TwoLayerEnsemble(10, 20, seeds=[1, 2]).fit(X, y, lr=0.04, steps=50, checkpoint=ck)


def test_resume_on_the_compiled_kernels():
    """torch.compile's kernels, at test_fused's shapes (compiled once per process)."""
    X, y = random_teacher(8, 12, 40, "relu", seed=0)

    def make():
        return TwoLayerEnsemble(12, 40, seeds=[0, 1, 2], activation="relu", dtype="float64")

    kw = {"rule": ["fa", "bp", "fa"], "lr": 0.05, "lam": 0.1, "steps": 300, "record_every": 100}
    kw |= {"path": "rowspace", "kernels": "compiled"}
    whole, resumed = _killed_and_resumed(make, X, y, 70, 2, **kw)
    assert whole[1].kernels == "compiled"
    _same(whole, resumed)
    assert torch.equal(whole[0].W, resumed[0].W)


@pytest.mark.skipif(native.unavailable() is not None, reason="no native kernels here")
def test_a_state_whose_kernels_cannot_run_here_starts_afresh(monkeypatch):
    """A state saved on the native kernels, resumed where they cannot run (another
    machine, here a patched check): a warning, and the fit starts from step 0."""
    X, y = _data(2, 8, 10)
    kw = {"lr": 0.05, "steps": 50, "metrics": ("mse",), "path": "rowspace"}
    monkeypatch.setenv("FA_NATIVE", "1")  # "auto" takes the native kernels
    ck = MemoryCheckpoint(every=20, kill_after=1)
    with pytest.raises(Killed):
        TwoLayerEnsemble(10, 20, seeds=[1, 2], activation="relu").fit(X, y, checkpoint=ck, **kw)
    assert ck.load()["kernels"] == "native"
    ck.kill_after = None
    monkeypatch.setattr(native, "why_not", lambda *a: "no C++ compiler on this machine")
    with pytest.warns(RuntimeWarning, match="starts afresh"):
        h = TwoLayerEnsemble(10, 20, seeds=[1, 2], activation="relu").fit(X, y, checkpoint=ck, **kw)
    whole = TwoLayerEnsemble(10, 20, seeds=[1, 2], activation="relu").fit(X, y, **kw)
    assert h.kernels == whole.kernels == "torch" and "resumed_at" not in h.extra
    assert np.array_equal(h.metrics["mse"], whole.metrics["mse"])
