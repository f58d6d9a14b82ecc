"""Bounds on what a run may ask of the machine: memory checked before allocating, and a
measured speed for warning about work that would take more than a day.

Both are measured on the machine at hand (``/proc/meminfo`` or ``os.sysconf``; a short
matrix product for the speed), never assumed.
"""

from __future__ import annotations

import functools
import os
import time

from .errors import ConfigError

DAY_SECONDS = 86400.0
MANY_RUNS = 10**5


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (None where it cannot be told)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def check_memory(need: float, what: str, hint: str) -> None:
    """Refuse (one line, with the size) ``need`` bytes beyond the memory available now."""
    have = available_memory()
    if have is not None and need > have:
        raise ConfigError(
            f"{what} needs {fmt_bytes(need)} of memory, more than the {fmt_bytes(have)} "
            f"available; accepted: {hint}"
        )


@functools.cache
def machine_flops() -> float:
    """Multiply-adds per second of this process for a float64 matrix product (measured
    once per process with a short product, the best of a few repeats)."""
    import torch

    a = torch.randn(256, 256, dtype=torch.float64)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(4):
            a @ a
        best = min(best, time.perf_counter() - t0)
    return 4 * 256**3 / max(best, 1e-9)
