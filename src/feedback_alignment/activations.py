"""Activation functions psi with their derivatives psi', as the two-layer theory needs them.

An :class:`Activation` is a named pair of element-wise torch functions. The built-ins are
the paper's (linear, relu, tanh) plus sigmoid and erf; any user pair works everywhere a
name does::

    softplus = Activation("softplus", torch.nn.functional.softplus, torch.sigmoid)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import ConfigError

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Activation:
    """psi and psi' as element-wise torch functions.

    ``relu_like`` marks activations whose derivative is the indicator of ``z > 0`` so the
    engine can use a cheaper fused path; it never changes results.
    """

    name: str
    fn: Fn
    deriv: Fn
    relu_like: bool = False

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"


def _linear(z):
    return z


def _one(z):
    return torch.ones_like(z)


def _relu_deriv(z):
    # matches torch.autograd: derivative 0 at z == 0
    return (z > 0).to(z.dtype)


def _tanh_deriv(z):
    t = torch.tanh(z)
    return 1 - t * t


def _sigmoid_deriv(z):
    s = torch.sigmoid(z)
    return s * (1 - s)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _erf_deriv(z):
    return _TWO_OVER_SQRT_PI * torch.exp(-z * z)


BUILTIN: dict[str, Activation] = {
    "linear": Activation("linear", _linear, _one),
    "relu": Activation("relu", torch.relu, _relu_deriv, relu_like=True),
    "tanh": Activation("tanh", torch.tanh, _tanh_deriv),
    "sigmoid": Activation("sigmoid", torch.sigmoid, _sigmoid_deriv),
    "erf": Activation("erf", torch.erf, _erf_deriv),
}


_ACCEPTED = f"{', '.join(BUILTIN)}, an Activation, or a (psi, dpsi) pair of callables"


def get_activation(spec: str | Activation | tuple[Fn, Fn]) -> Activation:
    """Resolve a name, an :class:`Activation`, or a ``(psi, dpsi)`` pair."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        try:
            return BUILTIN[spec]
        except KeyError:
            raise ConfigError(f"unknown activation {spec!r}; accepted: {_ACCEPTED}") from None
    if isinstance(spec, tuple) and len(spec) == 2 and all(callable(f) for f in spec):
        return Activation(getattr(spec[0], "__name__", "custom"), spec[0], spec[1])
    raise ConfigError(f"activation {spec!r} is not understood; give one of {_ACCEPTED}")
