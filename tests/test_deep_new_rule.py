"""A rule added in one place: one small class, registered here, runs through ``convert``,
the metrics, state dicts, ``fa train`` and a sweep spec with no other change to the package."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.cli import main
from feedback_alignment.deep import RULES, convert, describe, register, rule_layers
from feedback_alignment.deep.config import parse_config
from feedback_alignment.deep.metrics import alignment, weight_alignment
from feedback_alignment.deep.rules import FeedbackAlignment
from feedback_alignment.errors import ConfigError
from feedback_alignment.experiments import Store, run_study

C = 2.0  # a power of two: scaling by it is exact, so the checks below are exact too


class ScaledFeedback(FeedbackAlignment):
    """B = C * R, R fixed random (drawn as for ``fa``): feedback alignment scaled by C."""

    name = "fa_scaled"

    def feedback(self, layer, weight, state):
        return C * state


CONFIG = """
seed = 4
dtype = "float64"
[data]
source = "digits"
train_limit = 300
test_limit = 100
[model]
hidden = [16]
[rule]
name = "{rule}"
[train]
batch_size = 50
steps = 6
eval_every = 3
[metrics]
record_every = 1
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fa_scaled():
    register(ScaledFeedback)
    yield
    RULES.pop(ScaledFeedback.name)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _grads(model, x, y):
    loss = F.cross_entropy(model(x), y)
    return torch.autograd.grad(loss, [m.weight for _, m in rule_layers(model)])


def test_convert_and_metrics_take_the_new_rule(fa_scaled):
    net = _net()
    x, y = torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,))
    model, fa = convert(net, "fa_scaled", seed=1), convert(net, "fa", seed=1)
    assert torch.equal(model(x), net(x))
    assert "fa_scaled" in describe(model) and model.rule_report[1]["rule"] == "fa_scaled"
    # the same R as fa's: the hidden layer gets C times fa's signal, the output layer the same
    assert torch.equal(model[2].feedback, fa[2].feedback)
    (g1, g2), (f1, f2) = _grads(model, x, y), _grads(fa, x, y)
    assert torch.equal(g1, C * f1) and torch.equal(g2, f2)
    ours, theirs = weight_alignment(model)["2"], weight_alignment(fa)["2"]
    assert ours["cosine"] == pytest.approx(theirs["cosine"], abs=1e-15)
    assert ours["norm_ratio"] == pytest.approx(C * theirs["norm_ratio"], rel=1e-15)
    full = alignment(model, x, y)["2"]
    assert full["cosine"] == ours["cosine"] and -1 <= full["error_alignment"] <= 1
    again = convert(net, "fa_scaled", seed=9)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again[2].feedback_weight(), model[2].feedback_weight())
    with pytest.raises(ConfigError, match="rule 'fa_scaled'"):
        fa.load_state_dict(model.state_dict())


def test_fa_train_runs_the_new_rule(fa_scaled, tmp_path, capsys):
    results = {}
    for rule in ("fa", "fa_scaled"):
        cfg = tmp_path / f"{rule}.toml"
        cfg.write_text(CONFIG.format(rule=rule))
        out = tmp_path / f"{rule}.json"
        assert main(["train", str(cfg), "--out", str(out), "--no-progress"]) == 0
        results[rule] = json.loads(out.read_text())
    assert f"rule {rule}" in capsys.readouterr().out
    ours, fa = results["fa_scaled"], results["fa"]
    assert ours["config"]["rule"]["name"] == "fa_scaled"
    assert ours["record_step"] == list(range(1, 7))
    # step 1 is recorded before the first update: the same W and R, B = C R
    assert ours["norm_ratio/fc2"][0] == pytest.approx(C * fa["norm_ratio/fc2"][0], rel=1e-15)
    assert ours["loss"][0] == fa["loss"][0] and ours["loss"][1:] != fa["loss"][1:]


def test_config_reads_the_rule_registry():
    with pytest.raises(ConfigError, match='rule.name = "fa_scaled" is not accepted'):
        parse_config({"rule": {"name": "fa_scaled"}})
    register(ScaledFeedback)
    try:
        assert parse_config({"rule": {"name": "fa_scaled"}})["rule"]["name"] == "fa_scaled"
    finally:
        RULES.pop(ScaledFeedback.name)


def test_a_sweep_spec_runs_the_new_rule(fa_scaled, tmp_path):
    spec = {
        "study": {"name": "scaled", "system": "deep", "repetitions": 1, "seed": 5},
        "fixed": {
            "dtype": "float64",
            "data": {"source": "digits", "train_limit": 120, "test_limit": 60},
            "model": {"hidden": [16]},
            "train": {"steps": 4, "batch_size": 30, "eval_every": 2},
        },
        "grid": {"rule.name": ["fa", "fa_scaled"]},
    }
    rep = run_study(spec, tmp_path / "s.sqlite", executor="inline")
    assert rep.ok and rep.done == 2, rep.failures
    with Store(tmp_path / "s.sqlite", create=False) as st:
        rows = {r["rule.name"]: r for r in st.runs()}
        loss = {k: st.series(r["run_id"], "loss")[1] for k, r in rows.items()}
    assert set(rows) == {"fa", "fa_scaled"}
    # the same seeds, W and R: the first loss agrees, then the hidden layer learns C-fold
    assert loss["fa_scaled"][0] == loss["fa"][0]
    assert loss["fa_scaled"][-1] != loss["fa"][-1]
