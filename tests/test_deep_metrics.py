"""Alignment metrics against hand computations, for every rule including DFA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.deep import convert, rule_layers
from feedback_alignment.deep.metrics import ErrorRecorder, alignment, weight_alignment

DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: 1e-9, torch.float32: 1e-4}


pytestmark = pytest.mark.usefixtures("one_thread")


def setup(dtype, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 4)
    ).to(dtype)
    x = torch.randn(8, 12, dtype=dtype)
    y = torch.randint(0, 4, (8,))
    return net, x, y


def np_cos(a, b):
    a, b = np.ravel(np.asarray(a, float)), np.ravel(np.asarray(b, float))
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def hand_deltas(net, x, y):
    """Backprop by hand-written chain rule on the plain net: error at each Linear output."""
    w = [net[i].weight.detach().double().numpy() for i in (0, 2, 4)]
    b = [net[i].bias.detach().double().numpy() for i in (0, 2, 4)]
    xs = x.double().numpy()
    a1 = xs @ w[0].T + b[0]
    h1 = np.maximum(a1, 0)
    a2 = h1 @ w[1].T + b[1]
    h2 = np.maximum(a2, 0)
    z = h2 @ w[2].T + b[2]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    e3 = (p - np.eye(4)[y.numpy()]) / len(y)
    return xs, (a1, h1, a2, h2), e3, w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rule", ["fa", "usf", "frsf", "kp", "wm"])
def test_metrics_match_hand_computation(rule, dtype):
    net, x, y = setup(dtype)
    model = convert(net, rule, seed=5)
    got = alignment(model, x, y)
    xs, (a1, h1, a2, h2), e3, w = hand_deltas(net, x, y)
    B = [m.feedback_weight().double().numpy() for _, m in rule_layers(model)]
    # rule: e2 = (e3 B3) * relu'(a2); e1 = (e2 B2) * relu'(a1)
    e2 = (e3 @ B[2]) * (a2 > 0)
    e1 = (e2 @ B[1]) * (a1 > 0)
    rule_g = [e1.T @ xs, e2.T @ h1, e3.T @ h2]
    t2 = (e3 @ w[2]) * (a2 > 0)
    t1 = (t2 @ w[1]) * (a1 > 0)
    true_g = [t1.T @ xs, t2.T @ h1, e3.T @ h2]
    for k, name in enumerate(["0", "2", "4"]):
        row = got[name]
        c = np_cos(w[k], B[k])
        assert abs(row["cosine"] - c) < TOL[dtype]
        assert abs(row["angle_deg"] - math.degrees(math.acos(c))) < 1e3 * TOL[dtype]
        assert abs(row["norm_ratio"] - np.linalg.norm(B[k]) / np.linalg.norm(w[k])) < TOL[dtype]
        conc = float(np.mean(np.sign(B[k]) == np.sign(w[k])))
        assert abs(row["sign_concordance"] - conc) < 1e-12
        assert abs(row["update_cosine"] - np_cos(rule_g[k], true_g[k])) < TOL[dtype]
    # hidden-error alignment: signal sent by layer k given its own output error
    errs = {"2": e2, "4": e3}
    for name, k in (("2", 1), ("4", 2)):
        eb, ew = errs[name] @ B[k], errs[name] @ w[k]
        per = np.sum(eb * ew, 1) / np.linalg.norm(eb, axis=1) / np.linalg.norm(ew, axis=1)
        assert abs(got[name]["error_alignment"] - per.mean()) < TOL[dtype]
    assert math.isnan(got["0"]["error_alignment"])  # nothing is sent below the first layer
    if rule in ("usf", "frsf"):
        assert all(got[n]["sign_concordance"] == 1.0 for n in got)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dfa_metrics_match_hand_computation(dtype):
    net, x, y = setup(dtype)
    model = convert(net, "dfa", seed=5)
    got = alignment(model, x, y)
    xs, (a1, h1, a2, h2), e3, w = hand_deltas(net, x, y)
    D = [m.feedback.detach().double().numpy() for _, m in rule_layers(model)]
    e2 = (e3 @ D[2]) * (a2 > 0)
    e1 = (e3 @ D[1]) * (a1 > 0)
    rule_g = [e1.T @ xs, e2.T @ h1, e3.T @ h2]
    t2 = (e3 @ w[2]) * (a2 > 0)
    t1 = (t2 @ w[1]) * (a1 > 0)
    true_g = [t1.T @ xs, t2.T @ h1, e3.T @ h2]
    refs = [w[2] @ w[1] @ w[0], w[2] @ w[1], w[2]]
    true_in = {"2": t2 @ w[1], "4": e3 @ w[2]}
    for k, name in enumerate(["0", "2", "4"]):
        row = got[name]
        assert abs(row["cosine"] - np_cos(refs[k], D[k])) < TOL[dtype]
        assert abs(row["update_cosine"] - np_cos(rule_g[k], true_g[k])) < TOL[dtype]
        if name in true_in:
            s = e3 @ D[k]
            t = true_in[name]
            per = np.sum(s * t, 1) / np.linalg.norm(s, axis=1) / np.linalg.norm(t, axis=1)
            assert abs(row["error_alignment"] - per.mean()) < TOL[dtype]


def test_dfa_conv_layers_give_nan_weight_metrics_but_gradient_metrics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    model = convert(net, "dfa", input_shape=(1, 6, 6))
    x, y = torch.randn(4, 1, 6, 6), torch.randint(0, 5, (4,))
    got = alignment(model, x, y)
    assert math.isnan(got["0"]["cosine"])
    assert -1 <= got["0"]["update_cosine"] <= 1
    assert got["3"]["update_cosine"] == pytest.approx(1.0)


def test_bp_metrics_are_exactly_aligned():
    net, x, y = setup(torch.float64)
    got = alignment(convert(net, "bp"), x, y)
    for name, row in got.items():
        assert row["cosine"] == pytest.approx(1.0) and row["angle_deg"] < 1e-5
        assert row["norm_ratio"] == pytest.approx(1.0)
        assert row["update_cosine"] == pytest.approx(1.0, abs=1e-12)
        if name != "0":
            assert row["error_alignment"] == pytest.approx(1.0, abs=1e-12)


def test_sign_concordance_is_not_confounded_by_magnitude():
    net, _, _ = setup(torch.float64)
    model = convert(net, "fa", seed=0)
    layer = model[2]
    with torch.no_grad():
        layer.feedback.copy_(torch.sign(layer.weight) * torch.rand(layer.weight.shape) * 1e-3)
    row = weight_alignment(model)["2"]
    assert row["sign_concordance"] == 1.0
    assert row["cosine"] < 0.95  # the magnitudes differ, the angle says so
    with torch.no_grad():
        layer.feedback.neg_()
    assert weight_alignment(model)["2"]["sign_concordance"] == 0.0


@pytest.mark.parametrize("rule", ["brsf", "dfa", "fa"])
def test_alignment_does_not_disturb_training(rule):
    net, x, y = setup(torch.float64)
    net.insert(1, nn.Dropout(0.3))
    net.insert(0, nn.BatchNorm1d(12).double())

    def step(model, measure):
        torch.manual_seed(7)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            if measure:
                alignment(model, x, y)
            opt.step()
        return model.state_dict(), [p.grad.clone() for p in model.parameters()]

    a_state, a_grads = step(convert(net, rule, seed=1), False)
    b_state, b_grads = step(convert(net, rule, seed=1), True)
    for k in a_state:
        if k.endswith("_extra_state"):
            assert a_state[k] == b_state[k]
        else:
            assert torch.equal(a_state[k], b_state[k]), k
    for ga, gb in zip(a_grads, b_grads, strict=True):
        assert torch.equal(ga, gb)


@pytest.mark.parametrize("dtype", DTYPES)
def test_recorder_in_a_training_step_matches_full_measurement(dtype):
    net, x, y = setup(dtype)
    model = convert(net, "fa", seed=3)
    full = alignment(model, x, y)
    with ErrorRecorder(model) as rec:
        F.cross_entropy(model(x), y).backward()
        cheap = rec.error_alignment()
    assert rec.error_alignment() == cheap  # still readable after the block
    assert set(cheap) == {"2", "4"}
    for name, v in cheap.items():
        assert abs(v - full[name]["error_alignment"]) < TOL[dtype]
    assert all(m._record is None for _, m in rule_layers(model))
