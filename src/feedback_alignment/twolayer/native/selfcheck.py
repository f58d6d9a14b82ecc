"""Should the native kernels run this fit? Timed, once per machine and shape class.

The native kernels are faster than the torch ops only where the compiler made good code
for the CPU (a vector width the CPU lacks made them several times slower than the torch
ops on one machine). So before ``kernels="auto"`` first runs them on a shape class it
times both on a few steps of that shape (members cut so that about four million
pre-activations are moved, past the caches as in the real fits; a warm-up step, then five
alternating rounds of one step each, the fastest round counting) and keeps the faster.
One step a round on a million pre-activations (about a millisecond) once picked the torch
ops where the native kernels ran twice as fast. The verdict is
cached in memory and in ``<cache>/feedback-alignment/native/selfcheck.json`` keyed by the
kernels' build (source, compiler, flags, vector width, CPU), the activation, the dtype,
shared or per-member X, n, the number of rows K p to within a factor of two, whether
weights are kept and the thread count, so later processes on this machine pay nothing.

Under ``kernels="auto"``, ``FA_NATIVE=1`` skips the check (the kernels run wherever they
apply) and ``FA_NATIVE=0`` keeps them off; ``kernels="native"`` runs them unchecked.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from ...activations import Activation, get_activation
from . import _cache_dir, library

# pre-activations (members x p x n) a self-check moves per step: big enough to leave the
# caches as the real fits do, small enough that the check stays short
CHECK_ELEMENTS = 1 << 22
_ROUNDS = 5  # rounds of (native steps, torch steps), alternating; the minimum counts
_STEPS = 1  # steps per timing

_lock = threading.Lock()
_memo: dict[str, dict] = {}


def cache_file() -> Path:
    return _cache_dir() / "selfcheck.json"


def shape_key(act: str, dtype, shared: bool, K: int, p: int, n: int, keep: bool) -> str:
    lib = library()
    dt = str(dtype).replace("torch.", "")
    rows = max(1, K * p).bit_length()  # K p within a factor of two
    return (
        f"{lib.key}|{act}|{dt}|{'shared' if shared else 'per-member'}|n{n}|rows2^{rows}"
        f"|{'weights' if keep else 'no-weights'}|t{torch.get_num_threads()}"
        f"|check2^{CHECK_ELEMENTS.bit_length() - 1}x{_ROUNDS}"  # a new check: new verdicts
    )


def _valid(entry) -> bool:
    """A verdict as :func:`measure` writes it: finite, positive times."""
    return isinstance(entry, dict) and all(
        isinstance(entry.get(k), int | float)
        and not isinstance(entry.get(k), bool)
        and math.isfinite(entry[k])
        and entry[k] > 0
        for k in ("native_s", "torch_s")
    )


_warned: list[str] = []


def _load() -> dict:
    """The cached verdicts, each checked (:func:`_valid`); a file that is not a regular
    file of JSON verdicts (truncated, garbage, a FIFO) is ignored with one warning and
    replaced by the next verdict measured."""
    path = cache_file()
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            raise ValueError("not a regular file")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if str(path) not in _warned:
            _warned.append(str(path))
            warnings.warn(
                f"native kernels: the self-check cache {path} is not usable "
                f"({type(exc).__name__}: {exc}); measuring again",
                RuntimeWarning,
                stacklevel=4,
            )
        return {}
    return {k: v for k, v in data.items() if _valid(v)}


def _store(key: str, entry: dict) -> None:
    """Add one verdict to the file (atomic replace; a lost race only costs a re-check)."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _load()
        data[key] = entry
        fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)  # also replaces a FIFO or garbage that stood there
    except OSError:
        pass  # a read-only cache: the verdict stays in memory for this process


def measure(
    act: str | Activation, dtype, shared: bool, K: int, p: int, n: int, keep: bool = True
) -> dict:
    """Seconds a step for the native kernels and the torch ops on a cut of this shape."""
    from ..paths import RowSpacePath

    k = max(1, min(K, CHECK_ELEMENTS // max(1, p * n)))
    d = n + 1  # Z = W X^T is what the step moves; d only enters at bind
    g = torch.Generator().manual_seed(0)

    def draw(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    X = draw(n, d, scale=d**-0.5) if shared else draw(k, n, d, scale=d**-0.5)
    W, beta0, b, y = draw(k, p, d), draw(k, p), draw(k, p), draw(k, n)
    activation = get_activation(act)
    lr = torch.full((k,), 1e-3, dtype=dtype)
    lam = torch.full((k, 1), 0.01, dtype=dtype)
    c = 2 / n / math.sqrt(p)
    sl = slice(0, k)
    runs = {}
    for name in ("native", "torch"):
        native = name == "native"
        path = RowSpacePath(W.clone(), W, activation, name, keep)
        path.bind(X)
        if (path.native is None) == native:
            raise RuntimeError(f"self-check: could not set up the {name} step")
        runs[name] = (path, beta0.clone())

    def steps(name: str) -> float:
        path, beta = runs[name]
        t0 = time.perf_counter()
        for _ in range(_STEPS):
            u, cache = path.outputs(sl, beta)
            e = u - y
            grad = path.step(sl, cache, e * c, b * lr[:, None], lr, None, (beta, lr[:, None], lam))
            if grad is not None:  # the engine's beta update, as in fit
                beta.addcmul_(lr[:, None], grad.addcmul_(lam, beta), value=-1.0)
        return (time.perf_counter() - t0) / _STEPS

    for name in runs:  # warm-up: page faults, first-call costs
        steps(name)
    best = {"native": math.inf, "torch": math.inf}
    for r in range(_ROUNDS):
        for name in ("native", "torch") if r % 2 == 0 else ("torch", "native"):
            best[name] = min(best[name], steps(name))
    return {"native_s": best["native"], "torch_s": best["torch"], "members": k}


def verdict(act: str | Activation, dtype, shared: bool, K: int, p: int, n: int, keep: bool = True):
    """None where the native kernels were the faster on this shape class, else why not
    (``act``: an activation with native kernels, or its name; keyed by its kernels)."""
    key = shape_key(get_activation(act).native, dtype, shared, K, p, n, keep)
    with _lock:
        entry = _memo.get(key)
        if entry is None:
            entry = _load().get(key)
            if not _valid(entry):
                try:
                    entry = measure(act, dtype, shared, K, p, n, keep)
                except Exception as exc:  # noqa: BLE001 -- any failure: the torch ops
                    return f"self-check failed ({type(exc).__name__}: {exc}); using torch ops"
                _store(key, entry)
            _memo[key] = entry
    if entry["native_s"] < entry["torch_s"]:
        return None
    return (
        f"self-check: native {entry['native_s'] * 1e3:.3g} ms a step against torch ops "
        f"{entry['torch_s'] * 1e3:.3g} ms on this shape class (cached in {cache_file()}; "
        "kernels='native' or FA_NATIVE=1 forces native)"
    )
