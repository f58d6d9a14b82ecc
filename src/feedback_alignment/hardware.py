"""The CPU a figure was measured on, as every benchmark and report names it.

``describe()`` gives the CPU's model name, ``lscpu | grep -c avx512f`` (1 with AVX-512,
0 without; None where there is no lscpu), the vector extensions among those the kernels
and torch dispatch on (avx512f avx2 fma avx sse4_2 asimd), the instruction set torch
dispatches its own kernels to (``torch.backends.cpu.get_cpu_capability()``, lowered by
``ATEN_CPU_CAPABILITY``), torch's version and thread count; ``line()`` the same in one
line. The flags come from ``/proc/cpuinfo``; without it, from torch.
"""

from __future__ import annotations

import platform
import shutil
import subprocess

import torch

VECTOR_FLAGS = ("avx512f", "avx2", "fma", "avx", "sse4_2", "asimd")


def _cpuinfo() -> list[str] | None:
    try:
        with open("/proc/cpuinfo") as f:
            return f.readlines()
    except OSError:
        return None


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``), None without /proc/cpuinfo."""
    for ln in _cpuinfo() or ():
        if ln.startswith(("flags", "Features")):
            return set(ln.split(":", 1)[1].split())
    return None


def cpu_id() -> str:
    """Every distinct model name and flags line of /proc/cpuinfo (a cache key's part)."""
    lines = _cpuinfo()
    if lines is None:
        return platform.processor()
    return "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))}))


def cpu_model() -> str:
    for ln in _cpuinfo() or ():
        if ln.startswith("model name"):
            return ln.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def lscpu_avx512f_lines() -> int | None:
    if not shutil.which("lscpu"):
        return None
    try:
        res = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return sum("avx512f" in ln for ln in res.stdout.splitlines())


def describe() -> dict:
    flags = cpu_flags()
    return {
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "lscpu_avx512f_lines": lscpu_avx512f_lines(),
        "cpu_flags": " ".join(f for f in VECTOR_FLAGS if f in flags) if flags is not None else "",
        "torch_dispatch": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def line(d: dict | None = None) -> str:
    """One line naming the CPU, e.g. 'Intel(R) Xeon(R) Processor (x86_64; lscpu | grep -c
    avx512f = 1; flags avx512f avx2 fma avx sse4_2; torch dispatch AVX512) torch
    2.13.0+cpu, 2 threads'."""
    d = describe() if d is None else d
    return (
        f"{d['cpu_model']} ({d['machine']}; lscpu | grep -c avx512f = "
        f"{d['lscpu_avx512f_lines']}; flags {d['cpu_flags'] or 'none read'}; torch dispatch "
        f"{d['torch_dispatch']}) torch {d['torch']}, {d['threads']} threads"
    )
