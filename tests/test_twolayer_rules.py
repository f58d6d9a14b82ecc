"""The two-layer rules as data (twolayer/rules.py): a new rule is one entry, and every
member is recorded with its own rule's feedback."""

import numpy as np
import pytest
import torch

from feedback_alignment.errors import ConfigError
from feedback_alignment.twolayer import reference
from feedback_alignment.twolayer.data import random_teacher
from feedback_alignment.twolayer.engine import RULES, Plateau, TwoLayerEnsemble
from feedback_alignment.twolayer.recorder import CONSERVATION_METRICS, METRICS
from feedback_alignment.twolayer.rules import register_rule, unregister_rule

N, D, P = 8, 12, 30


@pytest.fixture
def fa_scaled():
    """Feedback alignment through 0.5 b: registered for one test, then removed."""
    register_rule("fa_scaled", lambda b, beta: 0.5 * b)
    yield "fa_scaled"
    unregister_rule("fa_scaled")


@pytest.mark.parametrize("path", ["explicit", "rowspace"])
def test_a_registered_rule_runs_through_fit(fa_scaled, path):
    X, y = random_teacher(N, D, P, "tanh", seed=0)
    ens = TwoLayerEnsemble(D, P, seeds=[1, 2, 3], activation="tanh")
    W, beta, b = ens.W.clone(), ens.beta.clone(), ens.b.clone()
    rules = [fa_scaled, "fa", "bp"]
    h = ens.fit(X, y, rule=rules, lr=0.05, lam=0.1, steps=30, path=path, kernels="torch")
    assert fa_scaled in RULES and h.status == ["done"] * 3
    for k, rule in enumerate(rules):
        Wk, bk = W[k], beta[k]
        for _ in range(30):
            Wk, bk = reference.step(Wk, bk, b[k], X, y, psi="tanh", eta=0.05, lam=0.1, rule=rule)
        assert float((ens.W[k] - Wk).norm() / Wk.norm()) < 1e-12
        assert float((ens.beta[k] - bk).norm() / bk.norm()) < 1e-12


def test_a_rule_declares_what_the_linear_path_needs(fa_scaled):
    X, y = random_teacher(N, D, P, "linear", seed=0)
    ens = TwoLayerEnsemble(D, P, activation="linear")
    assert ens.fit(X, y, rule="fa", steps=1).path == "linear_fa"
    assert ens.fit(X, y, rule=fa_scaled, steps=1).path == "rowspace"  # fb is not b
    with pytest.raises(ConfigError, match="path 'linear_fa' needs .* rules \\['fa_scaled'\\]"):
        ens.fit(X, y, rule=fa_scaled, steps=1, path="linear_fa")


def test_register_and_unregister_refuse_what_they_cannot_do(fa_scaled):
    with pytest.raises(ConfigError, match="rule 'fa_scaled' is already registered"):
        register_rule(fa_scaled, lambda b, beta: b)
    with pytest.raises(
        ConfigError, match='rule name = "a b" is not accepted; accepted: an identifier'
    ):
        register_rule("a b", lambda b, beta: b)
    with pytest.raises(ConfigError, match="feedback must be callable"):
        register_rule("fa2", 0.5)
    with pytest.raises(ConfigError, match="rule 'fa' is built in"):
        unregister_rule("fa")
    with pytest.raises(ConfigError, match='rule = "dfa" is not accepted'):
        unregister_rule("dfa")


def test_all_stopped_record_uses_each_members_own_feedback():
    """When every member has stopped at a step that is not a recording step, the fit
    records the stopped state once more. That record must equal the one the loop makes
    when the step is a recording step: with the rule's own feedback (beta for a bp
    member, whose update cosine is then 1), not b for everyone."""
    X, y = random_teacher(N, D, P, "tanh", seed=0)
    kw = dict(
        rule=["bp", "fa", "bp"],
        lr=0.2,
        lam=[0.0, 0.01, 0.1],
        stop=Plateau(100, 50, 1e-4, 20000),
        metrics=METRICS + CONSERVATION_METRICS,
    )
    h = TwoLayerEnsemble(D, P, seeds=[1, 2, 3], activation="tanh").fit(X, y, **kw)
    last = int(h.stop_step.max())
    assert last < 20000 and list(h.steps) == [last]  # only the all-stopped record
    ref = TwoLayerEnsemble(D, P, seeds=[1, 2, 3], activation="tanh")
    h_ref = ref.fit(X, y, record_steps=[last], **kw)
    assert h_ref.steps[-1] == last
    for m in METRICS + CONSERVATION_METRICS:
        np.testing.assert_array_equal(h.final[m], h_ref.final[m], err_msg=m)
    np.testing.assert_allclose(h.final["update_alignment"][[0, 2]], 1.0, rtol=1e-12)


def test_rule_names_stay_importable_as_names():
    assert sorted(RULES) == ["bp", "fa"] and tuple(RULES) == ("bp", "fa")
    assert torch.equal(RULES["fa"].feedback(torch.ones(2), torch.zeros(2)), torch.ones(2))


def test_a_registered_rule_runs_through_a_sweep_spec(fa_scaled, tmp_path):
    from feedback_alignment.experiments import Store, parse_spec, run_study

    spec = {
        "study": {"name": "scaled", "system": "twolayer", "repetitions": 1, "seed": 3},
        "fixed": {"n": N, "d": D, "p": P, "activation": "tanh", "steps": 20, "lam": 0.1},
        "grid": {"rule": ["fa", fa_scaled]},
    }
    rep = run_study(spec, tmp_path / "s.sqlite", executor="inline")
    assert rep.ok and rep.done == 2, rep.failures
    with Store(tmp_path / "s.sqlite", create=False) as st:
        rows = {r["rule"]: r for r in st.runs()}
    assert set(rows) == {"fa", fa_scaled}
    # the same network and data; only the first layer's feedback differs
    assert rows[fa_scaled]["final.alignment"] != rows["fa"]["final.alignment"]
    unregister_rule(fa_scaled)
    try:
        with pytest.raises(ConfigError, match='rule = "fa_scaled" is not accepted'):
            parse_spec(spec)
    finally:
        register_rule(fa_scaled, lambda b, beta: 0.5 * b)  # for the fixture to remove
