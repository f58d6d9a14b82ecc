"""Convergence theory of the two-layer system: kernels, rates and the linearised loss curve.

In the lazy (over-parameterised) regime the outputs u = f(X) of the paper's network move as

    u(t+1) - u(t) ~ -lr c (H + G) e(t) - lr lam(t) u(t)          e = u - y

with c the loss factor (:func:`~feedback_alignment.twolayer.loss.loss_factor`) and

    H_ij = (1/p) sum_r psi(w_r.x_i) psi(w_r.x_j)                          (second layer)
    G_ij = (1/p) sum_r fb_r beta_r psi'(w_r.x_i) psi'(w_r.x_j) x_i.x_j    (first layer)

where fb = b (feedback alignment) or beta (backprop). This module computes H and G for
given weights (:func:`empirical_kernels`), their infinite-width limits for w ~ N(0, I_d)
(:func:`h_inf`, :func:`g_inf_bp`: closed forms where known, quadrature otherwise, and
Monte Carlo references), the rate set by the smallest eigenvalue, the whole predicted loss
curve and its settle level under weight decay, and a comparison of a measured run with it.

Everything is float64 and batched over a leading ensemble axis K where noted.
See docs/theory.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..activations import BUILTIN, Activation, get_activation
from ..errors import ConfigError, check, choice
from .loss import loss_factor

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
    "plot_comparison",
]

F64 = torch.float64
METHODS = ("auto", "closed", "quadrature")


# --------------------------------------------------------------------------- input checks
def _tensor(name: str, value, ndims: tuple[int, ...], dtype=F64) -> torch.Tensor:
    """``value`` as a finite float64 tensor with one of the allowed numbers of axes."""
    try:
        t = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(
            f"{name} must be a numeric array or tensor, got {type(value).__name__}"
        ) from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.bool)):
        raise ConfigError(f"{name} must be real-valued, got dtype {t.dtype}")
    t = t.to(dtype)
    shapes = " or ".join(f"{k}-D" for k in ndims)
    check(t.dim() in ndims, f"{name} must be {shapes}, got shape {tuple(t.shape)}")
    bad = (~torch.isfinite(t)).sum().item()
    check(bad == 0, f"{name} contains {bad} NaN/inf value(s); all entries must be finite")
    return t


def _positive(name: str, value, allow_zero: bool = False) -> torch.Tensor:
    """A scalar or per-member (K,) tensor of positive (or non-negative) finite numbers."""
    t = _tensor(name, value, (0, 1))
    ok = (t >= 0) if allow_zero else (t > 0)
    what = "non-negative" if allow_zero else "positive"
    check(bool(ok.all()), f"{name} must be {what}; got {value!r}")
    return t


def _activation(activation) -> Activation:
    return get_activation(activation)


def _builtin_name(act: Activation) -> str | None:
    """The built-in whose functions ``act`` uses (closed forms apply only to those)."""
    ref = BUILTIN.get(act.name)
    if ref is not None and act.fn is ref.fn and act.deriv is ref.deriv:
        return act.name
    return None


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
    act = _activation(activation)
    W = _tensor("W", W, (2, 3))
    batched = W.dim() == 3
    X = _tensor("X", X, (2, 3) if batched else (2,))
    vec = (2,) if batched else (1,)
    beta = _tensor("beta", beta, vec)
    b = _tensor("b", b, vec)
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


# --------------------------------------------------------------------------- quadrature
_QUAD_CACHE: dict[tuple[int, int, int], tuple[torch.Tensor, ...]] = {}
_RADIUS = 12.0  # exp(-72): the Gaussian weight beyond it is negligible


def _composite(edges: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre with ``order`` points on each panel between consecutive ``edges``."""
    xi, wi = np.polynomial.legendre.leggauss(order)
    lo, hi = edges[:-1, None], edges[1:, None]
    return (lo + (hi - lo) * (xi + 1) / 2).ravel(), ((hi - lo) * wi / 2).ravel()


