"""Learning rules: what feedback weight each layer's backward pass uses.

A rule decides the matrix B that carries the error from a layer's output back to its
input, ``grad_input = grad_output @ B`` (for a convolution: the transposed convolution
with kernel B), while the layer's own weight gradient is always the local product of
its input and ``grad_output``. Rules:

``bp``    B = W (backpropagation; the reference).
``fa``    B fixed, drawn at conversion (feedback alignment).
``usf``   B = s * sign(W), s a fixed scale (uniform sign-concordant feedback).
``frsf``  B = |R0| * sign(W), R0 drawn once (fixed random-magnitude sign feedback).
``brsf``  B = |R| * sign(W), R redrawn at every backward pass (batchwise random magnitude).
``kp``    B is a parameter that receives W's gradient, so the optimiser gives it W's
          update and W's decay (Kolen-Pollack); B - W then shrinks under decay.
``wm``    B is updated by a separate noise-driven mirror phase,
          B <- (1 - decay) B + lr * W (x^T x / n), x ~ N(0, I) (weight mirror).
``dfa``   The error e at the output of the last converted layer goes straight to the
          input of every converted layer through a fixed matrix D of shape
          (len(e), *input_shape): grad_input = e @ D (direct feedback alignment).

Every rule is one small class registered with :func:`register` that declares what it is
(:class:`Rule`: ``direct`` feedback, a ``mirror`` phase, a ``state_grad`` for a learned
state); its state lives in buffers (or, for ``kp``, a parameter) of the layer so
``state_dict`` round-trips it.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, check, choice, need

RULES: dict[str, type[Rule]] = {}
INITS = ("gaussian", "uniform", "orthogonal", "copy")


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make a rule available by its ``name``."""
    check(isinstance(cls.name, str) and cls.name, f"rule class {cls!r} needs a name")
    RULES[cls.name] = cls
    return cls


def get_rule(name: str, **options) -> Rule:
    """An instance of the rule called ``name`` (see :data:`RULES`)."""
    if isinstance(name, Rule):
        return name
    choice("rule", name, RULES)
    return RULES[name](**options)


def init_feedback(
    shape, kind: str, scale: float, generator: torch.Generator, like: torch.Tensor | None = None
) -> torch.Tensor:
    """A float64 tensor of ``shape`` on ``generator``'s device, drawn as ``kind`` with
    standard deviation ``scale``.

    ``gaussian``: N(0, scale^2); ``uniform``: U(-sqrt(3) scale, sqrt(3) scale);
    ``orthogonal``: a (semi-)orthogonal matrix on the flattened shape, rescaled to RMS
    ``scale``; ``copy``: a copy of ``like`` (the forward weight; tests and ablations).
    """
    choice("feedback init", kind, INITS)
    shape = tuple(shape)
    if kind == "copy":
        check(
            like is not None and tuple(like.shape) == shape,
            f"feedback init 'copy' needs a forward weight of shape {shape}; "
            f"got {None if like is None else tuple(like.shape)}",
        )
        return like.detach().to("cpu", torch.float64).clone()
    dev = generator.device
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, dtype=torch.float64, device=dev) * scale
    if kind == "uniform":
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=dev)
        return (2 * u - 1) * (math.sqrt(3.0) * scale)
    rows, cols = shape[0], int(math.prod(shape[1:]))
    a = torch.randn(
        max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64, device=dev
    )
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))
    m = q if rows >= cols else q.T
    m = m * (scale / m.pow(2).mean().sqrt())
    return m.reshape(shape)


def weight_scale(weight: torch.Tensor) -> float:
    """The standard deviation of a weight tensor (1/sqrt(fan_in) when it is degenerate)."""
    w = weight.detach().to(torch.float64)
    s = float(w.std()) if w.numel() > 1 else 0.0
    if not math.isfinite(s) or s == 0.0:
        s = 1.0 / math.sqrt(max(1, w[0].numel() if w.dim() > 1 else 1))
    return s


