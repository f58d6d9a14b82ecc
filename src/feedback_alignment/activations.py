"""Activations psi, each with everything the package knows about it, declared once.

An :class:`Activation` pairs the element-wise function psi with its derivative psi' (as
Neural Tangents pairs each nonlinearity with its kernel) and carries every other fact the
package uses about it:

* ``h_closed`` / ``g_closed``: the closed forms of the infinite-width kernels
  E_w[psi(w.x) psi(w.x')] and x.x' E_w[psi'(w.x) psi'(w.x')], w ~ N(0, I_d), where they
  exist (:mod:`feedback_alignment.twolayer.theory` uses quadrature otherwise);
* ``compile_form``: (psi, psi') written the way ``torch.compile`` makes fast code, where the
  plain pair is slow compiled (``kernels="compiled"``);
* ``native``: the name of its kernels in ``twolayer/native/rowspace.cpp``
  (``kernels="native"``; None: it has none, and ``"auto"`` uses the torch ops);
* ``relu_like``: psi'(z) = 1[z > 0] = sign(psi(z)), a cheaper pass (never other numbers);
* ``identity``: psi(z) = z, a linear network (the linear-FA path, the linear task);
* ``lr`` / ``dropout_lr``: the authors' step size with weight decay (``lr = "paper"``) and in
  their dropout runs (``"paper_dropout"``); None where they train no such network
  (:data:`PAPER_LR_OTHER`);
* ``dropout_base_steps``: the base N of their dropout runs' stopping rule;
* ``label``: the name as figures write it ("ReLU"; the name where None).

No code outside this module asks an activation's name: it asks the object. Adding an
activation is one declaration, ``register_activation(Activation(...))``; the name is then
accepted everywhere one is (``fit``, the theory kernels, a sweep spec)::

    softplus = register_activation(
        Activation("softplus", torch.nn.functional.softplus, torch.sigmoid)
    )

An unregistered :class:`Activation` or a ``(psi, dpsi)`` pair works everywhere an object
is taken (not in a sweep spec, which names its activation).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import check, choice, need, refusal

Fn = Callable[[torch.Tensor], torch.Tensor]
# a closed-form kernel: (gram X X^T, row norms |x_i|, cos of the angles between rows) -> (n, n)
Closed = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# lr = "paper" / "paper_dropout" for an activation the authors do not train
PAPER_LR_OTHER = 1e-2
# the base N of the authors' dropout runs' stopping rule (Plateau.paper_dropout) where an
# activation declares none: at least rint(N sqrt(p) // 14) steps, checked every N/5
DROPOUT_BASE_OTHER = 5000


@dataclass(frozen=True)
class Activation:
    """psi and psi' as element-wise torch functions, and what else is known of them (see the
    module's docstring for each field). Only ``name``, ``fn`` and ``deriv`` are required."""

    name: str
    fn: Fn
    deriv: Fn
    h_closed: Closed | None = None
    g_closed: Closed | None = None
    compile_form: tuple[Fn, Fn] | None = None
    native: str | None = None
    relu_like: bool = False
    identity: bool = False
    lr: float | None = None
    dropout_lr: float | None = None
    dropout_base_steps: int = DROPOUT_BASE_OTHER
    label: str | None = None

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"

    def paper_lr(self, dropout: bool = False) -> float:
        """The step size ``lr = "paper"`` (``"paper_dropout"`` with ``dropout``) stands for."""
        lr = self.dropout_lr if dropout else self.lr
        return PAPER_LR_OTHER if lr is None else lr

    @property
    def title(self) -> str:
        """The name as figures and reports write it (``label``, else the name)."""
        return self.label or self.name

    @property
    def compile_pair(self) -> tuple[Fn, Fn]:
        """(psi, psi') for ``torch.compile``: ``compile_form`` where declared."""
        return self.compile_form or (self.fn, self.deriv)


# --------------------------------------------------------------------------- functions
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


def _tanh_for_compile(z):
    """tanh through expm1: the compiled CPU code for torch.tanh is slower than this
    (docs/performance.md); within 2 ulp of torch.tanh, exact limits +-1 (|z| > 20)."""
    t = torch.expm1(2 * z.clamp(-20.0, 20.0))
    return t / (t + 2)


def _tanh_deriv_for_compile(z):
    t = _tanh_for_compile(z)
    return 1 - t * t


def _sigmoid_deriv(z):
    s = torch.sigmoid(z)
    return s * (1 - s)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _erf_deriv(z):
    return _TWO_OVER_SQRT_PI * torch.exp(-z * z)


# --------------------------------------------------------------------------- closed forms
def _linear_h(gram, norms, cos):
    return gram  # E[(w.x)(w.x')] = x.x'


def _linear_g(gram, norms, cos):
    return gram


def _relu_h(gram, norms, cos):
    """The arc-cosine kernel of degree 1 (Cho & Saul)."""
    t = torch.arccos(cos)
    nn = norms[..., :, None] * norms[..., None, :]
    return nn / (2 * math.pi) * (torch.sin(t) + (math.pi - t) * torch.cos(t))


