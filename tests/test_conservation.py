"""The exact conservation law of the discrete FA/BP step (twolayer/conservation.py).

References: a plain per-unit loop written from the update equations (the law per hidden
unit), the engine's own trajectories read through the public API (the recorded terms),
and tanh, for which psi(z) != z psi'(z) and the law must fail by a measurable amount.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from feedback_alignment.activations import Activation
from feedback_alignment.errors import ConfigError
from feedback_alignment.twolayer.conservation import (
    LAW_METRICS,
    TERMS,
    decompose,
    law_residuals,
)
from feedback_alignment.twolayer.engine import TwoLayerEnsemble

pytestmark = pytest.mark.usefixtures("one_thread")

N, D, P = 10, 30, 48
STEPS = 1000
LAMS = [0.0, 0.1, 0.2]  # member 0: no decay; 1: constant; 2: scheduled
LR = {"linear": 1e-3, "relu": 1e-2, "leaky": 1e-2, "tanh": 1e-2}


def _leaky_fn(z):
    return torch.where(z > 0, z, 0.1 * z)


def _leaky_deriv(z):
    return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, 0.1))


LEAKY = Activation("leaky", _leaky_fn, _leaky_deriv)  # psi(z) = z psi'(z), not relu_like


def schedule(t):
    """Per member: 1, 1 and a slow oscillation (scheduled lambda, one fit for all three)."""
    return np.array([1.0, 1.0, 0.5 + 0.5 * math.cos(t / 40)])


def data(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, D, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(N, generator=g, dtype=torch.float64).to(dtype)
    return X, y


def run(
    act, rule, path, kernels="torch", w_decay=0.0, dtype="float64", steps=STEPS, seeds=(1, 2, 3)
):
    X, y = data(dtype=getattr(torch, dtype))
    name = act if isinstance(act, str) else act.name
    ens = TwoLayerEnsemble(
        D, P, seeds=list(seeds), activation=act, dtype=dtype, init_scale={"W": 0.3}
    )
    kw = dict(rule=rule, lr=LR[name], lam=LAMS[: len(seeds)], w_decay=w_decay)
    sched = schedule if len(seeds) == 3 else None
    h = ens.fit(
        X,
        y,
        **kw,
        lam_schedule=sched,
        steps=steps,
        record_every=1,
        metrics=LAW_METRICS + ("mse",),
        path=path,
        kernels=kernels,
    )
    assert h.path == path
    res, scale = law_residuals(h, lam_schedule=sched, **kw)
    return h, res, scale


# every path of the engine, linear / relu / leaky relu, FA and BP
CASES = [
    ("linear", "explicit", "torch"),
    ("linear", "rowspace", "torch"),
    ("linear", "linear_fa", "torch"),
    ("relu", "explicit", "torch"),
    ("relu", "rowspace", "torch"),
    ("relu", "rowspace", "native"),
    (LEAKY, "explicit", "torch"),
    (LEAKY, "rowspace", "torch"),
]


@pytest.mark.parametrize("rule", ["fa", "bp"])
@pytest.mark.parametrize(("act", "path", "kernels"), CASES)
def test_law_holds_on_every_path(act, path, kernels, rule):
    if path == "linear_fa" and rule == "bp":
        pytest.skip("the linear_fa path is FA only")
    # native kernels run under "auto" where they apply, can be built and are faster
    h, res, scale = run(act, rule, path, "auto" if kernels == "native" else kernels)
    if kernels == "native" and h.kernels != "native":
        pytest.skip(f"native kernels did not run here (kernels {h.kernels!r})")
    assert h.status == ["done"] * 3
    rel = np.abs(res) / scale
    assert rel.max() < 1e-12, rel.max()
    # summed over the 1000 steps (the form the decomposition uses)
    assert np.abs(res.sum(0)).max() / scale.max() < 1e-12
    # the check has power: each correction term is at least 1000 times the tolerance
    m = h.metrics
    assert (0.5 * m["w_step_sq"][:-1] / scale).max() > 1e-9
    if rule == "fa":
        lam_term = LR[getattr(act, "name", act)] * 0.1 * np.abs(m["b_beta"][:-1, 1])
        assert (lam_term / scale[:, 1]).max() > 1e-9
    else:
        assert (0.5 * m["beta_step_sq"][:-1] / scale).max() > 1e-9


@pytest.mark.parametrize("rule", ["fa", "bp"])
@pytest.mark.parametrize(
    ("act", "path"), [("relu", "explicit"), ("relu", "rowspace"), ("linear", "linear_fa")]
)
def test_law_with_first_layer_decay(act, path, rule):
    """With w_decay the law carries the factor k = 1 - lr wd (docs/theory.md); the form
    without it does not hold, so k is needed."""
    if path == "linear_fa" and rule == "bp":
        pytest.skip("the linear_fa path is FA only")
    h, res, scale = run(act, rule, path, w_decay=0.5, steps=300)
    assert (np.abs(res) / scale).max() < 1e-12
    kw = dict(rule=rule, lr=LR[act], lam=LAMS, lam_schedule=schedule)
    res0, scale0 = law_residuals(h, **kw)  # w_decay left out
    assert (np.abs(res0) / scale0).max() > 1e-6


@pytest.mark.parametrize("rule", ["fa", "bp"])
def test_law_fails_for_tanh(rule):
    """tanh(z) != z tanh'(z): the same check must fail, by far more than its tolerance."""
    h, res, scale = run("tanh", rule, "explicit", steps=200)
    rel = np.abs(res) / scale
    assert rel.max() > 1e-6, rel.max()


