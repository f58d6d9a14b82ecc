"""Closed-form invariants of the deep rules, checked along real training runs.

* Kolen-Pollack (this project's form: B has W's shape, is an ``nn.Parameter`` that receives
  W's gradient, and sits in W's parameter group): B_t - W_t = prod_s (1 - lr_s wd)
  (B_0 - W_0) under SGD and AdamW; a scalar two-term recurrence under SGD with momentum;
  no closed form under Adam (coupled L2), which the test shows fails.
* uSF: cos(B, W) = cos(sign W, W) = |W|_1 / (sqrt(m) |W|_F) at every step (the recorded
  ``sign_cosine`` metric against a hand computation).
* Weight mirror: E[one mirror step] = lr W - decay B for Gaussian noise, tested with a
  chi-square statistic that also rejects a direction 5% off (a power check).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from feedback_alignment.deep import convert, rule_layers
from feedback_alignment.deep.data import Dataset
from feedback_alignment.deep.metrics import weight_alignment
from feedback_alignment.deep.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


def toy_data(seed=0, n=240, classes=4):
    """8x8 'images' whose class is the brightest quadrant (uint8 pixels, as MNIST)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 200, (n, 1, 8, 8), generator=g, dtype=torch.int64)
    y = torch.randint(0, classes, (n,), generator=g)
    for q in range(classes):
        r, c = divmod(q, 2)
        x[y == q, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] += 55
    x = x.to(torch.uint8)
    return Dataset("toy", x[:200], y[:200], x[200:], y[200:], classes, 255.0, 0.5, 0.3)


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)
    )


def relerr(a, b):
    return float((a - b).norm() / b.norm())


def kp_run(dtype, steps=60, **train):
    """Train a KP model with the Trainer; per step, every layer's B - W."""
    model = convert(net().to(dtype), "kp", seed=1)
    layers = rule_layers(model)
    diffs = [[(m.feedback - m.weight).detach().clone() for _, m in layers]]
    lrs = []

    def cb(tr, row):
        lrs.append(row["lr"])
        diffs.append([(m.feedback - m.weight).detach().clone() for _, m in layers])

    tr = Trainer(
        model,
        toy_data(),
        batch_size=50,
        steps=steps,
        eval_every=0,
        dtype="float64" if dtype == torch.float64 else "float32",
        callbacks=[cb],
        **train,
    )
    tr.fit()
    return diffs, lrs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kolen_pollack_difference_decays_geometrically_under_sgd(dtype):
    """SGD with a cosine schedule: B_t - W_t = prod_{s<t} (1 - lr_s wd) (B_0 - W_0)."""
    wd = 0.3
    diffs, lrs = kp_run(dtype, optimizer="sgd", lr=0.1, schedule="cosine", weight_decay=wd)
    factor = 1.0
    for t in range(1, len(diffs)):
        factor *= 1 - lrs[t - 1] * wd
        for d0, dt in zip(diffs[0], diffs[t], strict=True):
            assert relerr(dt, factor * d0) < TOL[dtype]
    assert factor < 0.5  # the difference has shrunk measurably


def test_kolen_pollack_with_momentum_follows_a_scalar_recurrence():
    """Momentum mu: the buffers of W and B differ by wd-decayed differences only, so
    D_t = c_t D_0 with v_t = mu v_{t-1} + wd c_t, c_{t+1} = c_t - lr v_t (v_{-1} = 0)."""
    lr, wd, mu = 0.05, 0.2, 0.9
    diffs, _ = kp_run(torch.float64, optimizer="sgd", lr=lr, momentum=mu, weight_decay=wd)
    c, v = 1.0, 0.0
    for t in range(1, len(diffs)):
        v = mu * v + wd * c
        c = c - lr * v
        for d0, dt in zip(diffs[0], diffs[t], strict=True):
            assert relerr(dt, c * d0) < 1e-10
    # not the momentum-free law: (1 - lr wd)^t is far off by now
    assert abs(c - (1 - lr * wd) ** (len(diffs) - 1)) > 0.05


def test_kolen_pollack_under_adamw_and_not_under_adam():
    """AdamW decays W and B by (1 - lr wd) and moves both by the same moments of the same
    gradient: the geometric law holds. Adam adds wd W to the gradient: W and B see
    different moments and the law fails (so the check can fail)."""
    lr, wd = 0.01, 0.5
    diffs, _ = kp_run(torch.float64, optimizer="adamw", lr=lr, weight_decay=wd)
    for t in range(1, len(diffs)):
        for d0, dt in zip(diffs[0], diffs[t], strict=True):
            assert relerr(dt, (1 - lr * wd) ** t * d0) < 1e-10
    diffs, _ = kp_run(torch.float64, optimizer="adam", lr=lr, weight_decay=wd)
    T = len(diffs) - 1
    worst = max(
        relerr(dt, (1 - lr * wd) ** T * d0) for d0, dt in zip(diffs[0], diffs[T], strict=True)
    )
    assert worst > 1e-2


