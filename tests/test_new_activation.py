"""Adding an activation is one declaration: GELU, registered here and nowhere else, runs
through ``fit`` on every path (against the paper's reference step), through the theory
kernels (quadrature against Monte Carlo) and through a sweep spec; the paths it has no form
for refuse it in one line or fall back as ``kernels="auto"`` does."""

import math

import pytest
import torch

from feedback_alignment.activations import (
    ACTIVATIONS,
    PAPER_LR_OTHER,
    Activation,
    get_activation,
    register_activation,
    unregister_activation,
)
from feedback_alignment.errors import ConfigError
from feedback_alignment.experiments import Store, parse_spec, run_study
from feedback_alignment.twolayer import reference
from feedback_alignment.twolayer.data import random_teacher
from feedback_alignment.twolayer.engine import Plateau, TwoLayerEnsemble
from feedback_alignment.twolayer.theory import g_bp_monte_carlo, g_inf_bp, h_inf, h_monte_carlo

N, D, P, STEPS = 8, 12, 30, 15
LR, LAM = [0.05, 0.02], [0.1, 0.0]


def _gelu_deriv(z):
    """d/dz z Phi(z) = Phi(z) + z phi(z)."""
    return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-0.5 * z * z) / math.sqrt(
        2 * math.pi
    )


@pytest.fixture
def gelu():
    """The one declaration: registered for one test, then removed."""
    act = register_activation(Activation("gelu", torch.nn.functional.gelu, _gelu_deriv))
    yield act
    unregister_activation("gelu")


def test_the_derivative_is_autograd_s():
    z = torch.linspace(-6, 6, 101, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(torch.nn.functional.gelu(z).sum(), z)
    assert torch.allclose(_gelu_deriv(z.detach()), g, rtol=0, atol=1e-14)


def _reference(W, beta, b, X, y, rule):
    out = []
    for k in range(W.shape[0]):
        Wk, bk = W[k], beta[k]
        for _ in range(STEPS):
            Wk, bk = reference.step(
                Wk, bk, b[k], X, y, psi="gelu", eta=LR[k], lam=LAM[k], w_decay=0.0, rule=rule
            )
        out.append((Wk, bk))
    return out


@pytest.mark.parametrize(
    "path, kernels",
    [("explicit", "torch"), ("rowspace", "torch"), ("rowspace", "compiled"), ("auto", "auto")],
)
def test_fit_on_every_path_follows_the_reference_step(gelu, path, kernels):
    X, y = random_teacher(N, D, P, "gelu", seed=7)  # the teacher takes the name too
    ens = TwoLayerEnsemble(D, P, seeds=[3, 4], activation="gelu")
    W, beta, b = ens.W.clone(), ens.beta.clone(), ens.b.clone()
    h = ens.fit(X, y, rule="bp", lr=LR, lam=LAM, steps=STEPS, path=path, kernels=kernels)
    if kernels == "auto":  # no native form: the torch ops, and why
        assert h.kernels in ("torch", "compiled")
        why = "no native kernels for activation 'gelu' (only linear, relu, tanh, sigmoid)"
        assert why in h.kernels_why
    for k, (Wk, bk) in enumerate(_reference(W, beta, b, X, y, "bp")):
        assert float((ens.W[k] - Wk).norm() / Wk.norm()) < 1e-12
        assert float((ens.beta[k] - bk).norm() / bk.norm()) < 1e-12


def test_the_forms_it_lacks_are_refused_in_one_line(gelu):
    X, y = random_teacher(N, D, P, "gelu", seed=7)
    ens = TwoLayerEnsemble(D, P, seeds=[3], activation="gelu")
    with pytest.raises(ConfigError, match="no native kernels for activation 'gelu'") as e:
        ens.fit(X, y, steps=2, path="rowspace", kernels="native")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="path 'linear_fa' needs the linear activation"):
        ens.fit(X, y, steps=2, path="linear_fa")
    with pytest.raises(ConfigError, match="no closed form for activation 'gelu'"):
        h_inf(X, "gelu", method="closed")


def test_its_facts_default_to_what_the_paper_does_not_fix(gelu):
    assert get_activation("gelu") is gelu
    assert gelu.paper_lr() == gelu.paper_lr(dropout=True) == PAPER_LR_OTHER
    assert (
        Plateau.paper_dropout(200, "gelu").min_steps == Plateau.paper_dropout(200, "relu").min_steps
    )
    ens = TwoLayerEnsemble(D, P, seeds=[3], activation="gelu")
    X, y = random_teacher(N, D, P, "gelu", seed=1)
    a = TwoLayerEnsemble(D, P, seeds=[3], activation="gelu")
    ens.fit(X, y, steps=3)  # lr = "paper"
    a.fit(X, y, steps=3, lr=PAPER_LR_OTHER)
    assert torch.equal(ens.W, a.W) and torch.equal(ens.beta, a.beta)


def test_theory_kernels_by_quadrature_match_monte_carlo(gelu):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(5, 8, generator=g, dtype=torch.float64)
    X = X / X.norm(dim=1, keepdim=True) * torch.tensor([0.5, 1.0, 1.5, 2.0, 1.0])[:, None]
    mh, seh = h_monte_carlo(X, "gelu", 50_000, seed=0)
    mg, seg = g_bp_monte_carlo(X, "gelu", 50_000, seed=1)
    H, G = h_inf(X, "gelu"), g_inf_bp(X, "gelu")
    assert ((H - mh).abs() / seh).max() < 4.5
    assert ((G - mg).abs() / seg).max() < 4.5
    assert not torch.allclose(H, h_inf(X, "relu"), rtol=1e-3)  # its own kernel, not a built-in's


def test_it_runs_through_a_sweep_spec(gelu, tmp_path):
    spec = {
        "study": {"name": "gelu", "repetitions": 2, "seed": 5},
        "fixed": {"n": 6, "d": 10, "p": 16, "steps": 20, "record_every": 10},
        "grid": {"activation": ["gelu", "tanh"]},
    }
    runs = parse_spec(spec).runs()
    assert {(r.config["activation"], r.config["lr"]) for r in runs} == {
        ("gelu", PAPER_LR_OTHER),
        ("tanh", get_activation("tanh").lr),
    }
    rep = run_study(spec, tmp_path / "s.sqlite", executor="inline")
    assert rep.ok and rep.done == 4
    with Store(tmp_path / "s.sqlite", create=False) as st:
        done = [r for r in st.runs(status="done") if r["activation"] == "gelu"]
    assert len(done) == 2 and all(math.isfinite(r["final.mse"]) for r in done)


def test_registering_refuses_what_it_cannot_do(gelu):
    with pytest.raises(ConfigError, match="activation 'gelu' is already registered"):
        register_activation(gelu)
    with pytest.raises(ConfigError, match="activation 'relu' is built in"):
        unregister_activation("relu")
    with pytest.raises(
        ConfigError, match="activation name = .* is not accepted; accepted: an identifier"
    ):
        register_activation(Activation("a b", torch.relu, torch.relu))


def test_an_unregistered_name_is_refused_everywhere():
    assert "gelu" not in ACTIVATIONS
    with pytest.raises(ConfigError, match='activation = "gelu" is not accepted'):
        TwoLayerEnsemble(D, P, activation="gelu")
    with pytest.raises(ConfigError, match='fixed.activation = "gelu" is not accepted'):
        parse_spec({"fixed": {"activation": "gelu"}})
