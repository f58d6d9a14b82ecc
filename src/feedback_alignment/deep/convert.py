"""Turn the Linear and Conv2d layers of an existing model into rule layers."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import ConfigError, check, need
from .layers import DFAHub, RuleConv2d, RuleLayer, RuleLinear
from .rules import RULES, get_rule, weight_scale

# Layers left as they are: their backward pass is local (no weight transport between layers).
KEPT = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm2d,
    nn.PReLU,
)
_TARGETS = {nn.Linear: RuleLinear, nn.Conv2d: RuleConv2d}


def rule_layers(model: nn.Module) -> list[tuple[str, RuleLayer]]:
    """The converted layers of ``model`` as (name, layer), in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, RuleLayer)]


def _backward_padding(name: str, m: nn.Conv2d) -> tuple[int, int]:
    if m.padding_mode != "zeros":
        raise ConfigError(
            f"cannot convert Conv2d {name!r}: padding_mode={m.padding_mode!r}; "
            "only 'zeros' is supported"
        )
    if isinstance(m.padding, str):
        if m.padding == "valid":
            return (0, 0)
        total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size, strict=True)]
        if any(t % 2 for t in total):
            raise ConfigError(
                f"cannot convert Conv2d {name!r}: padding='same' with an even kernel pads "
                "asymmetrically; give explicit integer padding"
            )
        return tuple(t // 2 for t in total)
    return tuple(m.padding)


def _classify(model: nn.Module, skip) -> list[tuple[str, nn.Module]]:
    found = []
    for name, m in model.named_modules():
        label = name or "<model>"
        if name in skip:
            continue
        if isinstance(m, RuleLayer):
            raise ConfigError(
                f"layer {label!r} is already converted (rule {m.rule.name!r}); convert the "
                "original model instead"
            )
        if type(m) in _TARGETS:
            found.append((name, m))
            continue
        if isinstance(m, (nn.Linear, nn.Conv2d)) or isinstance(m, KEPT):
            if isinstance(m, KEPT):
                continue
            raise ConfigError(
                f"cannot convert layer {label!r} of type {type(m).__name__}: only plain "
                "nn.Linear and nn.Conv2d are supported (its forward may differ); pass "
                f"skip=[{name!r}] to leave it trained by backprop"
            )
        if any(p is not None for p in m._parameters.values()):
            raise ConfigError(
                f"cannot convert layer {label!r} of type {type(m).__name__}: supported are "
                "Linear and Conv2d (normalisation layers are kept as they are); pass "
                f"skip=[{name!r}] to leave it trained by backprop"
            )
    return found


def _probe_shapes(model, layers, input_shape):
    shapes = {}
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out, n=n: shapes.__setitem__(n, (tuple(inp[0].shape[1:]), out))
        )
        for n, m in layers
    ]
    try:
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros((2, *input_shape), dtype=p.dtype, device=p.device))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"input_shape={tuple(input_shape)} does not fit the model: {exc}".splitlines()[0]
        ) from None
    finally:
        for h in hooks:
            h.remove()
    return {n: (i, math.prod(o.shape[1:])) for n, (i, o) in shapes.items()}


