"""The batched two-layer engine against independent references (float64 unless said)."""

import math
import warnings

import numpy as np
import pytest
import torch

from feedback_alignment.activations import Activation
from feedback_alignment.errors import ConfigError
from feedback_alignment.twolayer import reference
from feedback_alignment.twolayer.data import linear_teacher, random_teacher, stack
from feedback_alignment.twolayer.engine import METRICS, Plateau, TwoLayerEnsemble
from feedback_alignment.twolayer.schedules import CutOff, ExpDecay

softplus = Activation("softplus", torch.nn.functional.softplus, torch.sigmoid)
ACTIVATIONS = ["linear", "relu", "tanh", "sigmoid", "erf", softplus]


def autograd_step(W, beta, X, y, act, lr, lam, wd, loss):
    """One gradient step of the regularised loss, computed by torch.autograd."""
    W = W.clone().requires_grad_()
    beta = beta.clone().requires_grad_()
    u = act(X @ W.T) @ beta / math.sqrt(W.shape[0])
    e = u - y
    L = (e * e).mean() if loss == "mse" else 0.5 * (e * e).sum()
    L = L + 0.5 * lam * (beta * beta).sum() + 0.5 * wd * (W * W).sum()
    gW, gb = torch.autograd.grad(L, (W, beta))
    return (W - lr * gW).detach(), (beta - lr * gb).detach()


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: getattr(a, "name", a))
@pytest.mark.parametrize("loss", ["mse", "sse"])
def test_reference_bp_step_equals_autograd(act, loss):
    """The oracle (twolayer/reference.py, against which test_reference.py checks every
    path and kernel) is itself the gradient step autograd computes."""
    X, y = random_teacher(12, 7, 30, "tanh", seed=3)
    ens = TwoLayerEnsemble(7, 30, seeds=[5], activation=act)
    W0, b0 = ens.W[0], ens.beta[0]
    c = 2 / 12 if loss == "mse" else 1.0
    W1, b1 = reference.step(
        W0, b0, ens.b[0], X, y, psi=act, eta=0.05, lam=0.3, w_decay=0.1, rule="bp", c=c
    )
    W2, b2 = autograd_step(W0, b0, X, y, ens.activation, 0.05, 0.3, 0.1, loss)
    assert rel(W1, W2) < 1e-12
    assert rel(b1, b2) < 1e-12


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_fa_with_feedback_equal_to_beta_reproduces_bp(act):
    X, y = random_teacher(15, 8, 40, act, seed=2)
    bp = TwoLayerEnsemble(8, 40, seeds=[4], activation=act)
    fa = TwoLayerEnsemble(8, 40, seeds=[4], activation=act)
    hb = bp.fit(X, y, rule="bp", lr=0.02, lam=0.1, steps=60, record_every=1)
    mses = []
    for _ in range(60):
        fa.b = fa.beta.clone()  # feedback = forward weights at every step
        mses.append(fa.fit(X, y, rule="fa", lr=0.02, lam=0.1, steps=1).metrics["mse"][0, 0])
    assert rel(fa.W, bp.W) < 1e-12 and rel(fa.beta, bp.beta) < 1e-12
    np.testing.assert_allclose(mses, hb.metrics["mse"][1:, 0], rtol=1e-12)


@pytest.mark.parametrize("shared", [True, False])
def test_member_alone_equals_member_in_ensemble(shared):
    seeds = [11, 12, 13]
    X, y = stack(random_teacher, seeds, n=10, d=6, p=25, activation="relu")
    if shared:
        X, y = X[0], y[0]
    lam, lr = [0.0, 0.1, 0.3], [0.01, 0.02, 0.03]
    ens = TwoLayerEnsemble(6, 25, seeds=seeds, activation="relu")
    rules, three = ["fa", "bp", "fa"], METRICS[:3]
    h = ens.fit(X, y, rule=rules, lr=lr, lam=lam, steps=200, record_every=50, metrics=three)
    for k in range(3):
        one = TwoLayerEnsemble(6, 25, seeds=[seeds[k]], activation="relu")
        hk = one.fit(
            X if shared else X[k],
            y if shared else y[k],
            rule=rules[k],
            lr=lr[k],
            lam=lam[k],
            steps=200,
            record_every=50,
            metrics=three,
        )
        assert rel(one.W[0], ens.W[k]) < 1e-12
        for m in three:
            np.testing.assert_allclose(hk.metrics[m][:, 0], h.metrics[m][:, k], rtol=1e-12)


