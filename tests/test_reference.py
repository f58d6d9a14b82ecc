"""Every path and kernel of the engine against a loop of the paper's reference step.

``twolayer/reference.py`` is the oracle (itself checked against autograd in
test_engine.py): each member of a fit must follow its own loop of reference steps, in
float64 to 1e-12, whatever the path (explicit, rowspace, linear_fa), the kernels (torch
ops, torch.compile, the native C++ ones), the activation and the rule.
"""

import math

import pytest
import torch

from feedback_alignment.activations import Activation
from feedback_alignment.twolayer import native, reference
from feedback_alignment.twolayer.data import random_teacher
from feedback_alignment.twolayer.engine import TwoLayerEnsemble

softplus = Activation("softplus", torch.nn.functional.softplus, torch.sigmoid)
ACTIVATIONS = ["linear", "relu", "tanh", "sigmoid", "erf", softplus]
RULES = {"fa": "fa", "bp": "bp", "mixed": ["fa", "bp"]}
N, D, P, STEPS = 8, 12, 30, 20
LR, LAM, WD = [0.05, 0.02], [0.1, 0.0], [0.0, 0.01]
no_native = pytest.mark.skipif(native.library() is None, reason="no C++ compiler here")


def _name(act):
    return getattr(act, "name", act)


CASES = [
    *[("explicit", "torch", a, r) for a in ACTIVATIONS for r in RULES],
    *[("rowspace", "torch", a, r) for a in ACTIVATIONS for r in RULES],
    ("linear_fa", "torch", "linear", "fa"),
    *[
        pytest.param("rowspace", "native", a, r, marks=no_native)
        for a in ("relu", "tanh")
        for r in RULES
    ],
    ("explicit", "compiled", "relu", "mixed"),
    ("rowspace", "compiled", "tanh", "mixed"),
]


def reference_run(W, beta, b, X, y, act, rules, steps, loss_c=None):
    """Each member's (W, beta) after ``steps`` reference steps, and its MSE at every step."""
    out = []
    for k, rule in enumerate(rules):
        Wk, bk, mses = W[k], beta[k], []
        for _ in range(steps):
            mses.append(float((reference.output(Wk, bk, X, act) - y).square().mean()))
            Wk, bk = reference.step(
                Wk,
                bk,
                b[k],
                X,
                y,
                psi=act,
                eta=LR[k],
                lam=LAM[k],
                w_decay=WD[k],
                rule=rule,
                c=loss_c,
            )
        mses.append(float((reference.output(Wk, bk, X, act) - y).square().mean()))
        out.append((Wk, bk, mses))
    return out


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(
    "path, kernels, act, rule", CASES, ids=lambda v: _name(v) if not isinstance(v, list) else ""
)
def test_every_path_and_kernel_follows_the_reference_step(path, kernels, act, rule):
    X, y = random_teacher(N, D, P, "tanh", seed=7)
    ens = TwoLayerEnsemble(D, P, seeds=[3, 4], activation=act)
    W, beta, b = ens.W.clone(), ens.beta.clone(), ens.b.clone()
    h = ens.fit(
        X,
        y,
        rule=RULES[rule],
        lr=LR,
        lam=LAM,
        w_decay=WD,
        steps=STEPS,
        record_every=1,
        metrics=("mse",),
        path=path,
        kernels=kernels,
    )
    assert (h.path, h.kernels) == (path, kernels)
    rules = [RULES[rule]] * 2 if isinstance(RULES[rule], str) else RULES[rule]
    for k, (Wk, bk, mses) in enumerate(reference_run(W, beta, b, X, y, act, rules, STEPS)):
        assert rel(ens.W[k], Wk) < 1e-12 and rel(ens.beta[k], bk) < 1e-12
        got = torch.as_tensor(h.metrics["mse"][:, k])
        assert rel(got, torch.tensor(mses, dtype=torch.float64)) < 1e-12


def test_half_sum_of_squares_is_c_equal_to_one():
    X, y = random_teacher(N, D, P, "tanh", seed=7)
    ens = TwoLayerEnsemble(D, P, seeds=[3, 4], activation="tanh")
    W, beta, b = ens.W.clone(), ens.beta.clone(), ens.b.clone()
    ens.fit(X, y, rule=["fa", "bp"], lr=LR, lam=LAM, w_decay=WD, steps=STEPS, loss="sse")
    for k, (Wk, bk, _) in enumerate(
        reference_run(W, beta, b, X, y, "tanh", ["fa", "bp"], STEPS, 1.0)
    ):
        assert rel(ens.W[k], Wk) < 1e-12 and rel(ens.beta[k], bk) < 1e-12


def test_the_reference_output_is_the_papers_network():
    X, _ = random_teacher(N, D, P, "relu", seed=0)
    ens = TwoLayerEnsemble(D, P, seeds=[1], activation="relu")
    u = sum(ens.beta[0, r] * torch.relu(X @ ens.W[0, r]) for r in range(P)) / math.sqrt(P)
    assert rel(reference.output(ens.W[0], ens.beta[0], X, "relu"), u) < 1e-14