def test_law_in_float32():
    h, res, scale = run("relu", "fa", "rowspace", dtype="float32", steps=300)
    assert (np.abs(res) / scale).max() < 1e-5


def test_recorded_terms_match_the_weights():
    """Each recorded term against the weights themselves, read before and after one step
    through the public API (explicit path, and row-space / linear_fa, whose W is formed
    only for this check)."""
    X, y = data()
    for act, path, rule in [
        ("relu", "explicit", "bp"),
        ("relu", "rowspace", "fa"),
        ("linear", "linear_fa", "fa"),
    ]:
        ens = TwoLayerEnsemble(D, P, seeds=[4, 5], activation=act, init_scale={"W": 0.3})
        ens.fit(X, y, rule=rule, lr=LR[act], steps=3, metrics=("mse",), path=path)  # move off W0
        W0, beta0 = ens.W.clone(), ens.beta.clone()
        h = ens.fit(
            X,
            y,
            rule=rule,
            lr=LR[act],
            lam=0.1,
            steps=1,
            record_every=1,
            metrics=LAW_METRICS,
            path=path,
        )
        W1, beta1 = ens.W, ens.beta
        m = {k: v[0] for k, v in h.metrics.items()}
        np.testing.assert_allclose(m["w_sq_norm"], W0.square().sum((1, 2)), rtol=1e-12)
        np.testing.assert_allclose(m["b_beta"], (ens.b * beta0).sum(1), rtol=1e-12)
        np.testing.assert_allclose(m["beta_sq_norm"], beta0.square().sum(1), rtol=1e-12)
        np.testing.assert_allclose(m["w_step_sq"], (W1 - W0).square().sum((1, 2)), rtol=1e-9)
        np.testing.assert_allclose(m["beta_step_sq"], (beta1 - beta0).square().sum(1), rtol=1e-9)
        np.testing.assert_allclose(h.metrics["w_sq_norm"][1], W1.square().sum((1, 2)), rtol=1e-12)


@pytest.mark.parametrize("wd", [0.0, 0.3])
@pytest.mark.parametrize("rule", ["fa", "bp"])
def test_law_per_unit_in_a_plain_loop(rule, wd):
    """Per hidden unit r, in a loop written from the paper's update equations (no engine):
    Q_r (FA) or P_r (BP) moves exactly as the law says, every unit, every step."""
    g = torch.Generator().manual_seed(9)
    n, d, p, lr, lam = 8, 12, 20, 0.02, 0.3
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    W = 0.4 * torch.randn(p, d, generator=g, dtype=torch.float64)
    beta, b = torch.randn(p, generator=g, dtype=torch.float64), torch.randn(p, generator=g)
    b = b.double()
    k = 1 - lr * wd
    worst = 0.0
    for _ in range(300):
        Z = W @ X.T
        e = beta @ torch.relu(Z) / math.sqrt(p) - y
        gvec = (2 / n) * e / math.sqrt(p)
        fb = b if rule == "fa" else beta
        S = lr * (fb[:, None] * (Z > 0).double() * gvec) @ X  # gradient part of W's step
        dbeta = -lr * (torch.relu(Z) @ gvec + lam * beta)
        W_new, beta_new = k * W - S, beta + dbeta
        w2, w2n, s2 = (W * W).sum(1), (W_new * W_new).sum(1), (S * S).sum(1)
        if rule == "fa":
            left = 0.5 * w2n - k * b * beta_new
            right = k**2 * 0.5 * w2 - k * (1 - lr * lam) * b * beta + 0.5 * s2
        else:
            left = 0.5 * w2n - k * 0.5 * beta_new**2
            right = k**2 * 0.5 * w2 - k * (1 - 2 * lr * lam) * 0.5 * beta**2
            right = right - k * 0.5 * dbeta**2 + 0.5 * s2
        worst = max(worst, float(((left - right).abs() / left.abs().clamp_min(1e-3)).max()))
        W, beta = W_new, beta_new
    assert worst < 1e-12