def test_fit_records_mse_and_alignment_by_default():
    """fit's metrics default is the sweep field's (twolayer.schema.FIELDS["metrics"])."""
    X, y = linear_teacher(10, 5, seed=0)
    h = TwoLayerEnsemble(5, 20, seeds=[0, 1]).fit(X, y, lr=0.01, steps=3, record_every=1)
    assert list(h.metrics) == ["mse", "alignment"] == list(h.final)


def test_same_seed_same_numbers_and_float32_close_to_float64():
    X, y = linear_teacher(20, 10, seed=0)
    runs = [
        TwoLayerEnsemble(10, 50, seeds=[0, 1], activation="relu", dtype=dt).fit(
            X, y, lr=0.01, lam=0.1, steps=100
        )
        for dt in ("float64", "float64", "float32")
    ]
    assert np.array_equal(runs[0].final["mse"], runs[1].final["mse"])
    np.testing.assert_allclose(runs[2].final["mse"], runs[0].final["mse"], rtol=1e-3)


def test_recorded_metrics_against_direct_formulas():
    X, y = random_teacher(10, 6, 30, "tanh", seed=0)
    ens = TwoLayerEnsemble(6, 30, seeds=[0], activation="tanh")
    W0, beta0, b = ens.W[0].clone(), ens.beta[0].clone(), ens.b[0].clone()
    h = ens.fit(
        X, y, rule="fa", lr=0.05, lam=0.2, w_decay=0.1, steps=30, record_steps=[30], metrics=METRICS
    )
    W, beta = ens.W[0], ens.beta[0]
    f = {m: h.final[m][0] for m in METRICS}
    cos = torch.nn.functional.cosine_similarity
    e = torch.tanh(X @ W.T) @ beta / math.sqrt(30) - y
    assert f["mse"] == pytest.approx(float((e**2).mean()), rel=1e-12)
    pen = 0.1 * (beta**2).sum() + 0.05 * (W**2).sum()
    assert f["penalty"] == pytest.approx(float(pen), rel=1e-12)
    assert f["alignment"] == pytest.approx(float(cos(beta, b, dim=0)), rel=1e-12)
    assert f["delta_alignment"] == pytest.approx(float(cos(beta - beta0, b, dim=0)), rel=1e-12)
    assert f["beta_change"] == pytest.approx(float((beta - beta0).norm() / beta0.norm()), rel=1e-12)
    assert f["w_change"] == pytest.approx(float((W - W0).norm() / W0.norm()), rel=1e-12)
    # the FA first-layer update against the true gradient of the MSE (autograd)
    Wg = W.clone().requires_grad_()
    ee = torch.tanh(X @ Wg.T) @ beta / math.sqrt(30) - y
    (g_true,) = torch.autograd.grad((ee**2).mean(), Wg)
    D = (1 - torch.tanh(X @ W.T) ** 2) * ee.detach()[:, None]
    g_fa = (b[:, None] * D.T) @ X
    want = cos(g_fa.flatten(), g_true.flatten(), dim=0)
    assert f["update_alignment"] == pytest.approx(float(want), rel=1e-10)


def test_schedules_cutoff_and_exp_decay():
    X, y = linear_teacher(10, 5, seed=0)
    for sched, factor in ((CutOff(3), lambda t: float(t < 3)), (ExpDecay(0.5), lambda t: 0.5**t)):
        ens = TwoLayerEnsemble(5, 12, seeds=[0], activation="linear")
        ref = TwoLayerEnsemble(5, 12, seeds=[0], activation="linear")
        ens.fit(X, y, rule="bp", lr=0.01, lam=0.4, lam_schedule=sched, steps=6)
        for t in range(6):
            ref.fit(X, y, rule="bp", lr=0.01, lam=0.4 * factor(t), steps=1)
        assert rel(ens.beta, ref.beta) < 1e-13
    # a user callable giving one value per member
    ens = TwoLayerEnsemble(5, 12, seeds=[0, 1], activation="linear")
    ens.fit(X, y, lr=0.01, lam=1.0, lam_schedule=lambda t: [0.0, 0.5], steps=3)


