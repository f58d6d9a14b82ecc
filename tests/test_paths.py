"""The exact fast paths against the explicit engine: same trajectories (float64)."""

import numpy as np
import pytest
import torch

from feedback_alignment.activations import Activation
from feedback_alignment.errors import ConfigError
from feedback_alignment.twolayer.data import random_teacher, stack
from feedback_alignment.twolayer.engine import METRICS, Plateau, TwoLayerEnsemble
from feedback_alignment.twolayer.schedules import CutOff, ExpDecay

softplus = Activation("softplus", torch.nn.functional.softplus, torch.sigmoid)
N, D, P, SEEDS = 8, 20, 30, [3, 4, 5]


def run(path, act="tanh", rule="fa", shared=True, steps=1000, chunk=None, **kw):
    X, y = stack(random_teacher, SEEDS, n=N, d=D, p=P, activation="tanh")
    if shared:
        X, y = X[0], y[0]
    ens = TwoLayerEnsemble(D, P, seeds=SEEDS, activation=act)
    args = dict(lr=[0.02, 0.05, 0.01], lam=[0.0, 0.2, 0.05], steps=steps, record_every=100)
    args["metrics"] = METRICS
    args.update(kw)
    if "stop" in kw:
        args.pop("steps")
    h = ens.fit(X, y, rule=rule, path=path, chunk_members=chunk, **args)
    return ens, h


def assert_same(a, b, rtol=1e-12):
    (ea, ha), (eb, hb) = a, b
    np.testing.assert_array_equal(ha.steps, hb.steps)
    np.testing.assert_array_equal(ha.stop_step, hb.stop_step)
    # the direction of e = u - y loses digits as u -> y (relative error ~ eps |y| / |e|),
    # so the update cosine is compared only while e is well above that floor
    mse = hb.metrics["mse"]
    conditioned = mse >= 1e-6 * mse[:1]
    for m in METRICS:
        va, vb = ha.metrics[m], hb.metrics[m]
        ok = np.isfinite(vb) & (conditioned if m == "update_alignment" else True)
        # relative to each series' scale: an MSE driven to 1e-13 keeps only the digits
        # that survive the cancellation in e = u - y
        scale = np.abs(vb[ok]).max(initial=0.0)
        np.testing.assert_allclose(va[ok], vb[ok], rtol=rtol, atol=rtol * scale, err_msg=m)
    for x, y in ((ea.W, eb.W), (ea.beta, eb.beta)):
        assert float((x - y).norm() / y.norm()) < rtol


@pytest.mark.parametrize(
    "act",
    ["linear", "relu", "tanh", "sigmoid", "erf", softplus],
    ids=lambda a: getattr(a, "name", a),
)
@pytest.mark.parametrize("rule", ["fa", "bp", ["fa", "bp", "fa"]], ids=["fa", "bp", "mixed"])
def test_rowspace_equals_explicit(act, rule):
    ref = run("explicit", act, rule, w_decay=[0.0, 0.01, 0.002])
    got = run("rowspace", act, rule, w_decay=[0.0, 0.01, 0.002])
    assert got[1].path == "rowspace"
    assert_same(got, ref)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_linear_fa_equals_explicit(shared, wd):
    ref = run("explicit", "linear", shared=shared, w_decay=wd)
    got = run("auto", "linear", shared=shared, w_decay=wd)
    assert got[1].path == "linear_fa"
    assert_same(got, ref)


@pytest.mark.parametrize("path", ["rowspace", "linear_fa"])
@pytest.mark.parametrize(
    "sched",
    [CutOff(300), ExpDecay(0.999), lambda t: [1.0, 0.5 * (t < 500), 2.0]],
    ids=["cutoff", "exp", "callable"],
)
def test_paths_under_schedules_and_per_member_data(path, sched):
    ref = run("explicit", "linear", shared=False, lam_schedule=sched)
    assert_same(run(path, "linear", shared=False, lam_schedule=sched), ref)


