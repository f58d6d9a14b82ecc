"""The linearised dynamics: rates from lambda_min, the predicted loss curve, the settle level.

In the lazy regime the errors e = u - y of the paper's network move as

    e(t+1) = e(t) - lr c K e(t) - lr lam(t) (e(t) + y)

for a kernel K (H(0) + G(0) at a run's initial weights, H_inf for feedback alignment,
H_inf + G_inf^BP for backprop; see :mod:`.kernels`) and c the loss factor. See
docs/theory.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ...bounds import check_memory, within
from ...errors import check, need
from ._checks import F64, as_f64, broadcast, loss_c, positive, symmetric


# --------------------------------------------------------------------------- rates
def lambda_min(kernel) -> torch.Tensor:
    """Smallest eigenvalue of a symmetric kernel (n, n) -> 0-d, or of each of (K, n, n) -> (K,)."""
    return torch.linalg.eigvalsh(symmetric("kernel", kernel))[..., 0]


def _scalar_or_tensor(t: torch.Tensor):
    return t.item() if t.dim() == 0 else t


def predicted_rate(lam_min, lr, loss: str = "mse", n: int | None = None):
    """Per-step exponential rate of the loss, -2 log|1 - lr c lam_min| (loss ~ exp(-rate t)).

    A negative rate predicts growth: lr c lam_min > 2, or lam_min < 0 (feedback
    alignment's H(0) + G(0) need not be positive semi-definite; E2 meets such kernels).

    c is the loss factor (2/n for "mse", 1 for "sse"; ``n`` is needed for "mse").
    Floats in, float out; tensors (per member) in, tensor out.
    """
    c = loss_c(loss, n)
    lm = as_f64("lam_min", lam_min, (0, 1))
    check(lm.numel() >= 1, "lam_min must be a number or one per member, got an empty array")
    lr_t = positive("lr", lr)
    broadcast(lam_min=lm, lr=lr_t)
    rate = -2 * torch.log(torch.abs(1 - lr_t * c * lm))
    return _scalar_or_tensor(rate)


def steps_to_reduce(factor, lam_min, lr, loss: str = "mse", n: int | None = None):
    """Steps for the loss to fall by ``factor`` (> 1) at :func:`predicted_rate`, rounded up.

    ``math.inf`` (or inf entries) where the predicted rate is not positive.
    """
    f = as_f64("factor", factor, (0, 1))
    need(bool((f > 1).all()), "factor", factor, "a number > 1 (the loss falls by it)")
    rate = torch.as_tensor(predicted_rate(lam_min, lr, loss, n), dtype=F64)
    steps = torch.where(rate > 0, torch.ceil(torch.log(f) / rate), torch.full_like(rate, math.inf))
    if steps.dim() == 0:
        v = steps.item()
        return int(v) if math.isfinite(v) else math.inf
    return steps


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
    K = symmetric("kernel", kernel)
    batched = K.dim() == 3
    n = K.shape[-1]
    y = as_f64("y", y, (1, 2) if batched else (1,))
    u0 = as_f64("u0", u0, (1, 2) if batched else (1,))
    lead = K.shape[:-2]
    for name, v in (("y", y), ("u0", u0)):
        check(
            v.shape[-1] == n and (v.dim() == 1 or v.shape[0] == K.shape[0]),
            f"{name} shape {tuple(v.shape)} does not match kernel shape {tuple(K.shape)}; "
            f"expected {(*lead, n)}",
        )
    y = y.expand(*lead, n)
    u0 = u0.expand(*lead, n)
    lr = positive("lr", lr)
    check(
        lr.dim() == 0 or (batched and lr.shape[0] == K.shape[0]),
        f"lr shape {tuple(lr.shape)} must be scalar or ({K.shape[0] if batched else 'K'},)",
    )
    return K, y, u0, lr.expand(lead)


def _lam_per_member(lam, lead) -> torch.Tensor:
    lam_t = positive("lam", lam, allow_zero=True)
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
    K = symmetric("kernel", kernel)
    lead, n = K.shape[:-2], K.shape[-1]
    y = as_f64("y", y, (1, 2))
    check(y.shape[-1] == n, f"y shape {tuple(y.shape)} does not match kernel {tuple(K.shape)}")
    c = loss_c(loss, n)
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
    need(
        isinstance(steps, int | np.integer) and steps >= 0,
        "steps",
        steps,
        "an int >= 0",
    )
    within("steps", steps, "steps")
    K, y, u0, lr = _curve_inputs(kernel, y, u0, lr)
    lead, n = K.shape[:-2], K.shape[-1]
    members = math.prod(lead)
    check_memory(
        8 * (int(steps) + 1) * members * (1 + (n if errors else 0)),
        f"a predicted loss curve of {int(steps) + 1} steps x {members} member(s)"
        + (f" x {n} errors" if errors else ""),
        "fewer steps, or errors=False",
    )
    c = loss_c(loss, n)
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
    arr = as_f64("lam", lam, (1, 2))
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
