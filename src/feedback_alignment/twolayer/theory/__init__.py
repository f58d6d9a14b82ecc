"""Convergence theory of the two-layer system: kernels, rates and the linearised loss curve.

In the lazy (over-parameterised) regime the outputs u = f(X) of the paper's network move as

    u(t+1) - u(t) ~ -lr c (H + G) e(t) - lr lam(t) u(t)          e = u - y

with c the loss factor (:func:`~feedback_alignment.twolayer.loss.loss_factor`) and H, G
the second- and first-layer kernels. The package reads in that order:

* :mod:`.kernels`: H and G at given weights, their infinite-width limits (closed forms,
  and :mod:`.quadrature` where there is none) and the Monte Carlo references beside them;
* :mod:`.dynamics`: the rate set by the smallest eigenvalue, the whole predicted loss
  curve and its settle level under weight decay;
* :mod:`.comparison`: a measured run beside that prediction.

Everything is float64 and batched over a leading ensemble axis K where noted.
Every public name is importable from here. See docs/theory.md.
"""

from __future__ import annotations

from .comparison import Comparison, compare_with_prediction
from .dynamics import (
    LossPrediction,
    lambda_min,
    predict_loss_curve,
    predicted_rate,
    settle_level,
    steps_to_reduce,
)
from .kernels import empirical_kernels, g_bp_monte_carlo, g_inf_bp, h_inf, h_monte_carlo

__all__ = [
    "LossPrediction",
    "Comparison",
    "empirical_kernels",
    "h_inf",
    "g_inf_bp",
    "h_monte_carlo",
    "g_bp_monte_carlo",
    "lambda_min",
    "predicted_rate",
    "steps_to_reduce",
    "settle_level",
    "predict_loss_curve",
    "compare_with_prediction",
]
