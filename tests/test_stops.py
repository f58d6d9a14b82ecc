"""A run config's stop rule is read once (experiments/stops.py); the planner's cost and
the recorder's horizon follow from it, and the data task from twolayer.data.TASKS."""

import pytest
import torch

from feedback_alignment.errors import ConfigError
from feedback_alignment.experiments.stops import planned_steps, record_horizon, stop_rule
from feedback_alignment.twolayer.data import TASKS, linear_teacher, random_teacher, task_data
from feedback_alignment.twolayer.monitor import Plateau
from feedback_alignment.twolayer.schema import FIELDS


def cfg(stop, **kw):
    base = {"stop": stop, "p": 200, "activation": "relu", "steps": 300, "min_steps": 0,
            "check_every": 100, "tol": 1e-3, "max_steps": 0}  # fmt: skip
    return {**base, **kw}


def test_fixed_steps():
    c = cfg("steps", steps=300)
    assert stop_rule(c) == 300 and planned_steps(c) == 300 and record_horizon(c) == 300


def test_paper_rule_is_the_authors_minimum():
    c = cfg("paper", p=800, max_steps=50000)
    assert stop_rule(c) == Plateau.paper(800, 50000)
    # rint(5000 sqrt(800) // 14) = 10101, the authors' arithmetic (docs/reproduce.md)
    assert planned_steps(c) == 10101 and record_horizon(c) == 10101


def test_paper_dropout_rule():
    c = cfg("paper_dropout", p=200, activation="linear")
    rule = stop_rule(c)
    assert rule == Plateau.paper_dropout(200, "linear") and rule.quantity == "alignment"
    assert planned_steps(c) == record_horizon(c) == rule.min_steps == 10101


def test_plain_plateau():
    c = cfg("plateau", min_steps=0, max_steps=0)
    assert stop_rule(c) == Plateau(0, 100, 1e-3, None)
    assert planned_steps(c) == 1000  # costed at >= 1000 steps
    assert record_horizon(c) == 1  # nothing to aim at but the first step
    c = cfg("plateau", min_steps=300, max_steps=5000)
    assert planned_steps(c) == 1000 and record_horizon(c) == 5000


def test_data_tasks_are_declared_once():
    assert FIELDS["task"].default in TASKS
    X, y = task_data("linear", 5, 7, 3, "relu", 4)
    X0, y0 = linear_teacher(5, 7, seed=4)
    assert torch.equal(X, X0) and torch.equal(y, y0)
    X, y = task_data("teacher", 5, 7, 3, "tanh", 4)
    X0, y0 = random_teacher(5, 7, 3, activation="tanh", seed=4)
    assert torch.equal(X, X0) and torch.equal(y, y0)
    with pytest.raises(ConfigError, match='task = "quadratic".*linear.*teacher'):
        task_data("quadratic", 5, 7, 3, "relu", 4)
