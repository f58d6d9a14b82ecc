"""The two-layer learning rules as data: a rule is the vector that carries the error back.

Every rule updates the second layer by its gradient; they differ only in the first layer's
update, W <- W - eta (c / sqrt p) [fb * psi'(Z) * e] X, where the feedback vector fb (one
number per hidden unit) is the rule's (:mod:`.reference` writes the step out). Backprop
feeds the error back through the current beta, feedback alignment through the fixed random
b. :data:`RULES` maps each name to its :class:`Rule`; the engine's update, its recorded
metrics and the reference step read the feedback from here, so adding a rule is one
:func:`register_rule` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import check, choice, need

Feedback = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Rule:
    """A rule's feedback and what it needs.

    ``feedback(b, beta)`` gives fb from the fixed feedback vector b and the current beta,
    element-wise on any leading shape ((p,) for one network, (k, p) for k members).
    ``linear_fa``: fb is b itself, which the closed-form linear path
    (:class:`~.paths.LinearFAPath`, holding the first layer as b a^T) needs.
    ``feedback_is_beta``: fb is beta itself (backprop). The native kernels take runs of
    steps in one call where every member's fb is b or beta (engine.py).
    """

    name: str
    feedback: Feedback
    linear_fa: bool = False
    feedback_is_beta: bool = False


RULES: dict[str, Rule] = {}


def register_rule(
    name: str, feedback: Feedback, *, linear_fa: bool = False, feedback_is_beta: bool = False
) -> Rule:
    """Add a two-layer rule under ``name`` (see :class:`Rule`); returns it."""
    need(
        isinstance(name, str) and name.isidentifier(),
        "rule name",
        name,
        "an identifier",
    )
    check(name not in RULES, f"rule {name!r} is already registered")
    check(callable(feedback), f"rule {name!r}: feedback must be callable, got {feedback!r}")
    check(
        not (linear_fa and feedback_is_beta),
        f"rule {name!r}: fb cannot be both b (linear_fa) and beta (feedback_is_beta)",
    )
    RULES[name] = Rule(name, feedback, bool(linear_fa), bool(feedback_is_beta))
    return RULES[name]


def unregister_rule(name: str) -> None:
    """Remove a rule added by :func:`register_rule` (the built-in ones stay)."""
    check(name not in ("bp", "fa"), f"rule {name!r} is built in and cannot be removed")
    choice("rule", name, tuple(RULES))
    del RULES[name]


register_rule("bp", lambda b, beta: beta, feedback_is_beta=True)
register_rule("fa", lambda b, beta: b, linear_fa=True)


def rule_names(rule: str | Sequence[str], K: int) -> list[str]:
    """One rule name for all K members, or K names -> K checked names."""
    names = [rule] * K if isinstance(rule, str) else list(rule)
    need(len(names) == K, "rule", names, f"one name, or {K} names (one per member)")
    for r in names:
        get_rule(r)
    return names


class MemberFeedback:
    """The feedback vectors of K members, each following its own rule.

    Called with a slice of members and their beta, it gives fb (k, p); members of
    different rules are merged element-wise (``torch.where``), so each member's numbers
    are those of its rule alone.
    """

    def __init__(self, names: Sequence[str], b: torch.Tensor):
        self.b = b
        self.rules = [RULES[r] for r in dict.fromkeys(names)]
        self.masks = [
            torch.as_tensor([r == rule.name for r in names], device=b.device) for rule in self.rules
        ]
        # (K,) bool, which members feed back through beta (backprop); None where none does
        beta = [RULES[r].feedback_is_beta for r in names]
        self.beta_members = torch.as_tensor(beta, device=b.device) if any(beta) else None

    @property
    def linear_fa(self) -> bool:
        """Whether the closed-form linear path applies to every member."""
        return all(rule.linear_fa for rule in self.rules)

    @property
    def b_or_beta(self) -> bool:
        """Whether every member's fb is b or beta, which the native runs form themselves."""
        return all(rule.linear_fa or rule.feedback_is_beta for rule in self.rules)

    def __call__(self, sl: slice, beta: torch.Tensor) -> torch.Tensor:
        b = self.b[sl]
        fb = self.rules[0].feedback(b, beta)
        for rule, mask in zip(self.rules[1:], self.masks[1:], strict=True):
            fb = torch.where(mask[sl, None], rule.feedback(b, beta), fb)
        return fb


def get_rule(name: str) -> Rule:
    """The rule called ``name``; a :class:`ConfigError` lists the known ones otherwise."""
    choice("rule", name, tuple(RULES))
    return RULES[name]
