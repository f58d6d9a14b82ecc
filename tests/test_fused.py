"""Fused (torch.compile) element-wise kernels against the plain ones: rounding only."""

import warnings

import numpy as np
import pytest
import torch

from feedback_alignment.activations import Activation
from feedback_alignment.errors import ConfigError
from feedback_alignment.twolayer.data import random_teacher
from feedback_alignment.twolayer.engine import METRICS, TwoLayerEnsemble
from feedback_alignment.twolayer.fused import Kernels


@pytest.mark.parametrize("path", ["explicit", "rowspace"])
@pytest.mark.parametrize("act", ["relu", "tanh"])
@pytest.mark.parametrize("w_decay", [0.0, 0.01])
def test_fused_matches_plain(path, act, w_decay):
    X, y = random_teacher(8, 12, 40, act, seed=0)
    out = {}
    for kernels in ("torch", "compiled"):
        ens = TwoLayerEnsemble(12, 40, seeds=[0, 1, 2], activation=act)
        h = ens.fit(
            X,
            y,
            rule=["fa", "bp", "fa"],
            lr=0.05,
            lam=0.1,
            w_decay=w_decay,
            steps=300,
            record_every=100,
            path=path,
            kernels=kernels,
            metrics=METRICS,
        )
        out[kernels] = (ens, h)
    (e0, h0), (e1, h1) = out["torch"], out["compiled"]
    assert h1.path == path
    assert e1._path.kernels.compiled  # compiled kernels ran (no fallback to the plain ones)
    assert (h0.kernels, h1.kernels) == ("torch", "compiled")
    for m in ("mse", "alignment", "w_change", "update_alignment"):
        np.testing.assert_allclose(h1.metrics[m], h0.metrics[m], rtol=1e-10, err_msg=m)
    assert float((e1.W - e0.W).norm() / e0.W.norm()) < 1e-12


def test_compile_failure_falls_back_with_a_warning():
    def bad(z):  # a compiled kernel, then the activation itself, that fail when called
        raise RuntimeError("no compiler here")

    act = Activation("broken", bad, bad)
    k = Kernels(act, compiled=True)
    k._fwd = bad  # stand in for a compiler that fails at first call
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="no compiler here"):
            k.outputs(torch.zeros(1, 2, 3), torch.zeros(1, 2))
    assert not k.compiled and any("torch.compile failed" in str(x.message) for x in w)


def test_bad_kernels_value():
    X, y = random_teacher(8, 12, 40, "relu", seed=0)
    match = 'kernels = "yes" is not accepted; accepted: "auto", "compiled", "native", "torch"'
    with pytest.raises(ConfigError, match=match):
        TwoLayerEnsemble(12, 40).fit(X, y, steps=1, kernels="yes")
    with pytest.raises(ConfigError, match="kernels = true is not accepted"):
        TwoLayerEnsemble(12, 40).fit(X, y, steps=1, kernels=True)  # the old fuse=True


def test_compiled_where_nothing_is_compiled_is_refused():
    X, y = random_teacher(8, 12, 40, "linear", seed=0)
    with pytest.raises(ConfigError, match="kernels='compiled' cannot run on path 'linear_fa'"):
        TwoLayerEnsemble(12, 40, activation="linear").fit(X, y, steps=1, kernels="compiled")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compile_friendly_tanh_is_tanh_to_a_few_ulp(dtype):
    from feedback_alignment.activations import get_activation

    _tanh_for_compile, _tanh_deriv_for_compile = get_activation("tanh").compile_form

    scales = (1e-30, 1e-12, 1e-6, 1e-2, 1.0, 5.0, 30.0, 1e30)
    z = torch.cat(
        [
            torch.randn(20000, dtype=dtype, generator=torch.Generator().manual_seed(0)) * s
            for s in scales
        ]
    )
    z = torch.cat([z, torch.tensor([0.0, -0.0, float("inf"), -float("inf")], dtype=dtype)])
    ref = torch.tanh(z)
    got = _tanh_for_compile(z)
    eps = torch.finfo(dtype).eps
    assert ((got - ref).abs() <= 4 * eps * ref.abs()).all()
    d = _tanh_deriv_for_compile(z)
    assert ((d - (1 - ref * ref)).abs() <= 8 * eps).all()
    assert torch.isnan(_tanh_for_compile(torch.tensor([float("nan")], dtype=dtype))).all()