@pytest.mark.parametrize("path", ["rowspace", "linear_fa"])
def test_paths_under_plateau_stopping(path):
    stop = Plateau(200, 100, 1e-3, 3000)
    ref = run("explicit", "linear", stop=stop)
    got = run(path, "linear", stop=stop)
    assert len(set(got[1].stop_step)) > 1  # the members stopped at different steps
    assert_same(got, ref)


@pytest.mark.parametrize("path", ["explicit", "rowspace"])
def test_chunking_never_changes_numbers(path):
    whole = run(path, "relu", steps=200)
    for chunk in (1, 2):
        assert_same(run(path, "relu", steps=200, chunk=chunk), whole, rtol=1e-13)


def test_continued_fit_and_new_data_rebases_the_row_space():
    X, y = random_teacher(N, D, P, "tanh", seed=0)
    X2, y2 = random_teacher(N, D, P, "tanh", seed=1)
    out = {}
    for path in ("explicit", "rowspace"):
        ens = TwoLayerEnsemble(D, P, seeds=[0, 1], activation="tanh")
        ens.fit(X, y, lr=0.05, steps=100, path=path, w_decay=0.01)
        h = ens.fit(X2, y2, lr=0.05, steps=100, path=path, w_decay=0.01, metrics=METRICS)
        out[path] = (ens, h)
    assert_same(out["rowspace"], out["explicit"])


def test_auto_choice_and_explicit_requests():
    X, y = random_teacher(N, D, P, "relu", seed=0)
    ens = TwoLayerEnsemble(D, P, seeds=[0], activation="relu")
    assert ens.fit(X, y, steps=1).path == "rowspace"  # n = 8 < d = 20
    Xw, yw = random_teacher(30, 5, P, "relu", seed=0)
    assert TwoLayerEnsemble(5, P, activation="relu").fit(Xw, yw, steps=1).path == "explicit"
    lin = TwoLayerEnsemble(D, P, activation="linear")
    assert lin.fit(X, y, steps=1).path == "linear_fa"
    assert lin.fit(X, y, steps=1, rule="bp").path == "rowspace"
    with pytest.raises(ConfigError, match="path 'linear_fa' needs the linear activation"):
        ens.fit(X, y, steps=1, path="linear_fa")
    with pytest.raises(ConfigError, match='path = "fast" is not accepted'):
        ens.fit(X, y, steps=1, path="fast")


@pytest.mark.parametrize(
    "path, act, rule, kernels",
    [
        ("explicit", "tanh", "fa", "torch"),
        ("explicit", "relu", "bp", "compiled"),
        ("rowspace", "relu", "fa", "torch"),
        ("rowspace", "tanh", "fa", "auto"),
        ("rowspace", "sigmoid", "bp", "compiled"),
        ("linear_fa", "linear", "fa", "torch"),
    ],
)
def test_every_path_runs_in_float32_close_to_float64(path, act, rule, kernels):
    X, y = random_teacher(N, D, P, "tanh", seed=0)
    out = {}
    for dtype in ("float64", "float32"):
        ens = TwoLayerEnsemble(D, P, seeds=SEEDS, activation=act, dtype=dtype)
        h = ens.fit(
            X.to(getattr(torch, dtype)),
            y.to(getattr(torch, dtype)),
            rule=rule,
            lr=0.02,
            lam=[0.0, 0.2, 0.05],
            w_decay=0.01,
            steps=200,
            record_every=50,
            path=path,
            kernels=kernels,
            metrics=METRICS,
        )
        assert h.path == path and ens.W.dtype == getattr(torch, dtype)
        out[dtype] = (ens, h)
    (e64, h64), (e32, h32) = out["float64"], out["float32"]
    for m in ("mse", "penalty", "alignment", "w_change", "beta_change"):
        assert np.isfinite(h32.metrics[m]).all(), m
        np.testing.assert_allclose(h32.metrics[m], h64.metrics[m], rtol=2e-3, atol=1e-6, err_msg=m)
    assert float((e32.W.double() - e64.W).norm() / e64.W.norm()) < 1e-5


# ---------------------------------------------------------------- keep_weights=False
NO_W_METRICS = ("mse", "penalty", "alignment", "delta_alignment", "beta_change")


