"""The kernels H and G: at given weights, in the infinite-width limit, and by Monte Carlo.

    H_ij = (1/p) sum_r psi(w_r.x_i) psi(w_r.x_j)                          (second layer)
    G_ij = (1/p) sum_r fb_r beta_r psi'(w_r.x_i) psi'(w_r.x_j) x_i.x_j    (first layer)

with fb = b (feedback alignment) or beta (backprop). :func:`empirical_kernels` computes
them at given weights; :func:`h_inf` and :func:`g_inf_bp` give their limits for
w ~ N(0, I_d), in closed form where the activation declares one (linear, relu and erf:
:mod:`feedback_alignment.activations`) and by quadrature (:mod:`.quadrature`) otherwise;
:func:`h_monte_carlo` and :func:`g_bp_monte_carlo` are the independent sampled references
beside them. See docs/theory.md.
"""

from __future__ import annotations

import math

import torch

from ...activations import get_activation, with_closed_form
from ...bounds import check_memory, within
from ...errors import ConfigError, check, choice, need
from ._checks import F64, as_f64
from .quadrature import bivariate_expectation

METHODS = ("auto", "closed", "quadrature")


def _gram(X: torch.Tensor):
    """Gram matrix and row norms of X (..., n, d)."""
    gram = X @ X.transpose(-1, -2)
    sq = torch.diagonal(gram, dim1=-2, dim2=-1).clamp_min(0)
    return gram, sq.sqrt()


