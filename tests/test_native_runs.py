"""Runs of quiet steps in one native call (engine.py, RowSpacePath.run) give, to the bit,
the numbers of the same fit taken a step at a time: every array, metric, stop and
divergence step, in float32 and float64, for FA, backprop (fb = beta, formed in the run)
and both mixed."""

import numpy as np
import pytest
import torch

from feedback_alignment.errors import ConfigError
from feedback_alignment.twolayer import engine, native
from feedback_alignment.twolayer.data import random_teacher, stack
from feedback_alignment.twolayer.engine import Plateau, TwoLayerEnsemble
from feedback_alignment.twolayer.paths import RowSpacePath

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C++ compiler here")

N, D, P = 12, 30, 70  # 70 units: a short block after the whole ones


@pytest.fixture(autouse=True)
def _native(monkeypatch):
    monkeypatch.setenv("FA_NATIVE", "1")


def _fit(step_by_step, monkeypatch, act="relu", dtype="float64", shared=False, **kw):
    """(ensemble, history, how many runs were taken) of one fit."""
    if shared:
        X, y = random_teacher(N, D, P, act, seed=4)
    else:
        X, y = stack(random_teacher, [4, 5, 6], n=N, d=D, p=P, activation=act)
    to = getattr(torch, dtype)
    calls = []
    real = RowSpacePath.run

    def counted(self, sl, count, *a):
        calls.append(count)
        return real(self, sl, count, *a)

    monkeypatch.setattr(RowSpacePath, "run", counted)
    if step_by_step:  # the reference: never a run
        monkeypatch.setattr(engine, "_quiet_steps", lambda *a: 0)
    ens = TwoLayerEnsemble(D, P, seeds=[1, 2, 3], activation=act, dtype=dtype)
    opts = {"rule": "fa", "lr": [0.05, 0.1, 0.02], "lam": [0.0, 0.05, 0.2], "steps": 260}
    opts |= {"path": "rowspace", "kernels": "native", "record_every": 40}
    h = ens.fit(X.to(to), y.to(to), **(opts | kw))
    monkeypatch.undo()
    return ens, h, calls


def _same(a, b):
    (ea, ha, _), (eb, hb, _) = a, b
    for x, z in ((ea.beta, eb.beta), (ea._path.Z, eb._path.Z)):  # NaN where one diverged
        torch.testing.assert_close(x, z, rtol=0, atol=0, equal_nan=True)
    assert np.array_equal(ha.steps, hb.steps)
    for m in ha.metrics:
        assert np.array_equal(ha.metrics[m], hb.metrics[m], equal_nan=True), m
    for m in ha.final:
        assert np.array_equal(ha.final[m], hb.final[m], equal_nan=True), m
    assert np.array_equal(ha.stop_step, hb.stop_step)
    assert np.array_equal(ha.diverged_at, hb.diverged_at)
    assert ha.status == hb.status


CASES = {
    "relu": {},
    "tanh float32": {"act": "tanh", "dtype": "float32"},
    "sigmoid": {"act": "sigmoid"},
    "linear, shared X": {"act": "linear", "shared": True},
    "with A, weight decay": {"keep_weights": True, "w_decay": [0.0, 0.1, 0.02]},
    "no A, float32, shared X": {"keep_weights": False, "dtype": "float32", "shared": True},
    "record_steps": {"record_steps": [3, 4, 77], "record_every": None},
    "plateau, authors": {"stop": Plateau(90, 30, 1e-3, 400, "authors"), "steps": None},
    "plateau, after_min": {"stop": Plateau(90, 30, 1e-3, 400, "after_min"), "steps": None},
    "divergence checks": {"divergence_every": 7},
    "bp": {"rule": "bp"},
    "fa, bp and fa, float32": {"rule": ["fa", "bp", "fa"], "dtype": "float32"},
    "bp with dropout and weight decay": {"rule": "bp", "dropout": 0.3, "w_decay": 0.05},
    "dropout": {"dropout": [0.0, 0.3, 0.6]},
    "dropout, tanh float32, shared X": {
        "dropout": 0.5,
        "act": "tanh",
        "dtype": "float32",
        "shared": True,
    },
}


@pytest.mark.parametrize("case", CASES)
def test_runs_give_the_numbers_of_single_steps(monkeypatch, case):
    runs = _fit(False, monkeypatch, **CASES[case])
    assert runs[2] and max(runs[2]) > 1  # runs were taken
    single = _fit(True, monkeypatch, **CASES[case])
    assert not single[2]
    _same(runs, single)


