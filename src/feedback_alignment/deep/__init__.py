"""Random-feedback learning rules for any PyTorch model (issue 3).

``convert(model, rule)`` swaps a model's Linear/Conv2d layers for rule layers;
:mod:`.metrics` measures alignment; :mod:`.trainer` trains on real data; see docs/rules.md.
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
