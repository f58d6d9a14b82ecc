"""The engine's ``Plateau.paper`` rule against a hand-rolled copy of the authors' loop.

The reference below is the paper's published training loop transcribed for one network
(gradients by autograd, the first layer's feedback-alignment update through the fixed b):
check the MSE when t % every == every - 1 against the previous check (the first against 0);
a change below tol clears the continue flag for good; the loop runs while t < min_steps or
the flag is set. The engine must stop every member at the same step, in the same state.
"""

from __future__ import annotations

import math

import pytest
import torch

from feedback_alignment.twolayer.data import linear_teacher
from feedback_alignment.twolayer.engine import Plateau, TwoLayerEnsemble, paper_min_steps

PSI = {"linear": lambda z: z, "relu": torch.relu, "tanh": torch.tanh}


def authors_loop(W, beta, b, X, y, lr, lam, psi, min_steps, every, tol, cap=50_000):
    W, beta = W.clone().requires_grad_(True), beta.clone().requires_grad_(True)
    p = beta.numel()
    t, record, go = 0, 0.0, True
    while t < min_steps or go:
        assert t < cap, "reference loop did not stop"
        e = psi(X @ W.T) @ beta / math.sqrt(p) - y
        loss = (e * e).mean()
        if t % every == every - 1:
            if abs(loss.item() - record) < tol:
                go = False
            record = loss.item()
        (g_beta,) = torch.autograd.grad(loss + 0.5 * lam * beta.square().sum(), beta)
        # feedback alignment: the first layer sees the error through b, not beta
        surrogate = 2 * (psi(X @ W.T) @ b / math.sqrt(p) * e.detach()).mean()
        (g_W,) = torch.autograd.grad(surrogate, W)
        with torch.no_grad():
            beta -= lr * g_beta
            W -= lr * g_W
        t += 1
    return t, beta.detach()


def test_paper_min_steps_is_the_authors_formula():
    # rint(5000 sqrt(p) // rint(sqrt(200))): floor-divided by 14, not round(5000 sqrt(p/200))
    assert [paper_min_steps(p) for p in (200, 400, 800, 1600, 3200, 12800)] == [
        5050,
        7142,
        10101,
        14285,
        20203,
        40406,
    ]
    rule = Plateau.paper(800)
    assert (rule.min_steps, rule.check_every, rule.tol, rule.checks) == (
        10101,
        1000,
        1e-3,
        "authors",
    )


@pytest.mark.parametrize("activation", ["linear", "relu", "tanh"])
@pytest.mark.parametrize("min_steps", [65, 405])
def test_authors_plateau_matches_the_hand_rolled_loop_to_the_step(
    activation, min_steps, one_thread
):
    X, y = linear_teacher(10, 5, seed=0)
    X, y = X.double(), y.double()
    lrs = [1e-2, 3e-2, 1e-1]  # plateaus after, near and before min_steps
    every, tol = 10, 1e-3
    ens = TwoLayerEnsemble(5, 30, seeds=[0, 1, 2], activation=activation)
    W0, beta0, b = ens.W0.clone(), ens.beta.clone(), ens.b.clone()
    rule = Plateau(min_steps, every, tol, None, "authors")
    h = ens.fit(X, y, lr=lrs, lam=0.1, stop=rule, metrics=("mse",))
    assert h.status == ["done"] * 3
    stops = []
    for k, lr in enumerate(lrs):
        t, beta = authors_loop(
            W0[k], beta0[k], b[k], X, y, lr, 0.1, PSI[activation], min_steps, every, tol
        )
        stops.append(t)
        assert h.stop_step[k] == t, (k, h.stop_step[k], t)
        assert torch.allclose(ens.beta[k], beta, rtol=0, atol=1e-10)
    assert min(stops) >= min_steps
    # a stop after min_steps comes just after a check (t % every == every - 1, then t + 1)
    assert all(s == min_steps or s % every == 0 for s in stops)
    if min_steps == 405:  # settled before 405 (a check at 399 or earlier): stops at 405
        assert min_steps in stops


def test_after_min_plateau_is_unchanged():
    # the project's own rule (checkpoints from min_steps on) still works as documented
    assert Plateau(200).checks == "after_min"