def test_a_member_diverging_inside_a_run_is_found_at_its_step(monkeypatch):
    kw = {"lr": [0.05, 40.0, 0.02], "divergence_every": 100, "steps": 300}
    runs = _fit(False, monkeypatch, **kw)
    single = _fit(True, monkeypatch, **kw)
    _same(runs, single)
    assert runs[1].status == ["done", "diverged", "done"]
    assert runs[1].diverged_at[1] % 100 != 0  # inside a run, not at a check


def test_no_runs_where_the_kernels_cannot_form_fb_or_lam_changes(monkeypatch):
    """A rule of one's own (fb neither b nor beta) and a lam schedule: a step at a time."""
    from feedback_alignment.twolayer.rules import register_rule, unregister_rule
    from feedback_alignment.twolayer.schedules import ExpDecay

    register_rule("half_b", lambda b, beta: b / 2)
    try:
        for kw in ({"rule": ["fa", "half_b", "bp"]}, {"lam_schedule": ExpDecay(0.99)}):
            _, h, calls = _fit(False, monkeypatch, **kw)
            assert h.kernels == "native" and not calls, kw
    finally:
        unregister_rule("half_b")


def test_no_run_is_longer_than_the_monitor_allows(monkeypatch):
    _, h, calls = _fit(False, monkeypatch, divergence_every=9, record_every=None, steps=100)
    assert max(calls) == 8 and sum(calls) + 12 == 100  # 11 checks (0, 9, ..., 90) and the last


@pytest.mark.parametrize("fb_beta", [None, [False, True, False]])
def test_the_kernels_steps_equal_their_updates(fb_beta):
    """RowSpaceKernels.steps against update() called count times with the engine's e (and
    fb_lr = beta lr afresh for the members flagged in fb_beta, as backprop's)."""
    torch.manual_seed(0)
    flags = None if fb_beta is None else torch.tensor(fb_beta)
    for dt in (torch.float32, torch.float64):
        k, p, n, count = 3, 37, 9, 5
        X = torch.randn(k, n, 20, dtype=dt)
        kern = native.RowSpaceKernels(X @ X.transpose(1, 2), "tanh")
        Z0 = native.column_layout(torch.randn(k, p, n, dtype=dt))
        beta0, y = torch.randn(k, p, dtype=dt), torch.randn(k, n, dtype=dt)
        fb_lr, lr = torch.randn(k, p, dtype=dt) * 0.01, torch.tensor([0.1, 0.05, 0.0], dtype=dt)
        lam, keep = (
            torch.tensor([0.0, 0.1, 0.3], dtype=dt),
            torch.tensor([1.0, 0.99, 0.9], dtype=dt),
        )
        c_p = 0.7 / p**0.5
        Z, beta = Z0.clone(), beta0.clone()
        u = kern.forward(Z, beta)
        es = []
        for _ in range(count):
            e = u / p**0.5 - y
            es.append(e)
            f = fb_lr if flags is None else torch.where(flags[:, None], beta * lr[:, None], fb_lr)
            u = kern.update(Z, None, e * c_p, f, keep, beta, lr, lam)
        Z2, beta2 = Z0.clone(), beta0.clone()
        u2, e2 = kern.steps(
            count, Z2, None, kern.forward(Z2, beta2), y, c_p, fb_lr, keep, beta2, lr, lam,
            fb_beta=flags,
        )  # fmt: skip
        assert torch.equal(torch.stack(es), e2) and torch.equal(u, u2)
        assert torch.equal(Z, Z2) and torch.equal(beta, beta2)


def test_the_kernels_steps_refuse_a_bad_count():
    X = torch.randn(1, 4, 6, dtype=torch.float64)
    kern = native.RowSpaceKernels(X @ X.transpose(1, 2), "relu")
    Z = native.column_layout(torch.zeros(1, 8, 4, dtype=torch.float64))

    def zeros(*shape):
        return torch.zeros(*shape, dtype=torch.float64)

    one = torch.ones(1, dtype=torch.float64)
    args = (Z, None, zeros(1, 4), zeros(1, 4), 0.5, zeros(1, 8), None, zeros(1, 8), one, one)
    for bad in (0, -3, 2.5, True, 2**21):
        with pytest.raises(ConfigError, match="steps count"):
            kern.steps(bad, *args)
    with pytest.raises(ConfigError, match=r"Z must be \(k, p, 4\), got \(8, 4\)"):
        kern.steps(1, Z[0], *args[1:])
    with pytest.raises(ConfigError, match="Z must be"):
        kern.update(Z[0], None, *args[2:4], None, *args[7:])
