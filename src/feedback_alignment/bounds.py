"""Bounds on what a run may ask of the machine, declared once and checked before any work.

:data:`BOUNDS` declares every size a user can ask for (steps, seeds, widths, repetitions,
runs in a plan, recorded rows, spec files, TOML nesting, the theory's quadrature and Monte
Carlo sizes): its range, where it applies and why it stops there. :func:`within` checks a
value against one and refuses it with one line naming the value, the bound and its cost;
docs/bounds.md's table is generated from :data:`BOUNDS` (a test keeps the two equal).
Memory is checked against what is available now (``/proc/meminfo`` or ``os.sysconf``)
before anything is allocated, and a measured matrix speed warns of work over a day.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass

from .errors import ConfigError

DAY_SECONDS = 86400.0
MANY_RUNS = 10**4  # a plan of more runs prints a warning line


@dataclass(frozen=True)
class Bound:
    """The accepted range [lo, hi] of an integer a user can ask for; ``applies`` says where
    (arguments, options, spec keys), ``cost`` what a value at the bound would cost."""

    name: str
    lo: int
    hi: int
    applies: str
    cost: str

    @property
    def words(self) -> str:
        return f"an integer in [{self.lo}, {fmt_int(self.hi)}]"


def fmt_int(n: int) -> str:
    """A bound as people write it: 1000, 1e9, 2^20, 2^64 - 1."""
    if n < 10**4:
        return str(n)
    if str(n).rstrip("0") == "1":
        return f"1e{len(str(n)) - 1}"
    for k, word in ((n, ""), (n + 1, " - 1")):
        if k & (k - 1) == 0:
            return f"2^{k.bit_length() - 1}{word}"
    return f"{n:.3g}"


def _declare(*bounds: Bound) -> dict[str, Bound]:
    return {b.name: b for b in bounds}


BOUNDS: dict[str, Bound] = _declare(
    Bound(
        "steps",
        0,
        10**9,
        "`fit(steps=)`, `Plateau` min_steps and max_steps, `predict_loss_curve(steps=)`, "
        "spec `steps`, `min_steps`, `max_steps`; `fa train` `train.steps`",
        "weeks of work at the smallest size",
    ),
    Bound(
        "size",
        1,
        10**8,
        "n, d and p of `TwoLayerEnsemble`, `linear_teacher`, `random_teacher` and a spec",
        "more than any one machine holds; memory is checked too",
    ),
    Bound(
        "seed",
        0,
        2**64 - 1,
        "`seeds=`, `seed=` of the data and `fa demo --seed`; spec `study.seed`, `study.seeds`",
        "torch's generators take only unsigned 64-bit seeds",
    ),
    Bound(
        "runs",
        1,
        10**5,
        "the runs a spec expands to (grid x zips x repetitions), counted before expanding",
        "more than a few seconds to plan (`--dry-run`), and a store of GBs",
    ),
    Bound(
        "records",
        1,
        2**20,
        'rows a fit records (`record_every`, `record_steps`, `"log:N"`), counted from its '
        "step cap before it starts",
        "about 100 bytes per row and metric while recording, and a store's series",
    ),
    Bound(
        "spec_bytes",
        1,
        10**6,
        "a spec or `fa train` config file, in bytes",
        "a second or more to parse; specs are a few KB",
    ),
    Bound(
        "toml_depth",
        1,
        32,
        "tables and arrays nested in a spec, a config or a `--set` value",
        "Python's recursion limit: a crash instead of a message (specs nest 4 deep)",
    ),
    Bound(
        "demo_steps",
        1,
        10**6,
        "`fa demo --steps`",
        "about an hour on 2 cores; the default 3000 takes seconds",
    ),
    Bound(
        "demo_reps",
        1,
        1000,
        "`fa demo --reps`",
        "4000 networks, about 8 GB at p = 3200",
    ),
    Bound(
        "quadrature_order",
        1,
        50,
        "`h_inf`, `g_inf_bp` `order=` (Gauss-Legendre points per piece)",
        "order^2 (2 levels + 2)^2 evaluations per pair of samples",
    ),
    Bound(
        "quadrature_levels",
        0,
        16,
        "`h_inf`, `g_inf_bp` `levels=` (halvings towards the kinks)",
        "as for order: 11 million evaluations per pair at 50 and 16",
    ),
    Bound(
        "mc_samples",
        2,
        10**8,
        "`h_monte_carlo`, `g_bp_monte_carlo` `samples=`",
        "hours at n = 50; the standard error falls as 1/sqrt(samples)",
    ),
    Bound(
        "mc_chunk",
        1,
        10**6,
        "`h_monte_carlo`, `g_bp_monte_carlo` `chunk=` (draws a pass)",
        "n x chunk values a pass; memory is checked too",
    ),
)


def is_int(v) -> bool:
    """An integer (Python or NumPy), not a bool."""
    import numbers

    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def within(key: str, value, bound: str) -> int:
    """``value`` as an int, or one ConfigError line: "KEY = VALUE is not accepted; accepted:
    an integer in [LO, HI] (beyond: COST)". A string (a command-line option) is read as an
    integer, written plainly or as an integral number such as 1e6."""
    b = BOUNDS[bound]
    text = isinstance(value, str)
    shown = value.strip() if text else str(int(value)) if is_int(value) else repr(value)
    if text:
        value = _integer_text(value)
    if not (is_int(value) and b.lo <= value <= b.hi):
        cost = f" (beyond: {b.cost})" if is_int(value) and value > b.hi else ""
        raise ConfigError(f"{key} = {shown} is not accepted; accepted: {b.words}{cost}")
    return int(value)


def _integer_text(text: str) -> int | None:
    """The integer a command-line option writes ("3000", "1e6", "2.0"), or None."""
    try:
        return int(text.strip())
    except ValueError:
        pass
    try:
        x = float(text)
    except ValueError:
        return None
    return int(x) if math.isfinite(x) and x == int(x) else None


MAX_STEPS = BOUNDS["steps"].hi
MAX_SIZE = BOUNDS["size"].hi
MAX_SEED = BOUNDS["seed"].hi


def markdown_table() -> str:
    """docs/bounds.md's table, generated from :data:`BOUNDS`."""
    rows = ["| bound | accepted | applies to | beyond it |", "|---|---|---|---|"]
    for b in BOUNDS.values():
        cells = (f"`{b.name}`", b.words, b.applies, b.cost)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


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