class Rule:
    """Base class: a rule declares what it is with class attributes and overrides the
    hooks in which it differs from backprop.

    Declarations:

    ``name``          its key in :data:`RULES` (configs, state dicts, reports).
    ``needs_weight``  ``feedback`` reads W, so W is saved for the backward pass.
    ``is_backprop``   its gradients are autograd's own: its layers run the plain layer (no
                      custom backward, no Python in the backward pass) unless a metric is
                      recording their signals. Not inherited: a subclass may change B.
    ``direct``        direct feedback: the error e at the output of the last converted
                      layer goes straight to every layer's input, ``grad_input = e @ B``,
                      so B has shape (output size, *input shape); :func:`~.convert.convert`
                      sizes it and the metrics compare it with the forward map from the
                      layer's input to the output.
    ``mirror_phase``  set for a rule that defines :meth:`mirror`, a step run between
                      training steps (by :func:`~.convert.mirror` and the trainer).

    Hooks: ``setup`` creates the rule's state on the layer; ``state`` returns the tensor
    handed to the autograd function (saved for backward); ``feedback`` returns B from W
    and that state; ``state_grad`` gives a state that is an ``nn.Parameter`` its gradient.
    """

    name = ""
    needs_weight = False
    is_backprop = False
    direct = False
    mirror_phase = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "is_backprop" not in cls.__dict__:  # a subclass of Backprop may change B
            cls.is_backprop = False
        cls.mirror_phase = cls.mirror is not Rule.mirror

    def __init__(self, **options):
        if options:
            raise ConfigError(
                f"rule {self.name!r} takes no options; got {', '.join(sorted(options))}"
            )

    def options(self) -> dict:
        """Plain options stored in the layer's extra state (for state_dict checks)."""
        return {}

    def setup(self, layer, *, init: str, scale: float, generator: torch.Generator) -> None:
        """Create the rule's buffers/parameters on ``layer`` (called once, by convert)."""

    def state(self, layer) -> torch.Tensor | None:
        return getattr(layer, "feedback", None)

    def feedback(self, layer, weight: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def state_grad(self, layer, grad_weight: torch.Tensor) -> torch.Tensor | None:
        """The gradient of a state that is a parameter (None: it learns nothing)."""
        return None

    def mirror(self, layer, generator: torch.Generator | None = None) -> None:
        """One step of a mirror phase; a rule that has one overrides this."""

    def current_feedback(self, layer) -> torch.Tensor:
        """B as the next backward pass would use it (metrics; no state changes)."""
        return self.feedback(layer, layer.weight.detach(), _detach(self.state(layer)))


def _detach(t):
    return None if t is None else t.detach()


def _store(layer, name: str, value: torch.Tensor, parameter: bool = False) -> None:
    value = value.to(device=layer.weight.device, dtype=layer.weight.dtype)
    if parameter:
        layer.register_parameter(name, torch.nn.Parameter(value))
    else:
        layer.register_buffer(name, value)


def _draw_feedback(layer, init, scale, generator, parameter: bool = False) -> None:
    """Store a random tensor of the layer's feedback shape as ``layer.feedback``."""
    fb = init_feedback(layer.feedback_shape(), init, scale, generator, layer.weight)
    _store(layer, "feedback", fb, parameter)


@register
class Backprop(Rule):
    """B = W: exact backpropagation (plain autograd; the custom backward when recording)."""

    name = "bp"
    needs_weight = True
    is_backprop = True

    def feedback(self, layer, weight, state):
        return weight


@register
class FeedbackAlignment(Rule):
    """B fixed at conversion (Lillicrap et al. 2016)."""

    name = "fa"

    def setup(self, layer, *, init, scale, generator):
        _draw_feedback(layer, init, scale, generator)

    def feedback(self, layer, weight, state):
        return state


@register
class UniformSignFeedback(Rule):
    """B = s * sign(W); s = ``scale`` (default: the std of W at conversion)."""

    name = "usf"
    needs_weight = True

    def setup(self, layer, *, init, scale, generator):
        _store(layer, "feedback_scale", torch.tensor(float(scale), dtype=torch.float64))

    def state(self, layer):
        return layer.feedback_scale

    def feedback(self, layer, weight, state):
        return torch.sign(weight) * state


@register
class FixedRandomSignFeedback(Rule):
    """B = |R0| * sign(W), R0 drawn once at conversion."""

    name = "frsf"
    needs_weight = True

    def setup(self, layer, *, init, scale, generator):
        _draw_feedback(layer, init, scale, generator)

    def feedback(self, layer, weight, state):
        return torch.abs(state) * torch.sign(weight)


@register
class BatchRandomSignFeedback(Rule):
    """B = |R| * sign(W), R redrawn (seeded, counted) at every backward pass."""

    name = "brsf"
    needs_weight = True

    def setup(self, layer, *, init, scale, generator):
        choice("brsf feedback init", init, ("gaussian", "uniform"))
        self.init = init
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        layer.register_buffer("feedback_scale", torch.tensor(float(scale), dtype=torch.float64))
        layer.register_buffer("feedback_seed", torch.tensor(seed, dtype=torch.int64))
        layer.register_buffer("feedback_draws", torch.tensor(0, dtype=torch.int64))

    def options(self):
        return {"init": getattr(self, "init", "gaussian")}

    def state(self, layer):
        return None

    def draw(self, layer, draw_index: int) -> torch.Tensor:
        """R for the given draw: a function of (seed, draw index) only, drawn by a
        generator on W's device (no host-to-device copy on a GPU; a CUDA generator gives
        other numbers than the CPU one for the same seed)."""
        seed = (int(layer.feedback_seed) * 1_000_003 + draw_index) % 2**63
        g = torch.Generator(device=layer.weight.device).manual_seed(seed)
        r = init_feedback(layer.weight.shape, self.options()["init"], 1.0, g)
        return r.to(layer.weight.dtype) * float(layer.feedback_scale)

    def feedback(self, layer, weight, state):
        r = self.draw(layer, int(layer.feedback_draws))
        layer.feedback_draws += 1
        return torch.abs(r) * torch.sign(weight)

    def current_feedback(self, layer):
        r = self.draw(layer, int(layer.feedback_draws))
        return torch.abs(r) * torch.sign(layer.weight.detach())


@register
class KolenPollack(FeedbackAlignment):
    """B is a parameter whose gradient is W's gradient: same update, same decay."""

    name = "kp"

    def setup(self, layer, *, init, scale, generator):
        _draw_feedback(layer, init, scale, generator, parameter=True)

    def state_grad(self, layer, grad_weight):
        return grad_weight


@register
class WeightMirror(FeedbackAlignment):
    """B learns W from noise: B <- (1 - decay) B + lr * W (x^T x / n), x ~ N(0, I).

    The mirror phase runs when :func:`mirror` (or the trainer) calls it, never inside
    the backward pass; B is a buffer, the optimiser never touches it.
    """

    name = "wm"

    def __init__(self, lr: float = 0.01, decay: float = 0.01, batch: int = 128):
        need(lr > 0 and math.isfinite(lr), "wm lr", lr, "a positive number")
        need(0 <= decay < 1, "wm decay", decay, "a number in [0, 1)")
        need(int(batch) == batch and batch >= 1, "wm batch", batch, "an integer >= 1")
        self.lr, self.decay, self.batch = float(lr), float(decay), int(batch)

    def options(self):
        return {"lr": self.lr, "decay": self.decay, "batch": self.batch}

    @torch.no_grad()
    def mirror(self, layer, generator=None):
        """One mirror step: noise x through W (as a map on flattened patches), Hebbian B."""
        w = layer.weight.reshape(layer.weight.shape[0], -1)
        x = torch.randn(self.batch, w.shape[1], generator=generator, dtype=torch.float64)
        x = x.to(w.device, w.dtype)
        y = x @ w.T
        delta = (y.T @ x) / self.batch
        fb = layer.feedback
        fb.mul_(1.0 - self.decay).add_(delta.reshape(fb.shape), alpha=self.lr)


@register
class DirectFeedbackAlignment(FeedbackAlignment):
    """grad_input = e @ D, e the error at the output layer's output, D fixed per layer
    (Nokland 2016).

    D has shape (output_size, *input_shape) and is drawn at conversion; the layer's own
    weight gradient uses the signal it receives, as in every rule. The output layer is
    the last converted layer; it keeps e for the others when its backward runs, which
    happens before every other layer's in the same backward pass.
    """

    name = "dfa"
    direct = True