def convert(
    model: nn.Module,
    rule: str = "fa",
    *,
    inplace: bool = False,
    init: str = "gaussian",
    scale: float | None = None,
    seed: int = 0,
    output_size: int | None = None,
    input_shape: tuple | None = None,
    skip=(),
    options: dict | None = None,
    verbose: bool = False,
) -> nn.Module:
    """Return ``model`` with its Linear/Conv2d layers trained by ``rule``.

    ``init``/``scale``: how B (or R0, D) is drawn (``gaussian``, ``uniform``,
    ``orthogonal``, ``copy``), with standard deviation ``scale`` (default: the std of each
    layer's W); ``seed`` makes the draws reproducible (layer i uses seed*1000003 + i).
    A direct rule (``dfa``) takes the output size (checked against the last converted
    layer) and, for Conv2d layers, needs ``input_shape`` (C, H, W) to size D. ``options``
    go to the rule (``wm``: lr, decay, batch). The report of what was converted is
    ``model.rule_report``.
    """
    check(isinstance(model, nn.Module), f"convert needs an nn.Module; got {type(model).__name__}")
    need(isinstance(seed, int) and not isinstance(seed, bool), "seed", seed, "an integer")
    if scale is not None:
        need(
            isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0,
            "feedback scale",
            scale,
            "a positive number",
        )
    rule_obj = get_rule(rule, **(options or {}))
    skip = set(skip)
    target = model if inplace else copy.deepcopy(model)
    layers = _classify(target, skip)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer to convert")
    shapes = {}
    hub = None
    if rule_obj.direct:
        if input_shape is not None:
            shapes = _probe_shapes(target, layers, input_shape)
        else:
            for n, m in layers:
                if isinstance(m, nn.Conv2d):
                    raise ConfigError(
                        f"{rule_obj.name} needs input_shape=(C, H, W) to size the feedback of "
                        f"Conv2d layer {n!r}"
                    )
                shapes[n] = ((m.in_features,), m.out_features)
        last = layers[-1][0]
        produced = shapes[last][1]
        if output_size is not None and output_size != produced:
            raise ConfigError(
                f"{rule_obj.name} output_size={output_size} does not match the output layer "
                f"{last!r}, which produces {produced} values per sample"
            )
        hub = DFAHub(produced)
    elif output_size is not None or input_shape is not None:
        direct = ", ".join(repr(n) for n in sorted(RULES) if RULES[n].direct)
        raise ConfigError(
            f"output_size and input_shape are for direct-feedback rules ({direct}), "
            f"not {rule_obj.name!r}"
        )
    report = []
    for i, (name, m) in enumerate(layers):
        if isinstance(m, nn.Conv2d):
            padding = _backward_padding(name, m)
        sigma = float(scale) if scale is not None else weight_scale(m.weight)
        m.__class__ = _TARGETS[type(m)]
        m.rule = rule_obj
        if isinstance(m, RuleConv2d):
            m.backward_padding = padding
        if hub is not None:
            m.dfa_hub = hub
            m.dfa_output = name == layers[-1][0]
            m.dfa_input_shape = shapes[name][0]
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        rule_obj.setup(m, init=init, scale=sigma, generator=gen)
        report.append(_report_row(name, m))
    target.rule_report = report
    if verbose:
        print(describe(target))
    return target


def _report_row(name: str, m: RuleLayer) -> dict:
    return {
        "name": name,
        "type": type(m).__mro__[2].__name__,
        "rule": m.rule.name,
        "weight_shape": tuple(m.weight.shape),
        "feedback_shape": tuple(m.feedback_shape()),
        "output_layer": bool(m.dfa_output),
    }


def describe(model: nn.Module) -> str:
    """A table of the converted layers: name, type, rule, W shape, B shape."""
    rows = getattr(model, "rule_report", None)
    if rows is None:
        rows = [_report_row(n, m) for n, m in rule_layers(model)]
    lines = [f"converted {len(rows)} layer(s):"]
    for r in rows:
        out = "  (output layer)" if r["output_layer"] else ""
        lines.append(
            f"  {r['name']:<16} {r['type']:<7} {r['rule']:<5} W{list(r['weight_shape'])} "
            f"B{list(r['feedback_shape'])}{out}"
        )
    return "\n".join(lines)


def mirror(model: nn.Module, steps: int = 1, generator: torch.Generator | None = None) -> int:
    """Run ``steps`` mirror steps on every layer whose rule has a mirror phase (``wm``);
    returns the number of such layers."""
    layers = [m for _, m in rule_layers(model) if m.rule.mirror_phase]
    for m in layers:
        for _ in range(steps):
            m.rule.mirror(m, generator)
    return len(layers)
