"""Input checks shared by the theory modules: each bad value is one ConfigError line."""

from __future__ import annotations

import numpy as np
import torch

from ...errors import ConfigError, check, need
from ..loss import loss_factor

F64 = torch.float64


def as_f64(name: str, value, ndims: tuple[int, ...]) -> torch.Tensor:
    """``value`` as a finite float64 tensor with one of the allowed numbers of axes."""
    try:
        t = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(
            f"{name} must be a numeric array or tensor, got {type(value).__name__}"
        ) from None
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.bool)):
        raise ConfigError(f"{name} must be real-valued, got dtype {t.dtype}")
    t = t.to(F64)
    shapes = " or ".join(f"{k}-D" for k in ndims)
    check(t.dim() in ndims, f"{name} must be {shapes}, got shape {tuple(t.shape)}")
    bad = (~torch.isfinite(t)).sum().item()
    check(bad == 0, f"{name} contains {bad} NaN/inf value(s); all entries must be finite")
    return t


def positive(name: str, value, allow_zero: bool = False) -> torch.Tensor:
    """A scalar or per-member (K,) tensor of positive (or non-negative) finite numbers."""
    t = as_f64(name, value, (0, 1))
    check(t.numel() >= 1, f"{name} must be a number or one per member, got an empty array")
    ok = (t >= 0) if allow_zero else (t > 0)
    what = "a finite number >= 0" if allow_zero else "a finite number > 0"
    need(bool(ok.all()), name, value, f"{what}, or one per member")
    return t


def symmetric(name: str, kernel) -> torch.Tensor:
    """A square (n, n) or (K, n, n) kernel, symmetric to rounding, made exactly symmetric."""
    K = as_f64(name, kernel, (2, 3))
    check(K.shape[-1] == K.shape[-2], f"{name} must be square, got shape {tuple(K.shape)}")
    check(K.numel() > 0, f"{name} must hold at least one entry, got shape {tuple(K.shape)}")
    asym = (K - K.transpose(-1, -2)).abs().max().item()
    scale = max(K.abs().max().item(), 1e-300)
    check(
        asym <= 1e-8 * scale,
        f"{name} must be symmetric; max |K - K^T| = {asym:.3g} (scale {scale:.3g})",
    )
    return (K + K.transpose(-1, -2)) / 2


def loss_c(loss: str, n) -> float:
    """The loss factor c of ``loss`` for ``n`` samples (``n`` is needed for "mse" only)."""
    if loss == "mse":
        need(
            isinstance(n, int | np.integer) and n >= 1,
            "n (the number of samples, for loss 'mse')",
            n,
            "a positive integer",
        )
    return loss_factor(loss, int(n) if loss == "mse" else 1)


def broadcast(**tensors: torch.Tensor) -> None:
    """Refuse per-member values whose shapes do not match, naming them."""
    try:
        torch.broadcast_shapes(*(t.shape for t in tensors.values()))
    except RuntimeError:
        shapes = ", ".join(f"{k} {tuple(t.shape)}" for k, t in tensors.items())
        raise ConfigError(
            f"{shapes} do not match; accepted: scalars, or one value per member each"
        ) from None
