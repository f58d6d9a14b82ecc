"""Linear and Conv2d layers whose backward pass uses a rule's feedback weight.

The forward pass is the plain layer's (``F.linear`` / ``F.conv2d`` on the same tensors),
so outputs are bit-identical. The backward pass is one :class:`torch.autograd.Function`
shared by both layer types: the weight and bias gradients are the usual local products;
the gradient sent to the input goes through the rule's B (``rule.send``). Only what the
requested gradients need is saved: the input when W needs a gradient, W when the rule
computes B from it, and the rule's state tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .rules import Rule


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
        rule.begin_backward(layer, grad_output)
        feedback = None
        if need_x and not rule.custom_send:
            feedback = rule.feedback(layer, weight, state)
        grad_x, grad_w, grad_b = layer.local_grads(
            grad_output, x, feedback, ctx.input_shape, need_w or need_s, need_b
        )
        if need_x and rule.custom_send:
            grad_x = rule.send(layer, grad_output, weight, state, ctx.input_shape)
        if layer._record is not None:
            rec = layer._record
            rec["error"] = grad_output.detach()
            if grad_x is not None:
                rec["sent"] = grad_x.detach()
                if weight is not None and (rule.name != "dfa" or layer.dfa_output):
                    rec["sent_bp"] = layer.input_grad(grad_output, weight, ctx.input_shape)
        return grad_x, (grad_w if need_w else None), grad_b, (grad_w if need_s else None), None


class RuleLayer:
    """Mixin for the converted layers. ``rule`` is a :class:`~.rules.Rule` instance."""

    rule: Rule
    _record: dict | None = None
    _exact: bool = False
    dfa_hub = None
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
        if self.rule.name == "dfa" and bool(state.get("dfa_output")) != bool(self.dfa_output):
            raise ConfigError("state_dict marks a different DFA output layer than this model")
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
        gw = self.weight_grad(grad_output, x) if need_w else None
        gb = self.bias_grad(grad_output) if need_b else None
        return gx, gw, gb

    def weight_grad(self, grad_output, x):
        g = grad_output.reshape(-1, grad_output.shape[-1])
        return g.T @ x.reshape(-1, x.shape[-1])

    def bias_grad(self, grad_output):
        return grad_output.reshape(-1, grad_output.shape[-1]).sum(0)


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

    def weight_grad(self, grad_output, x):
        w = grad_output.new_empty(1).expand(self.weight.shape)
        return self._conv_backward(grad_output, x, w, (False, True, False))[1]

    def bias_grad(self, grad_output):
        return grad_output.sum((0, 2, 3))

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