def test_plateau_stops_members_separately_and_freezes_them():
    X, y = linear_teacher(10, 20, seed=0)
    ens = TwoLayerEnsemble(20, 200, seeds=[0, 1], activation="linear")
    # member 0 learns 10x faster, so it plateaus first
    h = ens.fit(X, y, lr=[1e-2, 1e-3], stop=Plateau(200, 100, 1e-4, 20000), record_every=100)
    s0, s1 = h.stop_step
    assert s0 < s1 <= 20000 and s0 >= 200 and s0 % 100 == 0
    i = list(h.steps).index(s0)
    # frozen after stopping: its MSE stays exactly what it was at its stop
    assert np.all(h.metrics["mse"][i:, 0] == h.metrics["mse"][i, 0])
    assert h.metrics["mse"][-1, 1] < h.metrics["mse"][i, 1]
    j = list(h.steps).index(s0 - 100)
    assert abs(h.metrics["mse"][i, 0] - h.metrics["mse"][j, 0]) < 1e-4
    assert Plateau.paper(800).min_steps == 10101  # rint(5000 sqrt(800) // 14)


def test_divergent_member_is_reported_and_others_finish():
    X, y = linear_teacher(10, 20, seed=0)
    ens = TwoLayerEnsemble(20, 100, seeds=[0, 1, 2], activation="relu")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        h = ens.fit(X, y, lr=[1e-2, 50.0, 1e-2], steps=300, record_every=100)
    assert h.status == ["done", "diverged", "done"]
    assert 0 < h.diverged_at[1] < 300 and h.diverged == [1]
    assert f"diverged at step {h.diverged_at[1]}" in h.messages[1] and "lr=50" in h.messages[1]
    assert any("member 1" in str(x.message) for x in w)
    assert np.isfinite(h.final["mse"][[0, 2]]).all()
    assert (h.final["mse"][[0, 2]] < h.metrics["mse"][0, [0, 2]] * 0.1).all()


@pytest.mark.parametrize("every, window", [(1, 256), (37, 256), (1000, 4)])
def test_divergence_step_is_the_first_bad_step(monkeypatch, every, window):
    """Divergence is judged at sync steps from a ring buffer of MSEs: the step reported
    must still be the first step whose MSE is non-finite or blown up, whatever the
    spacing of the checks (window 4 < divergence_every forces extra syncs)."""
    import feedback_alignment.twolayer.monitor as monitor

    monkeypatch.setattr(monitor, "_MSE_WINDOW", window)
    X, y = linear_teacher(10, 20, seed=0)
    ens = TwoLayerEnsemble(20, 100, seeds=[0, 1, 2], activation="relu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = ens.fit(
            X,
            y,
            lr=[1e-2, 0.3, 1e-2],
            steps=300,
            record_every=1,
            blowup=1e3,
            divergence_every=every,
        )
    mse = h.metrics["mse"][:, 1]
    bad = ~np.isfinite(mse) | (mse > 1e3 * mse[0])
    assert h.diverged == [1] and bad.any() and h.diverged_at[1] > 10  # not at once
    assert h.diverged_at[1] == h.steps[np.argmax(bad)]
    assert h.stop_step[1] >= h.diverged_at[1]


def test_mixed_rules_and_continued_fit():
    X, y = linear_teacher(10, 5, seed=0)
    ens = TwoLayerEnsemble(5, 30, seeds=[0, 0], activation="tanh")
    ens.fit(X, y, rule=["bp", "fa"], lr=0.05, steps=10)
    h = ens.fit(X, y, rule=["bp", "fa"], lr=0.05, steps=10, record_every=5, metrics=METRICS)
    assert list(h.steps) == [0, 5, 10] and ens.t == 20
    assert h.final["update_alignment"][0] == pytest.approx(1.0, abs=1e-12)
    assert abs(h.final["update_alignment"][1]) < 0.999


