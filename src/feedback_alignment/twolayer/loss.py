"""The two squared losses of the two-layer system and their gradient factor c.

``"mse"`` is the authors' code: L = (1/n) sum_i e_i^2, so dL/du = (2/n) e.
``"sse"`` is half the sum of squares: L = (1/2) sum_i e_i^2, so dL/du = e.
In both cases dL/du = c * e with c = :func:`loss_factor`.
"""

from __future__ import annotations

from ..errors import choice

LOSSES = ("mse", "sse")


def loss_factor(loss: str, n: int) -> float:
    """c in dL/du = c * e."""
    choice("loss", loss, LOSSES)
    return 2.0 / n if loss == "mse" else 1.0
