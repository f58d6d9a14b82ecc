"""feedback-alignment: training with random feedback weights, and why it works.

The paper's two-layer system (Song, Xu & Lafferty 2021) is importable from the top::

    import feedback_alignment as fa
    X, y = fa.linear_teacher(n=50, d=150, seed=0)
    ens = fa.TwoLayerEnsemble(d=150, p=800, seeds=range(4), activation="linear")
    hist = ens.fit(X, y, rule="fa", lr=1e-2, lam=0.3, steps=1000)

Kernels and predictions live in :mod:`feedback_alignment.twolayer.theory`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .activations import Activation, get_activation
from .errors import ConfigError, DivergenceError
from .twolayer import theory
from .twolayer.data import linear_teacher, random_teacher, stack
from .twolayer.engine import History, Plateau, TwoLayerEnsemble
from .twolayer.schedules import Constant, CutOff, ExpDecay

__all__ = [
    "Activation",
    "ConfigError",
    "Constant",
    "CutOff",
    "DivergenceError",
    "ExpDecay",
    "History",
    "Plateau",
    "TwoLayerEnsemble",
    "get_activation",
    "linear_teacher",
    "random_teacher",
    "stack",
    "theory",
]