@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared-X", "X-per-member"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_without_weights_the_row_space_run_is_the_same(act, shared, dtype):
    """keep_weights=False drops A (and Z_b): the trajectory of what is recorded is the
    explicit engine's, and W is refused, never wrong."""
    metrics = (*NO_W_METRICS, "update_alignment")
    kw = dict(lam_schedule=ExpDecay(0.999), metrics=metrics, kernels="torch")
    # float64: against the explicit engine; float32 (whose rounding differs between the
    # paths): against the row-space path that keeps W, whose recorded numbers must not move
    ref_path = "explicit" if dtype == "float64" else "rowspace"
    ref = run_dtype(ref_path, act, shared, dtype, **kw)
    got = run_dtype("rowspace", act, shared, dtype, keep_weights=False, **kw)
    assert got[1].path == "rowspace" and got[0]._path.A is None
    rtol = 1e-12 if dtype == "float64" else 1e-6
    for m in metrics:
        va, vb = got[1].metrics[m], ref[1].metrics[m]
        ok = np.isfinite(vb)
        # relative to the series' scale: a cosine near 0 keeps only its absolute digits
        scale = np.abs(vb[ok]).max(initial=0.0)
        np.testing.assert_allclose(va[ok], vb[ok], rtol=rtol, atol=rtol * scale, err_msg=m)
    assert float((got[0].beta - ref[0].beta).norm() / ref[0].beta.norm()) < rtol
    with pytest.raises(ConfigError, match="keep_weights=False keeps only Z = W X\\^T and beta"):
        got[0].W  # noqa: B018
    with pytest.raises(ConfigError, match="did not keep"):
        got[0].output(ref[0]._path.X if shared else ref[0]._path.X[0])


def run_dtype(path, act, shared, dtype, **kw):
    X, y = stack(random_teacher, SEEDS, n=N, d=D, p=P, activation="tanh")
    if shared:
        X, y = X[0], y[0]
    to = getattr(torch, dtype)
    ens = TwoLayerEnsemble(D, P, seeds=SEEDS, activation=act, dtype=dtype)
    h = ens.fit(
        X.to(to),
        y.to(to),
        lr=[0.02, 0.05, 0.01],
        lam=[0.0, 0.2, 0.05],
        steps=300,
        record_every=50,
        path=path,
        **{"metrics": METRICS, **kw},
    )
    return ens, h


def test_without_weights_what_needs_w_is_refused():
    X, y = random_teacher(N, D, P, "relu", seed=0)
    ens = TwoLayerEnsemble(D, P, seeds=[0], activation="relu")
    with pytest.raises(ConfigError, match="metric w_change needs the first-layer weights W"):
        ens.fit(X, y, steps=2, keep_weights=False, metrics=METRICS)
    with pytest.raises(ConfigError, match="metric penalty \\(with w_decay\\) needs"):
        ens.fit(X, y, steps=2, keep_weights=False, w_decay=0.1, metrics=("mse", "penalty"))
    with pytest.raises(ConfigError, match="metric w_sq_norm needs the first-layer weights W"):
        ens.fit(X, y, steps=2, keep_weights=False, metrics=("mse", "w_sq_norm"))
    with pytest.raises(
        ConfigError, match='keep_weights = "no" is not accepted; accepted: True or False'
    ):
        ens.fit(X, y, steps=2, keep_weights="no")
    h = ens.fit(X, y, steps=2, keep_weights=False, metrics=("mse",))
    with pytest.raises(ConfigError, match="a fit cannot continue from it"):
        ens.fit(X, y, steps=2)
    assert h.path == "rowspace"


@pytest.mark.parametrize("path, act", [("explicit", "relu"), ("linear_fa", "linear")])
def test_paths_that_hold_w_keep_it_exact_without_weights(path, act):
    ref = run(path, act, steps=200)
    got = run(path, act, steps=200, keep_weights=False, metrics=NO_W_METRICS)
    for m in NO_W_METRICS:
        np.testing.assert_array_equal(got[1].metrics[m], ref[1].metrics[m], err_msg=m)
    assert torch.equal(got[0].W, ref[0].W)
