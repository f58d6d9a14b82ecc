"""Random-feedback learning rules for any PyTorch model.

A rule is one :class:`Rule` subclass that declares what it is (:mod:`.rules`);
``convert(model, rule)`` swaps a model's Linear/Conv2d layers for rule layers
(:mod:`.layers`); :mod:`.metrics` measures alignment; :mod:`.trainer` trains on real data
with the settings declared in :mod:`.config`; see docs/rules.md.
"""

from __future__ import annotations

from .convert import convert, describe, mirror, rule_layers
from .layers import RuleConv2d, RuleLayer, RuleLinear
from .rules import RULES, Rule, get_rule, register

__all__ = [
    "RULES",
    "Rule",
    "RuleConv2d",
    "RuleLayer",
    "RuleLinear",
    "convert",
    "describe",
    "get_rule",
    "mirror",
    "register",
    "rule_layers",
]
