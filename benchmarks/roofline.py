"""The machine's own limits, measured in the run that uses them, and the CPU they are for.

A benchmark divides what a workload does by what the machine can do, both measured in
the same process on the same threads:

* ``matmul``: flop/s of torch.matmul on a square product (2048 x 2048, float32 or
  float64, the best of several), the rate a well-blocked product reaches here;
* ``read``: bytes/s of a sum over a buffer larger than the caches (256 MB);
* ``copy``: bytes/s of a copy between two such buffers, counting the read and the write
  (2 x 256 MB a copy), the traffic of a pass that reads and rewrites an array in place.

A step whose useful work is F flops and which must move B bytes through memory takes at
least max(F / matmul, B / copy) seconds; ``fraction`` = that bound / the measured time
(1.0 = at the machine's limit). The bound is the larger of the two because a step that
overlaps its arithmetic with its memory traffic perfectly is held by whichever is
slower. Every figure carries the CPU it was taken on (``feedback_alignment.hardware``:
its model name, the count of lines of ``lscpu`` naming avx512f, 1 with AVX-512, 0
without, and the vector flags).
"""

from __future__ import annotations

import math
import time

import torch

BUFFER_BYTES = 256 << 20  # larger than any cache of the machines this runs on
MATMUL_N = 2048


def _best(fn, repeats: int) -> float:
    fn()  # warm-up: page faults, thread start
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_rate(dtype: torch.dtype, repeats: int = 7) -> float:
    """flop/s of a square torch.matmul on the process's threads (the best of ``repeats``)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_N, MATMUL_N, generator=g, dtype=dtype)
    b = torch.randn(MATMUL_N, MATMUL_N, generator=g, dtype=dtype)
    out = torch.empty(MATMUL_N, MATMUL_N, dtype=dtype)
    return 2 * MATMUL_N**3 / _best(lambda: torch.matmul(a, b, out=out), repeats)


def bandwidths(repeats: int = 5) -> dict[str, float]:
    """Bytes/s of reading (a sum) and of copying (read + write counted) 256 MB buffers."""
    src = torch.ones(BUFFER_BYTES // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    read = BUFFER_BYTES / _best(lambda: src.sum(), repeats)
    copy = 2 * BUFFER_BYTES / _best(lambda: dst.copy_(src), repeats)
    return {"read_bytes_per_s": read, "copy_bytes_per_s": copy}


def limits(dtypes=("float32",)) -> dict:
    """The machine's limits now: matmul flop/s per dtype, read and copy bytes/s."""
    out = {f"matmul_{dt}_flops_per_s": matmul_rate(getattr(torch, dt)) for dt in dtypes}
    out.update(bandwidths())
    return out


def best_of(*measured: dict) -> dict:
    """The highest of each limit over several measurements of it (the machine's limit is
    what it reached at best: a slow spell of a shared machine must not lower the bar)."""
    return {k: max(m[k] for m in measured) for k in measured[0]}


def bound_seconds(flops: float, bytes_moved: float, lim: dict, dtype: str) -> dict:
    """The least time a step can take here, and which limit sets it."""
    t_flops = flops / lim[f"matmul_{dtype}_flops_per_s"]
    t_bytes = bytes_moved / lim["copy_bytes_per_s"]
    return {
        "bound_s": max(t_flops, t_bytes),
        "flops_s": t_flops,
        "bytes_s": t_bytes,
        "binding": "flops" if t_flops >= t_bytes else "bytes",
    }


def describe(lim: dict) -> str:
    """One line of the limits, for the head of a benchmark's output."""
    parts = [
        f"{k.split('_')[1]} matmul {v / 1e9:.0f} GFLOP/s"
        for k, v in lim.items()
        if k.startswith("matmul_")
    ]
    parts.append(f"read {lim['read_bytes_per_s'] / 1e9:.1f} GB/s")
    parts.append(f"copy {lim['copy_bytes_per_s'] / 1e9:.1f} GB/s (read + write)")
    return ", ".join(parts)
