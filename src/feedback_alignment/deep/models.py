"""Models by name: the paper's E3 network, the authors' three-layer E4 network and their
two-layer backprop baseline, a plain MLP and a small CNN for 28x28 input."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from ..errors import ConfigError, choice, need

E3_HIDDEN = 1000  # the paper's hidden width
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity}


class Scale(nn.Module):
    """Multiply by a constant (the paper's 1/sqrt(p) output scaling); no parameters."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x):
        return x * self.factor

    def extra_repr(self):
        return f"factor={self.factor:g}"


def _generator(seed: int) -> torch.Generator:
    need(isinstance(seed, int) and not isinstance(seed, bool), "seed", seed, "an integer")
    return torch.Generator().manual_seed(seed)


def _check_sizes(model: str, **sizes) -> None:
    for k, v in sizes.items():
        need(isinstance(v, int) and v >= 1, f"{model} {k}", v, "a positive int")


def _gaussian(layers: OrderedDict, seed: int) -> nn.Sequential:
    """``layers`` as a network whose Linear weights are drawn i.i.d. N(0, 1), in order,
    from one generator seeded by ``seed`` (drawn in float64)."""
    g = _generator(seed)
    net = nn.Sequential(layers)
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                w = torch.randn(layer.weight.shape, generator=g, dtype=torch.float64)
                layer.weight.copy_(w)
    return net


def e3_network(
    hidden: int = E3_HIDDEN, inputs: int = 784, classes: int = 10, seed: int = 0
) -> nn.Sequential:
    """The paper's MNIST network: 784 -> ``hidden`` ReLU (no biases) -> 10, output times
    1/sqrt(hidden); W and beta i.i.d. N(0, 1). Layers: ``hidden`` (W) and ``out`` (beta).

    Train it with feedback drawn N(0, 1) (``convert(net, "fa", scale=1.0)``; done by
    :func:`build` and the trainer) and weight decay on ``out`` only.
    """
    _check_sizes("e3", hidden=hidden, inputs=inputs, classes=classes)
    return _gaussian(
        OrderedDict(
            flatten=nn.Flatten(),
            hidden=nn.Linear(inputs, hidden, bias=False),
            relu=nn.ReLU(),
            out=nn.Linear(hidden, classes, bias=False),
            scale=Scale(1.0 / math.sqrt(hidden)),
        ),
        seed,
    )


def e4_network(
    hidden: int = E3_HIDDEN, inputs: int = 784, classes: int = 10, seed: int = 0
) -> nn.Sequential:
    """The authors' three-layer MNIST network (E4): 784 -> ``hidden`` -> ``hidden`` -> 10,
    ReLU, no biases, every W i.i.d. N(0, 1), output divided by ``hidden`` (the width, not
    its square root). Layers ``fc1``, ``fc2``, ``fc3``; the authors decay fc2 and fc3.

    Train it with every layer an FA layer, feedback N(0, 1) (``convert(net, "fa",
    scale=1.0)``; :func:`build` and the trainer do so)."""
    _check_sizes("e4", hidden=hidden, inputs=inputs, classes=classes)
    return _gaussian(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(inputs, hidden, bias=False),
            relu1=nn.ReLU(),
            fc2=nn.Linear(hidden, hidden, bias=False),
            relu2=nn.ReLU(),
            fc3=nn.Linear(hidden, classes, bias=False),
            scale=Scale(1.0 / hidden),
        ),
        seed,
    )


def bp_baseline_network(
    hidden: int = E3_HIDDEN, inputs: int = 784, classes: int = 10, seed: int = 0
) -> nn.Sequential:
    """The authors' two-layer backprop baseline: ``nn.Linear`` layers WITH biases and
    PyTorch's default initialisation (seeded), 784 -> ``hidden`` ReLU -> 10, output times
    1/sqrt(hidden). Layers ``hidden`` and ``out``; they penalise the loss with
    lambda |out.weight|^2 (:data:`~.lambdas.BP_BASELINE`)."""
    _check_sizes("bp baseline", hidden=hidden, inputs=inputs, classes=classes)
    _generator(seed)  # checks the seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                hidden=nn.Linear(inputs, hidden),
                relu=nn.ReLU(),
                out=nn.Linear(hidden, classes),
                scale=Scale(1.0 / math.sqrt(hidden)),
            )
        )


def mlp(
    sizes=(784, 256, 10), activation: str = "relu", bias: bool = True, seed: int = 0
) -> nn.Sequential:
    """Flatten, then Linear layers ``sizes[i] -> sizes[i+1]`` with ``activation`` between
    (PyTorch's default initialisation, seeded). Layers are named fc1, fc2, ..."""
    sizes = list(sizes)
    need(
        len(sizes) >= 2 and all(isinstance(s, int) and s >= 1 for s in sizes),
        "mlp sizes",
        sizes,
        "at least two positive ints",
    )
    choice("activation", activation, ACTIVATIONS)
    mods: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(len(sizes) - 1):
            mods.append((f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1], bias=bias)))
            if i < len(sizes) - 2:
                mods.append((f"act{i + 1}", ACTIVATIONS[activation]()))
    return nn.Sequential(OrderedDict(mods))


def small_cnn(
    in_channels: int = 1, classes: int = 10, image: int = 28, width: int = 16, seed: int = 0
) -> nn.Sequential:
    """conv5(width) - ReLU - maxpool2 - conv5(2 width) - ReLU - maxpool2 - fc(classes)."""
    need(image % 4 == 0 and image >= 4, "small_cnn image size", image, "a multiple of 4")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, width, 5, padding=2),
                relu1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(width, 2 * width, 5, padding=2),
                relu2=nn.ReLU(),
                pool2=nn.MaxPool2d(2),
                flatten=nn.Flatten(),
                fc=nn.Linear(2 * width * (image // 4) ** 2, classes),
            )
        )


# the models sized by one width (``hidden``): how many hidden layers of that width
WIDTH_MODELS = {"e3": 1, "e4": 2, "bp_baseline": 1}
MODELS = {
    "e3": e3_network,
    "e4": e4_network,
    "bp_baseline": bp_baseline_network,
    "mlp": mlp,
    "cnn": small_cnn,
}


def build_model(name: str, **options) -> nn.Module:
    """A model by name (``e3``, ``e4``, ``bp_baseline``, ``mlp``, ``cnn``) with its keyword
    options."""
    choice("model", name, MODELS)
    try:
        return MODELS[name](**options)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}".splitlines()[0]) from None
