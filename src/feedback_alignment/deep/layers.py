"""Linear and Conv2d layers whose backward pass uses a rule's feedback weight.

The forward pass is the plain layer's (``F.linear`` / ``F.conv2d`` on the same tensors),
so outputs are bit-identical. The backward pass is one :class:`torch.autograd.Function`
shared by both layer types: the weight and bias gradients are the usual local products;
the gradient sent to the input goes through the rule's B (``grad_output @ B``; under a
direct rule the model's output error, ``e @ B``); a state that is a parameter gets the
rule's ``state_grad``. Only what the requested gradients need is saved: the input when W
needs a gradient, W when the rule computes B from it, and the rule's state tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .rules import Rule


class DFAHub:
    """Shared by the layers of one model under a direct rule: the output layer keeps the
    error e of this backward pass, and every layer sends ``e @ B`` to its input."""

    def __init__(self, output_size: int):
        self.output_size = int(output_size)
        self.error: torch.Tensor | None = None

    def keep(self, grad_output: torch.Tensor) -> None:
        e = grad_output.reshape(grad_output.shape[0], -1)
        if e.shape[1] != self.output_size:
            raise ConfigError(
                f"direct feedback: the output error has {e.shape[1]} components per sample "
                f"but the feedback matrices expect output_size={self.output_size}"
            )
        self.error = e

    def send(self, feedback: torch.Tensor, input_shape) -> torch.Tensor:
        if self.error is None:
            raise ConfigError(
                "direct feedback: a hidden layer's backward ran before the output layer's; "
                "the last converted layer must produce the model output that the loss reads"
            )
        return (self.error @ feedback.reshape(feedback.shape[0], -1)).reshape(input_shape)


class _RuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, state, layer):
        rule: Rule = layer.rule
        need_x, need_w, need_b, need_s = ctx.needs_input_grad[:4]
        record = layer._record is not None
        keep_w = need_x and (rule.needs_weight or record)
        ctx.save_for_backward(
            x if (need_w or need_s) else None,
            weight if keep_w else None,
            state if (need_x or need_s) else None,
        )
        ctx.layer = layer
        ctx.input_shape = x.shape
        return layer.plain_forward(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, state = ctx.saved_tensors
        layer = ctx.layer
        rule: Rule = layer.rule
        need_x, need_w, need_b, need_s = ctx.needs_input_grad[:4]
        hub = layer.dfa_hub if rule.direct else None
        if layer.dfa_output:
            hub.keep(grad_output)
        feedback = rule.feedback(layer, weight, state) if need_x else None
        grad_x, grad_w, grad_b = layer.local_grads(
            grad_output,
            x,
            feedback if hub is None else None,
            ctx.input_shape,
            need_w or need_s,
            need_b,
        )
        if hub is not None and need_x:
            grad_x = hub.send(feedback, ctx.input_shape)
        if layer._record is not None:
            rec = layer._record
            rec["error"] = grad_output.detach()
            if grad_x is not None:
                rec["sent"] = grad_x.detach()
                if weight is not None and (hub is None or layer.dfa_output):
                    rec["sent_bp"] = layer.input_grad(grad_output, weight, ctx.input_shape)
        grad_s = rule.state_grad(layer, grad_w) if need_s else None
        return grad_x, (grad_w if need_w else None), grad_b, grad_s, None


class RuleLayer:
    """Mixin for the converted layers. ``rule`` is a :class:`~.rules.Rule` instance; under
    a direct rule the layers share a :class:`DFAHub` and ``dfa_output`` marks the last."""

    rule: Rule
    _record: dict | None = None
    _exact: bool = False
    dfa_hub: DFAHub | None = None
    dfa_output = False
    dfa_input_shape: tuple = ()

    def forward(self, x):
        if self.dfa_output:
            self.dfa_hub.error = None
        if (
            self._exact
            or not torch.is_grad_enabled()
            or (self.rule.is_backprop and self._record is None)
        ):
            return self.plain_forward(x, self.weight, self.bias)
        return _RuleFunction.apply(x, self.weight, self.bias, self.rule.state(self), self)

    def feedback_shape(self) -> tuple:
        """B's shape: W's, or (output size, *input shape) under a direct rule."""
        if self.rule.direct:
            return (self.dfa_hub.output_size, *self.dfa_input_shape)
        return tuple(self.weight.shape)

    def feedback_weight(self) -> torch.Tensor:
        """The B the next backward pass would use (detached; brsf: the next draw)."""
        return self.rule.current_feedback(self)

    def get_extra_state(self):
        return {
            "rule": self.rule.name,
            "options": self.rule.options(),
            "dfa_output": bool(self.dfa_output),
        }

    def set_extra_state(self, state):
        if not isinstance(state, dict) or state.get("rule") != self.rule.name:
            got = state.get("rule") if isinstance(state, dict) else state
            raise ConfigError(
                f"state_dict holds feedback state of rule {got!r} but this layer uses rule "
                f"{self.rule.name!r}; convert the model with the same rule before loading"
            )
        if self.rule.direct and bool(state.get("dfa_output")) != bool(self.dfa_output):
            raise ConfigError("state_dict marks a different output layer than this model")
        opts = state.get("options", {})
        if opts != self.rule.options():
            for k, v in opts.items():
                setattr(self.rule, k, v)

    def extra_repr(self):
        return f"{super().extra_repr()}, rule={self.rule.name}"


class RuleLinear(RuleLayer, nn.Linear):
    """An ``nn.Linear`` trained by a feedback rule (made by :func:`~.convert.convert`)."""

    def plain_forward(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def input_grad(self, grad_output, feedback, input_shape):
        return (grad_output @ feedback).reshape(input_shape)

    def local_grads(self, grad_output, x, feedback, input_shape, need_w, need_b):
        """(input gradient through ``feedback`` or None, weight gradient, bias gradient)."""
        gx = None if feedback is None else self.input_grad(grad_output, feedback, input_shape)
        g = grad_output.reshape(-1, grad_output.shape[-1])
        gw = g.T @ x.reshape(-1, x.shape[-1]) if need_w else None
        gb = g.sum(0) if need_b else None
        return gx, gw, gb


class RuleConv2d(RuleLayer, nn.Conv2d):
    """An ``nn.Conv2d`` (zero padding) trained by a feedback rule."""

    backward_padding: tuple = (0, 0)

    def plain_forward(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def _conv_backward(self, grad_output, x, weight, mask):
        return torch.ops.aten.convolution_backward(
            grad_output,
            x,
            weight,
            [weight.shape[0]] if mask[2] else None,
            list(self.stride),
            list(self.backward_padding),
            list(self.dilation),
            False,
            [0, 0],
            self.groups,
            mask,
        )

    def input_grad(self, grad_output, feedback, input_shape):
        x = grad_output.new_empty(1).expand(input_shape)
        return self._conv_backward(grad_output, x, feedback, (True, False, False))[0]

    def local_grads(self, grad_output, x, feedback, input_shape, need_w, need_b):
        """One ``convolution_backward`` call for the gradients asked for, as autograd does;
        the input gradient uses ``feedback`` as the kernel."""
        need_x = feedback is not None
        if not (need_x or need_w or need_b):
            return None, None, None
        if x is None:
            x = grad_output.new_empty(1).expand(input_shape)
        kernel = feedback if need_x else grad_output.new_empty(1).expand(self.weight.shape)
        gx, gw, gb = self._conv_backward(grad_output, x, kernel, (need_x, need_w, need_b))
        return gx, gw, gb
