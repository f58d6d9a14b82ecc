"""Device and dtype resolution with precise errors (float32/float64; CPU, CUDA when present)."""

from __future__ import annotations

import torch

from .errors import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"float32"``/``"float64"`` or the torch dtype; ``None`` means float32."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(f"dtype {dtype!r} is not supported; accepted: float32, float64")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device that exists here; ``None``/``"auto"`` picks CUDA when present."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device {device!r} is not a device name; accepted: cpu, cuda, cuda:N, auto"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} is not available: this torch build sees no CUDA GPU; "
                "use 'cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {device!r} is not available: {torch.cuda.device_count()} CUDA "
                "device(s) present"
            )
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r} is not supported; accepted: cpu, cuda, auto")
    return dev