def _relu_g(gram, norms, cos):
    """x.x' (pi - t) / (2 pi): the arc-cosine kernel of degree 0."""
    t = torch.arccos(cos)
    return gram * (math.pi - t) / (2 * math.pi)


def _erf_h(gram, norms, cos):
    """Williams' arcsine kernel."""
    sq = norms * norms
    den = torch.sqrt((1 + 2 * sq)[..., :, None] * (1 + 2 * sq)[..., None, :])
    return (2 / math.pi) * torch.arcsin((2 * gram / den).clamp(-1, 1))


def _erf_g(gram, norms, cos):
    """(4/pi) x.x' / sqrt((1+2|x|^2)(1+2|x'|^2) - 4 (x.x')^2)."""
    sq = norms * norms
    det = (1 + 2 * sq)[..., :, None] * (1 + 2 * sq)[..., None, :] - 4 * gram * gram
    return gram * (4 / math.pi) / torch.sqrt(det.clamp_min(1.0))


# --------------------------------------------------------------------------- the registry
ACTIVATIONS: dict[str, Activation] = {}
_BUILT_IN: tuple[str, ...] = ()


def register_activation(act: Activation) -> Activation:
    """Make ``act`` known by its name everywhere a name is accepted; returns it."""
    check(isinstance(act, Activation), f"register an Activation, got {act!r}")
    need(
        isinstance(act.name, str) and act.name.isidentifier(),
        "activation name",
        act.name,
        "an identifier",
    )
    check(act.name not in ACTIVATIONS, f"activation {act.name!r} is already registered")
    check(
        callable(act.fn) and callable(act.deriv),
        f"activation {act.name!r}: fn and deriv must be callable",
    )
    ACTIVATIONS[act.name] = act
    return act


def unregister_activation(name: str) -> None:
    """Remove an activation added by :func:`register_activation` (the built-ins stay)."""
    check(name not in _BUILT_IN, f"activation {name!r} is built in and cannot be removed")
    choice("activation", name, tuple(ACTIVATIONS))
    del ACTIVATIONS[name]


# The step sizes are the authors' code values (the paper's text quotes values ten times
# smaller, a transcription slip: the code writes 10e-4, 10e-3, 10e-2); dropout_lr: their
# dropout runs (E1's setting with dropout in place of weight decay, lambda = 0). Sigmoid is
# not in the paper; it takes tanh's.
for _act in (
    Activation(
        "linear", _linear, _one, _linear_h, _linear_g, native="linear", identity=True,
        lr=1e-3, dropout_lr=1e-2, dropout_base_steps=10000,
    ),
    Activation(
        "relu", torch.relu, _relu_deriv, _relu_h, _relu_g, native="relu", relu_like=True,
        lr=1e-2, dropout_lr=1e-3, label="ReLU",
    ),
    Activation(
        "tanh", torch.tanh, _tanh_deriv, compile_form=(_tanh_for_compile, _tanh_deriv_for_compile),
        native="tanh", lr=1e-1, dropout_lr=1e-1,
    ),
    Activation(
        "sigmoid", torch.sigmoid, _sigmoid_deriv, native="sigmoid", lr=1e-1, dropout_lr=1e-1
    ),
    Activation("erf", torch.erf, _erf_deriv, _erf_h, _erf_g),
):  # fmt: skip
    register_activation(_act)
_BUILT_IN = tuple(ACTIVATIONS)


def _accepted() -> str:
    return f"{', '.join(ACTIVATIONS)}, an Activation, or a (psi, dpsi) pair of callables"


def get_activation(spec: str | Activation | tuple[Fn, Fn]) -> Activation:
    """Resolve a registered name, an :class:`Activation`, or a ``(psi, dpsi)`` pair."""
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        try:
            return ACTIVATIONS[spec]
        except KeyError:
            raise refusal("activation", spec, _accepted()) from None
    if isinstance(spec, tuple) and len(spec) == 2 and all(callable(f) for f in spec):
        return Activation(getattr(spec[0], "__name__", "custom"), spec[0], spec[1])
    raise refusal("activation", spec, _accepted())


def paper_lr(activation: str | Activation, dropout: bool = False) -> float:
    """The step size ``lr = "paper"`` (``"paper_dropout"`` with ``dropout``) stands for with
    ``activation`` (a name or an object)."""
    return get_activation(activation).paper_lr(dropout)


def with_closed_form(kernel: str) -> tuple[str, ...]:
    """Names of the registered activations with a closed form of ``kernel`` ("h" or "g")."""
    return tuple(n for n, a in ACTIVATIONS.items() if getattr(a, f"{kernel}_closed"))


def with_native() -> tuple[str, ...]:
    """Names of the registered activations that have native kernels."""
    return tuple(n for n, a in ACTIVATIONS.items() if a.native)