# ------------------------------------------------------------------ bad input
def _ens(**kw):
    return TwoLayerEnsemble(5, 10, seeds=[0, 1], **kw)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: TwoLayerEnsemble(5, 0), "p = 0 is not accepted; accepted: an integer >= 1"),
        (lambda: TwoLayerEnsemble(5, 10, seeds=[]), "empty"),
        (lambda: TwoLayerEnsemble(5, 10, seeds=[-1]), "seed = -1 is not accepted"),
        (lambda: _ens(activation="swish"), 'activation = "swish" is not accepted'),
        (lambda: _ens(dtype="float16"), "dtype 'float16'"),
        (lambda: _ens(device="cuda:7"), "device 'cuda:7'"),
        (lambda: _ens(init_scale={"V": 1}), "unknown key.*'V'"),
    ],
)
def test_bad_construction(make, match):
    if "cuda" in match and torch.cuda.device_count() > 7:
        pytest.skip("that many GPUs present")
    with pytest.raises(ConfigError, match=match):
        make()


X5, Y5 = linear_teacher(8, 5, seed=0)
X5_NAN = X5.clone()
X5_NAN[2, 1] = float("nan")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"X": torch.zeros(8, 4)}, "4 features but the networks take d = 5"),
        ({"y": torch.zeros(7)}, "y has 7 targets but X has n = 8"),
        ({"X": torch.zeros(3, 8, 5)}, "3 data sets but the ensemble has K = 2"),
        (
            {"X": X5_NAN},
            r"X holds a non-finite value nan at index \(2, 1\)",
        ),
        ({"y": torch.full((8,), np.inf)}, "y holds a non-finite value inf"),
        ({"lr": -0.1}, "lr = -0.1 is not accepted; accepted: a finite number > 0"),
        ({"lam": [0.1, -0.2]}, r"lam\[1\] = -0.2 is not accepted; accepted: a finite number >= 0"),
        ({"lam": [0.1, 0.2, 0.3]}, "one per member"),
        ({"rule": "dfa"}, 'rule = "dfa" is not accepted; accepted: "bp", "fa"'),
        ({"loss": "l1"}, 'loss = "l1" is not accepted'),
        ({"steps": -3}, r"steps = -3 is not accepted; accepted: an integer in \[0, 1e9\]"),
        ({"metrics": ["accuracy"]}, 'metric = "accuracy" is not accepted'),
        ({"stop": Plateau(10)}, "exactly one of steps or stop"),
        (
            {"divergence_every": 0},
            "divergence_every = 0 is not accepted; accepted: a positive integer",
        ),
        ({"path": "fast"}, 'path = "fast" is not accepted'),
        ({"chunk_members": 0}, "chunk_members = 0 is not accepted; accepted: a positive integer"),
    ],
)
def test_bad_fit_input(kwargs, match):
    args = {"X": X5, "y": Y5, "steps": 5, **kwargs}
    X, y = args.pop("X"), args.pop("y")
    with pytest.raises(ConfigError, match=match) as exc:
        _ens().fit(X, y, **args)
    assert "\n" not in str(exc.value)


def test_fit_and_the_ensemble_take_their_defaults_from_the_schema():
    """One declaration (twolayer/schema.py): the sweep spec's defaults are fit's defaults."""
    import inspect

    from feedback_alignment.activations import paper_lr
    from feedback_alignment.twolayer.schema import FIELDS

    params = {
        **inspect.signature(TwoLayerEnsemble.fit).parameters,
        **inspect.signature(TwoLayerEnsemble.__init__).parameters,
    }
    shared = set(params) & set(FIELDS)
    assert {"rule", "lr", "lam", "lam_schedule", "w_decay", "loss", "record_every"} <= shared
    assert {"activation", "init_scale", "dtype", "device"} <= shared
    # Python gives no default size and no default run length (steps or a Plateau object,
    # where a spec names its stopping rule); fit records every metric, a sweep's store only
    # mse and alignment unless asked (docs/twolayer.md)
    assert "check_every" not in params  # the plateau's name; fit's check is divergence_every
    for name in shared - {"d", "p", "steps", "stop", "metrics"}:
        assert params[name].default == FIELDS[name].default, name
    # lr = "paper" is the authors' step for the activation; record_every = 0 the last step
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, generator=g)
    for act in ("linear", "tanh"):
        a, b = (TwoLayerEnsemble(5, 7, seeds=[1, 2], activation=act) for _ in range(2))
        ha = a.fit(X, y, steps=20)
        hb = b.fit(X, y, steps=20, lr=paper_lr(act), record_every=None)
        assert torch.equal(a.beta, b.beta) and torch.equal(a.W, b.W)
        assert ha.steps.tolist() == hb.steps.tolist() == [20]