def hand_sign_cosine(w: torch.Tensor) -> float:
    a = w.detach().double().flatten().numpy()
    s = np.sign(a)
    return float(a @ s / (np.linalg.norm(a) * np.linalg.norm(s)))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_usf_cosine_is_the_sign_cosine_at_every_step(dtype):
    """uSF's B = s sign(W): the recorded cosine equals |W|_1 / (sqrt(m) |W|_F) (the recorded
    sign_cosine) and a hand computation of cos(sign W, W), at every recorded step."""
    model = convert(net().to(dtype), "usf", seed=2)
    tr = Trainer(
        model,
        toy_data(),
        batch_size=50,
        steps=40,
        lr=0.05,
        eval_every=0,
        record_every=1,
        dtype="float64" if dtype == torch.float64 else "float32",
    )
    hist = tr.fit()
    names = [n for n, _ in rule_layers(model)]
    assert len(hist["record_step"]) == 40
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    for n in names:
        cos, sc = np.asarray(hist[f"cosine/{n}"]), np.asarray(hist[f"sign_cosine/{n}"])
        np.testing.assert_allclose(cos, sc, rtol=tol)
        assert np.all((sc > 0) & (sc <= 1))
    # the final weights, by hand, with an exact zero in W (sign 0 leaves the entry out)
    m = dict(rule_layers(model))[names[0]]
    with torch.no_grad():
        m.weight[0, 0] = 0.0
    row = weight_alignment(model)[names[0]]
    assert row["sign_cosine"] == pytest.approx(hand_sign_cosine(m.weight), rel=tol)
    assert row["cosine"] == pytest.approx(row["sign_cosine"], rel=tol)
    # a Gaussian matrix: sqrt(2/pi) in the limit
    w = torch.randn(300, 300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lin = nn.Linear(300, 300, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(w)
    big = convert(nn.Sequential(lin), "fa", seed=0)
    sc = weight_alignment(big)["0"]["sign_cosine"]
    assert sc == pytest.approx(hand_sign_cosine(w), rel=1e-12)
    assert abs(sc - math.sqrt(2 / math.pi)) < 0.005


def mirror_steps(lr, decay, batch, draws, seed=0):
    """``draws`` single mirror steps from the same (W, B): the steps taken, and W, B."""
    model = convert(
        nn.Sequential(nn.Linear(10, 8, bias=False)).double(),
        "wm",
        seed=3,
        options={"lr": lr, "decay": decay, "batch": batch},
    )
    (_, layer) = rule_layers(model)[0]
    B0 = layer.feedback.detach().clone()
    g = torch.Generator().manual_seed(seed)
    steps = torch.empty(draws, *B0.shape, dtype=torch.float64)
    for i in range(draws):
        with torch.no_grad():
            layer.feedback.copy_(B0)
        layer.rule.mirror(layer, g)
        steps[i] = layer.feedback.detach() - B0
    return steps, layer.weight.detach().clone(), B0


def chi2_per_entry(steps, expected):
    """Mean over entries of z^2, z = (mean step - expected) / its standard error."""
    mean = steps.mean(0)
    se = steps.std(0) / math.sqrt(steps.shape[0])
    return float((((mean - expected) / se) ** 2).mean())


def test_weight_mirror_step_has_the_expected_direction():
    """E[x^T x / batch] = I for x ~ N(0, I), so E[dB] = lr W - decay B (B in W's shape,
    this project's form of B ~ W^T). Under that hypothesis the mean z^2 over the 80 entries
    is 1 +- 0.16 (2000 draws); a direction 5% off in its W part is rejected (power)."""
    lr, decay = 0.1, 0.05
    steps, W, B0 = mirror_steps(lr, decay, batch=16, draws=2000)
    expected = lr * W - decay * B0
    stat = chi2_per_entry(steps, expected)
    assert stat < 1.6, stat  # 1 + 3.7 sd of the mean of 80 chi-square(1) values
    # power: the same data reject lr W scaled by 1.05, and the decay term dropped
    assert chi2_per_entry(steps, 1.05 * lr * W - decay * B0) > 3.0
    assert chi2_per_entry(steps, lr * W) > 3.0
    # and the direction itself: cos(mean step, lr W - decay B) close to 1
    mean = steps.mean(0)
    cos = float((mean * expected).sum() / (mean.norm() * expected.norm()))
    assert cos > 0.99
