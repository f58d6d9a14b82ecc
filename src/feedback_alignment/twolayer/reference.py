"""The paper's training step for one two-layer network, written plainly: read this first.

The network is f(x) = (1/sqrt p) sum_r beta_r psi(w_r . x) (docs/paper.md). One full-batch
gradient-descent step on the mean squared error L = (1/n) sum_i e_i^2, e = f(X) - y, moves
both layers from the same errors e:

    beta <- beta - eta [ (c/sqrt p) psi(Z)^T e + lambda beta ]
    W    <- W    - eta [ (c/sqrt p) (fb * (psi'(Z) * e)^T) X + w_decay W ]

with Z = X W^T, c = 2/n and fb the rule's feedback vector (:mod:`.rules`): b for feedback
alignment, beta for backprop. With dropout (``mask``, the 0/1 (n, p) matrix of kept units,
and its probability ``q``; :mod:`.dropout` derives it from autograd) psi(Z) and psi'(Z) are
both multiplied by mask / (1 - q). This is the oracle: every path and kernel of the engine
(:mod:`.engine`, :mod:`.paths`, :mod:`.fused`, :mod:`.native`) is tested against a loop of
these steps in float64 to 1e-12 (``tests/test_reference.py``).
"""

from __future__ import annotations

import math

import torch

from ..activations import Activation, get_activation
from .rules import get_rule


def output(W: torch.Tensor, beta: torch.Tensor, X: torch.Tensor, psi) -> torch.Tensor:
    """f(x_i) for the n rows of X: (1/sqrt p) psi(X W^T) beta."""
    psi = get_activation(psi)
    return psi(X @ W.T) @ beta / math.sqrt(W.shape[0])


def step(
    W: torch.Tensor,
    beta: torch.Tensor,
    b: torch.Tensor,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    psi: str | Activation,
    eta: float,
    lam: float = 0.0,
    w_decay: float = 0.0,
    rule: str = "fa",
    c: float | None = None,
    mask: torch.Tensor | None = None,
    q: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, beta) after one step; W (p, d), beta and b (p,), X (n, d), y (n,).

    ``lam`` is the second layer's weight decay lambda, ``w_decay`` the first layer's;
    ``c`` the loss factor in dL/du = c e (2/n, the authors' mean squared error, unless
    given: 1 for half the sum of squares)."""
    psi = get_activation(psi)
    n, p = X.shape[0], W.shape[0]
    c = 2.0 / n if c is None else c
    Z = X @ W.T  # (n, p): z_ir = w_r . x_i
    S = torch.ones_like(Z) if mask is None else mask / (1 - q)  # inverted dropout's scale
    H, D = psi(Z) * S, psi.deriv(Z) * S  # the (dropped) activations and derivatives
    e = H @ beta / math.sqrt(p) - y  # (n,)
    fb = get_rule(rule).feedback(b, beta)  # the vector the error travels back through
    grad_beta = c / math.sqrt(p) * H.T @ e
    update_W = c / math.sqrt(p) * (fb[:, None] * (D * e[:, None]).T) @ X
    return W - eta * (update_W + w_decay * W), beta - eta * (grad_beta + lam * beta)