def _quad_nodes(order: int, levels: int):
    """Angular rule on [0, 1] and radial rule for F(r) r exp(-r^2/2) on [0, _RADIUS].

    Both are composite Gauss-Legendre graded geometrically (``levels`` halvings) towards
    the places where steep activations vary fastest: the ends of each angular piece (where
    an argument changes sign) and r = 0. A steep psi (large |x|) varies on the scale
    1/(|x| r) there, which the grading resolves.
    """
    key = (order, levels)
    if key not in _QUAD_CACHE:
        half = 0.5 * 2.0 ** -np.arange(levels, -1, -1.0)  # 2^-(levels+1) .. 1/2
        ang_edges = np.concatenate([[0.0], half, 1 - half[::-1][1:], [1.0]])
        ang_x, ang_w = _composite(ang_edges, order)
        rad_edges = np.concatenate([[0.0], _RADIUS * 2.0 ** -np.arange(2 * levels, -1, -1.0)])
        r, rw = _composite(rad_edges, order)
        rw = rw * r * np.exp(-r * r / 2)
        _QUAD_CACHE[key] = tuple(torch.as_tensor(a, dtype=F64) for a in (ang_x, ang_w, r, rw))
    return _QUAD_CACHE[key]


def _bivariate_expectation(f1, f2, s1, s2, cos_t, order: int, levels: int, chunk: int = 1 << 22):
    """E[f1(z1) f2(z2)] for (z1, z2) centred normal, sd s1, s2, correlation cos_t (flat tensors).

    Polar coordinates (g1, g2) = r (cos a, sin a) with z1 = s1 r cos a and
    z2 = s2 r cos(a - t): both arguments change sign only at the four angles
    pi/2, pi/2 + t, 3pi/2, 3pi/2 + t, whatever r is, so splitting the angle there leaves
    smooth pieces even for kinked (relu) or steep (tanh at large |x|) activations.
    Gauss-Legendre in the angle on each piece, graded Gauss-Legendre in the radius.
    """
    ax, aw, r, rw = _quad_nodes(order, levels)
    t = torch.arccos(cos_t.clamp(-1, 1))  # (P,)
    starts = torch.stack([0 * t, t, 0 * t + math.pi, math.pi + t], -1) + math.pi / 2  # (P, 4)
    lens = torch.stack([t, math.pi - t, t, math.pi - t], -1)
    ang = (starts[..., None] + lens[..., None] * ax).flatten(-2)  # (P, 4m)
    angw = (lens[..., None] * aw).flatten(-2) / (2 * math.pi)
    P = s1.shape[0]
    out = torch.empty(P, dtype=F64)
    step = max(1, chunk // (ang.shape[-1] * r.shape[0]))
    for i in range(0, P, step):
        sl = slice(i, i + step)
        a = ang[sl]
        c1 = (s1[sl, None] * torch.cos(a))[..., None] * r  # (P, A, R)
        c2 = (s2[sl, None] * torch.cos(a - t[sl, None]))[..., None] * r
        vals = f1(c1) * f2(c2)
        out[sl] = torch.einsum("par,pa,r->p", vals, angw[sl], rw)
    return out


def _pairwise_quadrature(f, X: torch.Tensor, order: int, levels: int) -> torch.Tensor:
    """E_w[f(w.x_i) f(w.x_j)] for every pair of rows of X (..., n, d), upper triangle only."""
    gram, norms = _gram(X)
    cos = _cos(gram, norms)
    n = X.shape[-2]
    iu, ju = torch.triu_indices(n, n)
    s1 = norms[..., iu].reshape(-1)
    s2 = norms[..., ju].reshape(-1)
    ct = cos[..., iu, ju].reshape(-1)
    vals = _bivariate_expectation(f, f, s1, s2, ct, order, levels)
    out = torch.zeros(*X.shape[:-2], n, n, dtype=F64)
    vals = vals.reshape(*X.shape[:-2], -1)
    out[..., iu, ju] = vals
    out[..., ju, iu] = vals
    return out


def _kernel_inputs(X, activation, method):
    X = _tensor("X", X, (2, 3))
    act = _activation(activation)
    choice("method", method, METHODS)
    name = _builtin_name(act)
    closed = name in ("linear", "relu", "erf")
    if method == "closed" and not closed:
        raise ConfigError(
            f"no closed form for activation {act.name!r}; closed forms exist for "
            "linear, relu, erf; use method='auto' or 'quadrature'"
        )
    use_closed = closed and method != "quadrature"
    return X, act, name, use_closed


def h_inf(X, activation="relu", method: str = "auto", order: int = 10, levels: int = 5):
    """Infinite-width second-layer kernel H_inf(x, x') = E_w[psi(w.x) psi(w.x')], w ~ N(0, I_d).

    X is (n, d) or (K, n, d). Closed forms for linear (x.x'), relu (arc-cosine degree 1)
    and erf (Williams' arcsine kernel); otherwise polar Gauss-Legendre quadrature of the
    bivariate normal of (w.x, w.x') with ``order`` points per piece (``method`` forces one).
    There is no 1/sqrt(d): w.x ~ N(0, |x|^2), as in the paper's initialisation.
    """
    X, act, name, use_closed = _kernel_inputs(X, activation, method)
    if not use_closed:
        return _pairwise_quadrature(act.fn, X, order, levels)
    gram, norms = _gram(X)
    if name == "linear":
        return gram
    if name == "relu":
        t = torch.arccos(_cos(gram, norms))
        nn = norms[..., :, None] * norms[..., None, :]
        return nn / (2 * math.pi) * (torch.sin(t) + (math.pi - t) * torch.cos(t))
    sq = norms * norms  # erf
    den = torch.sqrt((1 + 2 * sq)[..., :, None] * (1 + 2 * sq)[..., None, :])
    return (2 / math.pi) * torch.arcsin((2 * gram / den).clamp(-1, 1))


def g_inf_bp(X, activation="relu", method: str = "auto", order: int = 10, levels: int = 5):
    """Infinite-width backprop first-layer kernel x.x' E_w[psi'(w.x) psi'(w.x')], w ~ N(0, I_d).

    The limit of G at initialisation when fb = beta (for feedback alignment E[G] = 0).
    Closed forms: linear x.x'; relu x.x' (pi - t)/(2 pi) (arc-cosine degree 0); erf
    (4/pi) x.x' / sqrt((1+2|x|^2)(1+2|x'|^2) - 4 (x.x')^2); otherwise quadrature.
    """
    X, act, name, use_closed = _kernel_inputs(X, activation, method)
    gram, norms = _gram(X)
    if not use_closed:
        return gram * _pairwise_quadrature(act.deriv, X, order, levels)
    if name == "linear":
        return gram
    if name == "relu":
        t = torch.arccos(_cos(gram, norms))
        return gram * (math.pi - t) / (2 * math.pi)
    sq = norms * norms  # erf
    det = (1 + 2 * sq)[..., :, None] * (1 + 2 * sq)[..., None, :] - 4 * gram * gram
    return gram * (4 / math.pi) / torch.sqrt(det.clamp_min(1.0))


# --------------------------------------------------------------------------- Monte Carlo
def _monte_carlo(f, X, samples: int, seed: int, with_gram: bool, chunk: int):
    X = _tensor("X", X, (2, 3))
    check(
        isinstance(samples, int) and samples >= 2, f"samples must be an int >= 2, got {samples!r}"
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
    act = _activation(activation)
    return _monte_carlo(act.fn, X, samples, seed, False, chunk)


def g_bp_monte_carlo(
    X, activation="relu", samples: int = 200_000, seed: int = 0, chunk: int = 8192
):
    """Monte Carlo reference for :func:`g_inf_bp`: (mean, standard error) per entry."""
    act = _activation(activation)
    return _monte_carlo(act.deriv, X, samples, seed, True, chunk)


# --------------------------------------------------------------------------- rates
def _symmetric(name: str, kernel) -> torch.Tensor:
    K = _tensor(name, kernel, (2, 3))
    check(K.shape[-1] == K.shape[-2], f"{name} must be square, got shape {tuple(K.shape)}")
    asym = (K - K.transpose(-1, -2)).abs().max().item()
    scale = max(K.abs().max().item(), 1e-300)
    check(
        asym <= 1e-8 * scale,
        f"{name} must be symmetric; max |K - K^T| = {asym:.3g} (scale {scale:.3g})",
    )
    return (K + K.transpose(-1, -2)) / 2


def lambda_min(kernel) -> torch.Tensor:
    """Smallest eigenvalue of a symmetric kernel (n, n) -> 0-d, or of each of (K, n, n) -> (K,)."""
    return torch.linalg.eigvalsh(_symmetric("kernel", kernel))[..., 0]


def _scalar_or_tensor(t: torch.Tensor):
    return t.item() if t.dim() == 0 else t


def predicted_rate(lam_min, lr, loss: str = "mse", n: int | None = None):
    """Per-step exponential rate of the loss, -2 log|1 - lr c lam_min| (loss ~ exp(-rate t)).

    c is the loss factor (2/n for "mse", 1 for "sse"; ``n`` is needed for "mse").
    Floats in, float out; tensors (per member) in, tensor out.
    """
    c = _factor(loss, n)
    lm = _tensor("lam_min", lam_min, (0, 1))
    lr_t = _positive("lr", lr)
    rate = -2 * torch.log(torch.abs(1 - lr_t * c * lm))
    return _scalar_or_tensor(rate)


def steps_to_reduce(factor, lam_min, lr, loss: str = "mse", n: int | None = None):
    """Steps for the loss to fall by ``factor`` (> 1) at :func:`predicted_rate`, rounded up.

    ``math.inf`` (or inf entries) where the predicted rate is not positive.
    """
    f = _tensor("factor", factor, (0, 1))
    check(bool((f > 1).all()), f"factor must be > 1 (the loss falls by it); got {factor!r}")
    rate = torch.as_tensor(predicted_rate(lam_min, lr, loss, n), dtype=F64)
    steps = torch.where(rate > 0, torch.ceil(torch.log(f) / rate), torch.full_like(rate, math.inf))
    if steps.dim() == 0:
        v = steps.item()
        return int(v) if math.isfinite(v) else math.inf
    return steps


def _factor(loss: str, n) -> float:
    choice("loss", loss, ("mse", "sse"))
    if loss == "mse":
        check(
            isinstance(n, int | np.integer) and n >= 1,
            f"n (number of samples) must be a positive int for loss 'mse', got {n!r}",
        )
    return loss_factor(loss, int(n) if n is not None else 1)


# --------------------------------------------------------------------------- prediction
@dataclass
class LossPrediction:
    """The linearised prediction of a run (numpy float64; member axis last where batched).

    ``steps`` (T+1,) = 0..T; ``mse`` (T+1,) or (T+1, K); ``errors`` (T+1, n) or
    (T+1, K, n) when requested; ``settle_mse`` the limit mean(e*^2) for constant lam
    (None for a schedule); ``rate`` the slowest per-step rate -2 log|1 - lr (c k + lam)|
    over the kernel's eigenvalues k (constant lam; None for a schedule).
    """

    steps: np.ndarray
    mse: np.ndarray
    errors: np.ndarray | None = None
    settle_mse: np.ndarray | float | None = None
    rate: np.ndarray | float | None = None


def _curve_inputs(kernel, y, u0, lr):
    K = _symmetric("kernel", kernel)
    batched = K.dim() == 3
    n = K.shape[-1]
    y = _tensor("y", y, (1, 2) if batched else (1,))
    u0 = _tensor("u0", u0, (1, 2) if batched else (1,))
    lead = K.shape[:-2]
    for name, v in (("y", y), ("u0", u0)):
        check(
            v.shape[-1] == n and (v.dim() == 1 or v.shape[0] == K.shape[0]),
            f"{name} shape {tuple(v.shape)} does not match kernel shape {tuple(K.shape)}; "
            f"expected {(*lead, n)}",
        )
    y = y.expand(*lead, n)
    u0 = u0.expand(*lead, n)
    lr = _positive("lr", lr)
    check(
        lr.dim() == 0 or (batched and lr.shape[0] == K.shape[0]),
        f"lr shape {tuple(lr.shape)} must be scalar or ({K.shape[0] if batched else 'K'},)",
    )
    return K, y, u0, lr.expand(lead)


def _lam_per_member(lam, lead) -> torch.Tensor:
    lam_t = _positive("lam", lam, allow_zero=True)
    check(
        lam_t.dim() == 0 or (len(lead) == 1 and lam_t.shape[0] == lead[0]),
        f"lam shape {tuple(lam_t.shape)} must be scalar or {(*lead,) or '(K,)'}",
    )
    return lam_t.expand(lead)


def settle_level(kernel, y, lam, loss: str = "mse"):
    """MSE at which constant weight decay ``lam`` stops the linearised dynamics.

    e* = -(c K + lam I)^{-1} lam y, mse* = mean(e*^2); 0 for lam = 0. Unbatched -> float,
    batched kernel (K, n, n) -> (K,) tensor.
    """
    K = _symmetric("kernel", kernel)
    lead, n = K.shape[:-2], K.shape[-1]
    y = _tensor("y", y, (1, 2))
    check(y.shape[-1] == n, f"y shape {tuple(y.shape)} does not match kernel {tuple(K.shape)}")
    c = _factor(loss, n)
    lam_t = _lam_per_member(lam, lead)
    evals, Q = torch.linalg.eigh(K)
    e_star = _settle_error(evals, Q, y.expand(*lead, n), c, lam_t)
    return _scalar_or_tensor((e_star * e_star).mean(-1))


def _settle_error(evals, Q, y, c, lam):
    """e* in the original basis (..., n), via the eigendecomposition of the kernel."""
    a = c * evals + lam[..., None]
    zero = lam[..., None] == 0
    bad = (a == 0) & ~zero
    check(
        not bool(bad.any()),
        "settle level undefined: c*K + lam*I is singular (a kernel eigenvalue equals -lam/c)",
    )
    yq = (Q.transpose(-1, -2) @ y[..., None])[..., 0]
    zq = torch.where(zero, torch.zeros_like(a), -lam[..., None] * yq / torch.where(zero, 1.0, a))
    return (Q @ zq[..., None])[..., 0]


def predict_loss_curve(
    kernel,
    y,
    u0,
    lr,
    steps: int,
    lam=0.0,
    loss: str = "mse",
    errors: bool = False,
    chunk: int = 1 << 21,
) -> LossPrediction:
    """The linearised loss curve e(t+1) = e(t) - lr c K e(t) - lr lam(t) (e(t) + y), t = 0..steps.

    ``kernel`` is H(0)+G(0) from :func:`empirical_kernels`, or H_inf (FA) / H_inf + G_inf
    (BP); (n, n) with y, u0 (n,), or (K, n, n) with y, u0 (K, n) or shared (n,). ``lr`` and
    a constant ``lam`` are scalars or (K,). ``lam`` may also be a schedule: a callable
    t -> scalar or (K,) (e.g. ``lambda t: 0.1 * CutOff(500)(t)``) or an array of shape
    (steps,) or (steps, K). ``loss`` fixes c (2/n for "mse"); the curve is always the MSE.

    Constant lam uses the eigendecomposition of K (closed-form powers, fast for 100k
    steps); a schedule iterates in K's eigenbasis (lam I commutes with K).
    """
    check(
        isinstance(steps, int | np.integer) and steps >= 0,
        f"steps must be an int >= 0, got {steps!r}",
    )
    K, y, u0, lr = _curve_inputs(kernel, y, u0, lr)
    lead, n = K.shape[:-2], K.shape[-1]
    c = _factor(loss, n)
    evals, Q = torch.linalg.eigh(K)  # (..., n), (..., n, n)
    QT = Q.transpose(-1, -2)
    e0 = u0 - y
    T = int(steps)
    lam_dims = lam.dim() if torch.is_tensor(lam) else np.ndim(lam)
    if callable(lam) or (lam_dims >= 1 and len(lead) == 0) or lam_dims == 2:
        return _iterate_schedule(lam, evals, Q, QT, y, e0, lr, c, T, lead, n, errors)
    lam_t = _lam_per_member(lam, lead)
    e_star = _settle_error(evals, Q, y, c, lam_t)
    m = 1 - lr[..., None] * (c * evals + lam_t[..., None])  # (..., n) per-mode multipliers
    z0 = (QT @ (e0 - e_star)[..., None])[..., 0]
    v = (QT @ e_star[..., None])[..., 0]
    es2 = (e_star * e_star).sum(-1)
    mse = torch.empty(T + 1, *lead, dtype=F64)
    err = torch.empty(T + 1, *lead, n, dtype=F64) if errors else None
    per = max(1, chunk // max(1, m.numel()))
    for s in range(0, T + 1, per):
        t = torch.arange(s, min(T + 1, s + per), dtype=F64).reshape(-1, *([1] * m.dim()))
        z = torch.pow(m, t) * z0  # (chunk, ..., n)
        mse[s : s + per] = (es2 + 2 * (v * z).sum(-1) + (z * z).sum(-1)) / n
        if err is not None:
            err[s : s + per] = e_star + (Q @ z[..., None])[..., 0]
    rate = (-2 * torch.log(torch.abs(m))).min(-1).values
    return LossPrediction(
        steps=np.arange(T + 1),
        mse=mse.numpy(),
        errors=None if err is None else err.numpy(),
        settle_mse=_np_scalar((e_star * e_star).mean(-1)),
        rate=_np_scalar(rate),
    )


def _np_scalar(t: torch.Tensor):
    return t.item() if t.dim() == 0 else t.numpy()


def _schedule_values(lam, T: int, lead) -> Callable[[int], torch.Tensor]:
    """lam(t) as a (lead,) tensor for t = 0..T-1, from a callable or an array."""
    if callable(lam):

        def at(t: int) -> torch.Tensor:
            return _lam_per_member(lam(t), lead)

        return at
    arr = _tensor("lam", lam, (1, 2))
    check(
        arr.shape[0] >= T and (arr.dim() == 1 or arr.shape[1] in (1, *lead)),
        f"lam schedule array shape {tuple(arr.shape)} must be (steps,) or (steps, K) "
        f"with steps >= {T} and K = {lead[0] if lead else 'K'}",
    )
    check(bool((arr >= 0).all()), "lam schedule must be non-negative; got a negative entry")
    return lambda t: arr[t].expand(lead)


def _iterate_schedule(lam, evals, Q, QT, y, e0, lr, c, T, lead, n, errors):
    lam_at = _schedule_values(lam, T, lead)
    z = (QT @ e0[..., None])[..., 0]
    yq = (QT @ y[..., None])[..., 0]
    ck = c * evals
    lr_ = lr[..., None]
    mse = torch.empty(T + 1, *lead, dtype=F64)
    zs = torch.empty(T + 1, *lead, n, dtype=F64) if errors else None
    mse[0] = (z * z).mean(-1)
    if zs is not None:
        zs[0] = z
    for t in range(T):
        lt = lam_at(t)[..., None]
        z = z - lr_ * ((ck + lt) * z + lt * yq)
        mse[t + 1] = (z * z).mean(-1)
        if zs is not None:
            zs[t + 1] = z
    err = None if zs is None else (Q @ zs[..., None])[..., 0].numpy()
    return LossPrediction(steps=np.arange(T + 1), mse=mse.numpy(), errors=err)


# --------------------------------------------------------------------------- comparison
@dataclass
class Comparison:
    """A measured loss curve beside its prediction at the measured steps (numpy float64).

    ``log10_ratio`` = log10(measured) - log10(predicted) per step (and member);
    ``max_abs_log10`` / ``mean_abs_log10`` summarise it per member; ``measured_rate`` and
    ``predicted_rate`` are least-squares slopes of -ln(mse) per step over the same steps.
    """

    steps: np.ndarray
    measured: np.ndarray
    predicted: np.ndarray
    log10_ratio: np.ndarray
    max_abs_log10: np.ndarray | float
    mean_abs_log10: np.ndarray | float
    measured_rate: np.ndarray | float
    predicted_rate: np.ndarray | float


def _fit_rate(steps: np.ndarray, mse: np.ndarray) -> np.ndarray:
    """-slope of ln(mse) against step, per column, over finite positive entries."""
    out = np.full(mse.shape[1:], np.nan)
    for idx in np.ndindex(*mse.shape[1:]):
        col = mse[(slice(None), *idx)]
        ok = np.isfinite(col) & (col > 0)
        if ok.sum() >= 2:
            out[idx] = -np.polyfit(steps[ok].astype(float), np.log(col[ok]), 1)[0]
    return out


def compare_with_prediction(steps, measured_mse, predicted) -> Comparison:
    """Set a run's measured MSE beside the prediction at the measured steps.

    ``steps`` (R,) recorded step numbers, ``measured_mse`` (R,) or (R, K) (e.g. an engine
    history's ``metrics["mse"]``), ``predicted`` a :class:`LossPrediction` or an array of
    the predicted MSE at every step 0..T (T >= max(steps)).
    """
    steps = np.asarray(steps)
    check(
        steps.ndim == 1 and np.issubdtype(steps.dtype, np.integer) and (steps >= 0).all(),
        f"steps must be a 1-D array of non-negative ints, got shape {steps.shape}, "
        f"dtype {steps.dtype}",
    )
    meas = np.asarray(measured_mse, dtype=np.float64)
    check(
        meas.ndim in (1, 2) and meas.shape[0] == steps.shape[0],
        f"measured_mse shape {meas.shape} must be ({steps.shape[0]},) or ({steps.shape[0]}, K)",
    )
    curve = predicted.mse if isinstance(predicted, LossPrediction) else np.asarray(predicted)
    curve = np.asarray(curve, dtype=np.float64)
    check(
        curve.shape[0] > (steps.max() if steps.size else -1),
        f"prediction covers steps 0..{curve.shape[0] - 1} but measured steps reach {steps.max()}",
    )
    pred = curve[steps]
    if pred.ndim == 1 and meas.ndim == 2:  # one curve shared by every member
        pred = np.repeat(pred[:, None], meas.shape[1], axis=1)
    check(
        pred.shape == meas.shape,
        f"predicted shape {pred.shape} at the measured steps does not match measured {meas.shape}",
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log10(meas) - np.log10(pred)
    ab = np.abs(ratio)
    return Comparison(
        steps=steps,
        measured=meas,
        predicted=pred,
        log10_ratio=ratio,
        max_abs_log10=_np_out(ab.max(0)),
        mean_abs_log10=_np_out(ab.mean(0)),
        measured_rate=_np_out(_fit_rate(steps, meas)),
        predicted_rate=_np_out(_fit_rate(steps, pred)),
    )


def _np_out(a: np.ndarray):
    return float(a) if np.ndim(a) == 0 else a


def plot_comparison(comparison: Comparison, ax=None, member: int | None = None):
    """Measured vs predicted MSE on a log axis (needs matplotlib, which is optional)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(
            "plot_comparison needs matplotlib, which is not installed; use the arrays of "
            "compare_with_prediction instead"
        ) from None
    if ax is None:
        _, ax = plt.subplots()
    meas, pred = comparison.measured, comparison.predicted
    if meas.ndim == 2:
        cols = range(meas.shape[1]) if member is None else [member]
    else:
        cols = [None]
    for k in cols:
        m = meas if k is None else meas[:, k]
        p = pred if k is None else pred[:, k]
        label = "" if k is None else f" [{k}]"
        line = ax.semilogy(comparison.steps, m, label=f"measured{label}")[0]
        ax.semilogy(comparison.steps, p, "--", color=line.get_color(), label=f"predicted{label}")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE")
    ax.legend()
    return ax