def _cos(gram: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """cos of the angle between rows, clamped into [-1, 1]; 0 where a row has zero norm."""
    den = norms[..., :, None] * norms[..., None, :]
    cos = torch.where(den > 0, gram / torch.where(den > 0, den, 1.0), torch.zeros_like(gram))
    return cos.clamp(-1.0, 1.0)


# --------------------------------------------------------------------------- empirical
def empirical_kernels(X, W, beta, b, activation="relu") -> tuple[torch.Tensor, torch.Tensor]:
    """The finite-width kernels (H, G) of the linearised dynamics at weights (W, beta, b).

    Unbatched: X (n, d), W (p, d), beta and b (p,) -> H, G (n, n).
    Batched: X (n, d) shared or (K, n, d), W (K, p, d), beta and b (K, p) -> (K, n, n).
    Pass ``b=beta`` for backprop (G is then the PSD first-layer part of the NTK); for
    feedback alignment pass the fixed feedback vector (G has mean zero at initialisation).
    """
    act = get_activation(activation)
    W = as_f64("W", W, (2, 3))
    batched = W.dim() == 3
    X = as_f64("X", X, (2, 3) if batched else (2,))
    vec = (2,) if batched else (1,)
    beta = as_f64("beta", beta, vec)
    b = as_f64("b", b, vec)
    p, d = W.shape[-2:]
    check(
        X.shape[-1] == d, f"X has {X.shape[-1]} features but W has d={d} (W shape {tuple(W.shape)})"
    )
    check(
        beta.shape == W.shape[:-1], f"beta shape {tuple(beta.shape)} must be {tuple(W.shape[:-1])}"
    )
    check(b.shape == W.shape[:-1], f"b shape {tuple(b.shape)} must be {tuple(W.shape[:-1])}")
    if batched and X.dim() == 3:
        check(X.shape[0] == W.shape[0], f"X has {X.shape[0]} members but W has {W.shape[0]}")
    Z = X @ W.transpose(-1, -2)  # (..., n, p)
    A = act.fn(Z)
    D = act.deriv(Z)
    H = A @ A.transpose(-1, -2) / p
    fb = (b * beta).unsqueeze(-2)  # (..., 1, p)
    G = ((D * fb) @ D.transpose(-1, -2)) / p * (X @ X.transpose(-1, -2))
    return H, G


# --------------------------------------------------------------------------- infinite width
def _pairwise_quadrature(f, X: torch.Tensor, order: int, levels: int) -> torch.Tensor:
    """E_w[f(w.x_i) f(w.x_j)] for every pair of rows of X (..., n, d), upper triangle only."""
    gram, norms = _gram(X)
    cos = _cos(gram, norms)
    n = X.shape[-2]
    iu, ju = torch.triu_indices(n, n)
    s1 = norms[..., iu].reshape(-1)
    s2 = norms[..., ju].reshape(-1)
    ct = cos[..., iu, ju].reshape(-1)
    vals = bivariate_expectation(f, f, s1, s2, ct, order, levels)
    out = torch.zeros(*X.shape[:-2], n, n, dtype=F64)
    vals = vals.reshape(*X.shape[:-2], -1)
    out[..., iu, ju] = vals
    out[..., ju, iu] = vals
    return out


def _kernel_inputs(X, activation, method, order, levels, kernel):
    """(X as float64, the activation, its closed form of ``kernel`` or None to use quadrature)."""
    X = as_f64("X", X, (2, 3))
    within("order", order, "quadrature_order")
    within("levels", levels, "quadrature_levels")
    act = get_activation(activation)
    choice("method", method, METHODS)
    closed = getattr(act, f"{kernel}_closed")
    if method == "closed" and closed is None:
        raise ConfigError(
            f"no closed form for activation {act.name!r}; closed forms exist for "
            f"{', '.join(with_closed_form(kernel))}; use method='auto' or 'quadrature'"
        )
    return X, act, (closed if method != "quadrature" else None)


def h_inf(X, activation="relu", method: str = "auto", order: int = 10, levels: int = 5):
    """Infinite-width second-layer kernel H_inf(x, x') = E_w[psi(w.x) psi(w.x')], w ~ N(0, I_d).

    X is (n, d) or (K, n, d). The activation's closed form where it declares one (linear:
    x.x'; relu: arc-cosine degree 1; erf: Williams' arcsine kernel); otherwise polar
    Gauss-Legendre quadrature of the bivariate normal of (w.x, w.x') with ``order`` points
    per piece (``method`` forces one). There is no 1/sqrt(d): w.x ~ N(0, |x|^2), as in the
    paper's initialisation.
    """
    X, act, closed = _kernel_inputs(X, activation, method, order, levels, "h")
    if closed is None:
        return _pairwise_quadrature(act.fn, X, order, levels)
    gram, norms = _gram(X)
    return closed(gram, norms, _cos(gram, norms))


def g_inf_bp(X, activation="relu", method: str = "auto", order: int = 10, levels: int = 5):
    """Infinite-width backprop first-layer kernel x.x' E_w[psi'(w.x) psi'(w.x')], w ~ N(0, I_d).

    The limit of G at initialisation when fb = beta (for feedback alignment E[G] = 0).
    The activation's closed form where it declares one (linear x.x'; relu x.x' (pi - t)/(2 pi),
    arc-cosine degree 0; erf (4/pi) x.x' / sqrt((1+2|x|^2)(1+2|x'|^2) - 4 (x.x')^2));
    otherwise quadrature.
    """
    X, act, closed = _kernel_inputs(X, activation, method, order, levels, "g")
    gram, norms = _gram(X)
    if closed is None:
        return gram * _pairwise_quadrature(act.deriv, X, order, levels)
    return closed(gram, norms, _cos(gram, norms))


# --------------------------------------------------------------------------- Monte Carlo
def _monte_carlo(f, X, samples: int, seed: int, with_gram: bool, chunk: int):
    """Mean and standard error of E_w[f(w.x_i) f(w.x_j)] (times x_i.x_j with ``with_gram``)."""
    X = as_f64("X", X, (2, 3))
    need(isinstance(samples, int) and samples >= 2, "samples", samples, "an integer >= 2")
    within("samples", samples, "mc_samples")
    within("chunk", chunk, "mc_chunk")
    within("seed", seed, "seed")
    rows = math.prod(X.shape[:-1])
    check_memory(
        8 * (4 * rows * min(chunk, samples) + chunk * X.shape[-1] + 4 * rows * X.shape[-2]),
        f"Monte Carlo with chunk = {chunk} over X of shape {tuple(X.shape)}",
        "a smaller chunk",
    )
    d = X.shape[-1]
    gen = torch.Generator().manual_seed(int(seed))
    s1 = torch.zeros(*X.shape[:-2], X.shape[-2], X.shape[-2], dtype=F64)
    s2 = torch.zeros_like(s1)
    done = 0
    while done < samples:
        m = min(chunk, samples - done)
        w = torch.randn(m, d, generator=gen, dtype=F64)
        A = f(X @ w.T)  # (..., n, m)
        s1 += A @ A.transpose(-1, -2)
        s2 += (A * A) @ (A * A).transpose(-1, -2)
        done += m
    mean = s1 / samples
    var = (s2 - samples * mean * mean).clamp_min(0) / (samples - 1)
    se = torch.sqrt(var / samples)
    if with_gram:
        gram = X @ X.transpose(-1, -2)
        return gram * mean, gram.abs() * se
    return mean, se


def h_monte_carlo(X, activation="relu", samples: int = 200_000, seed: int = 0, chunk: int = 8192):
    """Monte Carlo H_inf from ``samples`` draws w ~ N(0, I_d): (mean, standard error) per entry.

    An independent reference for :func:`h_inf`; the same draws serve every member of a
    batched X (K, n, d).
    """
    return _monte_carlo(get_activation(activation).fn, X, samples, seed, False, chunk)


def g_bp_monte_carlo(
    X, activation="relu", samples: int = 200_000, seed: int = 0, chunk: int = 8192
):
    """Monte Carlo reference for :func:`g_inf_bp`: (mean, standard error) per entry."""
    return _monte_carlo(get_activation(activation).deriv, X, samples, seed, True, chunk)
