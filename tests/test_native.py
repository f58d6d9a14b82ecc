"""The native (C++) row-space kernels (ReLU, tanh) against the torch ops they replace."""

import warnings

import numpy as np
import pytest
import torch

from feedback_alignment.twolayer import native
from feedback_alignment.twolayer.data import random_teacher
from feedback_alignment.twolayer.engine import TwoLayerEnsemble
from feedback_alignment.twolayer.schedules import ExpDecay

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C++ compiler here")

# big enough (K p n = 3 * 400 * 20 > 2^14) that the kernels run on every thread
N, D, P, SEEDS = 20, 60, 400, [0, 1, 2]


def fit(
    fuse,
    dtype="float64",
    rule="fa",
    steps=300,
    threads=None,
    chunk=None,
    lr=None,
    act="relu",
    **kw,
):
    X, y = random_teacher(N, D, P, act, seed=1)
    to = getattr(torch, dtype)
    ens = TwoLayerEnsemble(D, P, seeds=SEEDS, activation=act, dtype=dtype)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        h = ens.fit(
            X.to(to),
            y.to(to),
            rule=rule,
            lr=lr or [0.02, 0.05, 0.01],
            lam=[0.0, 0.2, 0.05],
            steps=steps,
            record_every=50,
            fuse=fuse,
            chunk_members=chunk,
            **kw,
        )
    finally:
        torch.set_num_threads(before)
    return ens, h


@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("rule", ["fa", "bp", ["fa", "bp", "fa"]], ids=["fa", "bp", "mixed"])
@pytest.mark.parametrize("w_decay", [0.0, 0.01])
def test_native_equals_torch_ops(act, rule, w_decay):
    kw = dict(act=act, rule=rule, w_decay=w_decay, lam_schedule=ExpDecay(0.999))
    e0, h0 = fit(False, **kw)
    e1, h1 = fit("auto", **kw)
    assert (h0.kernels, h1.kernels) == ("torch", "native") and h1.path == "rowspace"
    for m, v in h0.metrics.items():
        np.testing.assert_allclose(h1.metrics[m], v, rtol=1e-12, atol=1e-15, err_msg=m)
    assert float((e1.W - e0.W).norm() / e0.W.norm()) < 1e-12
    assert float((e1.beta - e0.beta).norm() / e0.beta.norm()) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_tanh_is_tanh_to_a_few_ulp(dtype):
    z = torch.cat(
        [
            torch.linspace(-25, 25, 100001, dtype=dtype),
            torch.randn(10000, dtype=dtype) * 1e-3,
            torch.tensor([0.0, 1e-30, -1e-30, float("inf"), -float("inf")], dtype=dtype),
        ]
    )
    t, d = native.tanh(z)
    ref = torch.tanh(z)
    eps = torch.finfo(dtype).eps
    tiny = torch.finfo(dtype).tiny
    assert float(((t - ref).abs() / ref.abs().clamp_min(tiny)).max()) <= 3 * eps
    assert float((d - (1 - ref * ref)).abs().max()) <= 3 * eps
    assert t[-2:].tolist() == [1.0, -1.0] and d[-2:].tolist() == [0.0, 0.0]
    nan = native.tanh(torch.tensor([float("nan")] * 3, dtype=dtype))
    assert torch.isnan(nan[0]).all()


def test_numbers_do_not_depend_on_threads_or_chunks():
    ref = fit("auto", dtype="float32", threads=2)
    for threads, chunk in [(1, None), (2, 1), (1, 2)]:
        got = fit("auto", dtype="float32", threads=threads, chunk=chunk)
        assert got[1].kernels == "native"
        for m, v in ref[1].metrics.items():
            np.testing.assert_array_equal(got[1].metrics[m], v, err_msg=f"{m} {threads} {chunk}")
        assert torch.equal(got[0].W, ref[0].W) and torch.equal(got[0].beta, ref[0].beta)


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_float32_close_to_float64(act):
    e32, h32 = fit("auto", dtype="float32", act=act)
    e64, h64 = fit("auto", act=act)
    assert h32.kernels == "native"
    for m in ("mse", "alignment", "w_change", "beta_change", "update_alignment"):
        np.testing.assert_allclose(h32.metrics[m], h64.metrics[m], rtol=2e-3, atol=1e-6)


def test_a_diverging_member_leaves_the_others_untouched():
    """A member whose Z turns inf/NaN must not reach the others' sums (shared buffers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e_bad, h_bad = fit("auto", lr=[0.02, 80.0, 0.01], steps=100)
    e_ok, h_ok = fit("auto", lr=[0.02, 0.05, 0.01], steps=100)
    assert h_bad.diverged == [1] and h_bad.kernels == "native"
    for k in (0, 2):
        np.testing.assert_array_equal(h_bad.metrics["mse"][:, k], h_ok.metrics["mse"][:, k])
        assert torch.equal(e_bad.beta[k], e_ok.beta[k])


def test_relu_nan_propagates_like_torch():
    """relu(NaN) is NaN in the native forward too, so a NaN pre-activation shows in u."""
    kern = native.RowSpaceKernels(torch.eye(3, dtype=torch.float64), "relu")
    Z = torch.zeros(1, 4, 3, dtype=torch.float64)
    Z[0, 2, 1] = float("nan")
    u = kern.forward(Z, torch.ones(1, 4, dtype=torch.float64))
    assert torch.isnan(u[0, 1]) and u[0, 0] == 0 and u[0, 2] == 0


def test_where_it_does_not_apply_the_torch_ops_run(monkeypatch):
    X, y = random_teacher(8, 20, 30, "tanh", seed=0)
    sigmoid = TwoLayerEnsemble(20, 30, activation="sigmoid").fit(X, y, steps=2)
    assert sigmoid.kernels == "torch"
    assert TwoLayerEnsemble(20, 30, activation="tanh").fit(X, y, steps=2).kernels == "native"
    relu = TwoLayerEnsemble(20, 30, activation="relu")
    assert relu.fit(X, y, steps=2).kernels == "native"
    assert relu.fit(X, y, steps=2, fuse=False).kernels == "torch"
    per_member = torch.stack([X, X])
    two = TwoLayerEnsemble(20, 30, seeds=[0, 1], activation="relu")
    assert two.fit(per_member, torch.stack([y, y]), steps=2).kernels == "torch"
    monkeypatch.setenv("FA_NATIVE", "0")
    assert relu.fit(X, y, steps=2).kernels == "torch"


def test_a_failed_build_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_failed", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing cached: must build
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    X, y = random_teacher(8, 20, 30, "relu", seed=0)
    ens = TwoLayerEnsemble(20, 30, activation="relu")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        h1 = ens.fit(X, y, steps=3)
        h2 = ens.fit(X, y, steps=3)
    assert h1.kernels == h2.kernels == "torch"
    msgs = [str(x.message) for x in w if "native row-space kernels unavailable" in str(x.message)]
    assert len(msgs) == 1 and "no-such-compiler" in msgs[0]
