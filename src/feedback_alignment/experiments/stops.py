"""A two-layer run's stop rule, read from its config in one place.

The spec's ``stop`` field names the rule: ``steps`` (a fixed count), ``paper`` (the
paper's run-length rule, :meth:`Plateau.paper`), ``paper_dropout`` (the authors' dropout
runs', :meth:`Plateau.paper_dropout`) or ``plateau`` (the spec's own ``min_steps``,
``check_every``, ``tol``). The runner hands :func:`stop_rule` to ``fit``; the planner's
cost estimate (:func:`planned_steps`) and the recorder's log-spaced points
(:func:`record_horizon`) are read off the same rule.
"""

from __future__ import annotations

from ..twolayer.monitor import Plateau

PLAIN_PLATEAU_STEPS = 1000  # a plain plateau rule is costed at >= this many steps


def stop_rule(c: dict) -> int | Plateau:
    """The number of steps (``stop = "steps"``) or the :class:`Plateau` that ends the run."""
    max_steps = c["max_steps"] or None
    if c["stop"] == "steps":
        return int(c["steps"])
    if c["stop"] == "paper":
        return Plateau.paper(c["p"], max_steps)
    if c["stop"] == "paper_dropout":
        return Plateau.paper_dropout(c["p"], c["activation"], max_steps)
    return Plateau(c["min_steps"], c["check_every"], c["tol"], max_steps)


def planned_steps(c: dict) -> int:
    """The steps the planner costs a run at: its count, or its rule's minimum (at least
    :data:`PLAIN_PLATEAU_STEPS` for a plain plateau rule, whose minimum may be 0)."""
    rule = stop_rule(c)
    if isinstance(rule, int):
        return rule
    if rule.checks == "authors":
        return rule.min_steps
    return max(rule.min_steps, PLAIN_PLATEAU_STEPS)


def record_horizon(c: dict) -> int:
    """The last step the log-spaced record points aim at (>= 1): the count, the authors'
    minimum as their rules run it, or a plain plateau rule's larger of minimum and cap."""
    rule = stop_rule(c)
    if isinstance(rule, int):
        steps = rule
    elif rule.checks == "authors":
        steps = rule.min_steps
    else:
        steps = max(rule.min_steps, rule.max_steps or 0)
    return max(steps, 1)