def test_decomposition_adds_up_and_w_growth_pays_for_the_change():
    """lambda = 0: b.beta(t) - b.beta(0) = W-growth - step correction to 1e-10 relative
    (here and at the paper's widths; docs/theory.md); lambda > 0 adds its decay term."""
    X, y = data()
    ens = TwoLayerEnsemble(D, 400, seeds=[6, 6], activation="relu")
    dec = decompose(
        ens, X, y, steps=600, lr=1e-2, lam=[0.0, 0.05], record_every=50, path="rowspace"
    )
    assert set(dec.terms) == set(TERMS)
    assert list(dec.steps) == list(range(0, 601, 50))
    total = sum(dec.terms.values())
    np.testing.assert_allclose(total, dec.b_beta, rtol=0, atol=1e-10 * np.abs(dec.b_beta).max())
    change = dec.b_beta[-1, 0] - dec.b_beta[0, 0]
    explained = dec.terms["w_growth"][-1, 0] + dec.terms["step_correction"][-1, 0]
    assert abs(change - explained) / abs(change) < 1e-10
    assert np.nanmax(dec.relative_residual()[1:]) < 1e-10
    # the step correction is not negligible at this size, so the check above needs it
    assert abs(dec.terms["step_correction"][-1, 0]) / abs(change) > 1e-4
    assert np.all(dec.terms["weight_decay"][:, 0] == 0)
    assert np.all(dec.terms["first_layer_decay"] == 0)
    assert dec.terms["weight_decay"][-1, 1] != 0
    # the alignment is the numerator over the norms
    assert np.all(np.isfinite(dec.alignment))


def test_decomposition_with_first_layer_decay_and_schedule():
    X, y = data()
    ens = TwoLayerEnsemble(D, 200, seeds=[1, 2], activation="linear")
    dec = decompose(
        ens, X, y, steps=400, lr=1e-3, lam=0.2, lam_schedule=("cutoff", 150), w_decay=0.5
    )
    assert dec.history.path == "linear_fa"
    assert np.abs(dec.residual).max() < 1e-10 * np.abs(dec.b_beta).max()
    assert np.all(dec.terms["first_layer_decay"][-1] > 0)
    wd_term = dec.terms["weight_decay"]
    np.testing.assert_array_equal(wd_term[-1], wd_term[151])  # lambda cut off at 150


def test_bad_input():
    X, y = data()
    ens = TwoLayerEnsemble(D, 20, seeds=[0])
    with pytest.raises(ConfigError, match="steps = 0 is not accepted; accepted: an integer >= 1"):
        decompose(ens, X, y, steps=0, lr=1e-2)
    with pytest.raises(ConfigError, match="record_every"):
        decompose(ens, X, y, steps=3, lr=1e-2, record_every=0)
    h = ens.fit(X, y, lr=1e-2, steps=10, record_every=5, metrics=LAW_METRICS)
    with pytest.raises(ConfigError, match="record of every step"):
        law_residuals(h, rule="fa", lr=1e-2, lam=0.0)
    with pytest.raises(ConfigError, match="rule"):
        law_residuals(h, rule="kp", lr=1e-2, lam=0.0)


def test_report_figure_rows_add_up(tmp_path):
    """The E2 conservation figure's data (reproduce/conservation.py): the plotted terms add
    up to the plotted b.beta, and without decay W-growth + step correction is the change."""
    pytest.importorskip("matplotlib")
    from feedback_alignment.reproduce import conservation as rc
    from feedback_alignment.reproduce.figures import conservation_figure

    res = {}
    for act in rc.ACTS:
        members = rc.run_activation(act, p=60, steps=40, base_seed=0)["members"]
        keys = rc.member_keys({"activation": act})
        res[act] = rc.figure_data(act, [{**m, **k} for m, k in zip(members, keys, strict=True)])
    for r in res.values():
        assert r["lam0_gap"] < 1e-10
        for row in r["rows"]:
            total = sum(row[t] for t in rc.DRAWN)
            assert abs(total - row["b_beta"]) <= 1e-10 * max(1.0, abs(row["b_beta"]))
        assert {row["lam"] for row in r["rows"]} == set(r["lams"])
    paths = conservation_figure(res, tmp_path / "conservation", 60)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size for p in paths)
