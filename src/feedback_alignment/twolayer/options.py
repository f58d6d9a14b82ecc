"""The arguments of :meth:`TwoLayerEnsemble.fit`, checked before anything is computed.

:meth:`FitOptions.check` turns what a caller passed into one :class:`FitOptions`, or
raises a one-line :class:`~feedback_alignment.errors.ConfigError` that names the bad value
and what is accepted; the fit loop then reads only checked values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from ..bounds import BOUNDS, MAX_STEPS, check_memory, fmt_int, within
from ..errors import ConfigError, check, choice
from .dropout import MAX_DROPOUT
from .kernels import KERNELS
from .loss import LOSSES
from .monitor import Plateau
from .paths import PATHS
from .recorder import CONSERVATION_METRICS, METRICS
from .rules import rule_names
from .schedules import get_schedule


def per_member(name: str, value, K: int, *, minimum: float = 0.0, strict: bool = False):
    """A scalar or K values -> float64 numpy (K,), checked against ``minimum``."""
    accepted = f"a number or {K} numbers (one per member)"
    if isinstance(value, str | bytes) or (
        isinstance(value, list | tuple) and any(isinstance(v, str | bytes | bool) for v in value)
    ):
        raise ConfigError(f"{name} must be {accepted}, got {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {accepted}, got {value!r}") from None
    if arr.ndim == 0:
        arr = np.full(K, float(arr))
    check(
        arr.shape == (K,),
        f"{name} must be a scalar or {K} values (one per member), got shape {arr.shape}",
    )
    bad = ~np.isfinite(arr) | ((arr <= minimum) if strict else (arr < minimum))
    if bad.any():
        k = int(np.argmax(bad))
        op = ">" if strict else ">="
        raise ConfigError(
            f"{name} must be finite and {op} {minimum}, got {float(arr[k])!r} (member {k})"
        )
    return arr


def check_recorded_rows(max_steps: int, record_every: int | None, extra: int, key: str = ""):
    """The most rows a fit of up to ``max_steps`` steps records (every ``record_every``,
    ``extra`` further steps, the last), or one ConfigError line beyond the bound."""
    rows = 1 + extra + (max_steps // record_every + 1 if record_every else 0)
    limit = BOUNDS["records"].hi
    if rows > limit:
        why = f"record_every = {record_every} over up to {max_steps} steps" if record_every else ""
        raise ConfigError(
            f"{key}the fit would record up to {rows} rows ({why or f'{extra} record_steps'}); "
            f"accepted: at most {fmt_int(limit)} rows (a larger record_every, fewer "
            "record_steps, or a lower cap: steps or max_steps)"
        )
    return rows


def _check_records(K, max_steps, record_every, record_steps, metrics) -> None:
    """Refuse a fit that could record more rows than the bound, or more than memory holds."""
    rows = check_recorded_rows(
        max_steps, record_every, sum(1 for s in record_steps if s <= max_steps)
    )
    check_memory(
        256 * rows * (K + 8) * max(len(metrics), 1),
        f"recording {len(metrics)} metric(s) of {K} member(s) at {rows} steps",
        "a larger record_every or fewer record_steps",
    )


def _is_int(v) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


@dataclass(frozen=True)
class FitOptions:
    """A fit's checked arguments (see :meth:`TwoLayerEnsemble.fit` for their meaning).

    ``X`` and ``y`` are tensors in the ensemble's dtype and device, y (K, n); ``rules``
    one name per member; ``lr``, ``lam`` and ``w_decay`` float64 arrays (K,); ``schedule``
    the lambda schedule as a callable; ``max_steps`` the step cap (``steps`` or the
    Plateau's); ``record_steps`` a set.
    """

    X: torch.Tensor
    y: torch.Tensor
    rules: list[str]
    lr: np.ndarray
    lam: np.ndarray
    w_decay: np.ndarray
    schedule: object
    loss: str
    steps: int | None
    stop: Plateau | None
    max_steps: int
    record_every: int | None
    record_steps: set[int]
    metrics: tuple[str, ...]
    blowup: float
    check_every: int
    path: str
    chunk_members: int | None
    kernels: str
    keep_weights: bool
    dropout: np.ndarray

    @property
    def n(self) -> int:
        return self.X.shape[-2]

    @property
    def work(self) -> int:
        """Element-steps per member and unit, n steps (the minimum run under a Plateau)."""
        return self.n * (self.steps if self.stop is None else self.stop.min_steps)

    @classmethod
    def check(cls, ens, X, y, *, rule, lr, lam, lam_schedule, w_decay, loss, steps, stop,
              record_every, record_steps, metrics, blowup, check_every, path, chunk_members,
              kernels, keep_weights, dropout) -> FitOptions:  # fmt: skip
        """Check every argument of ``ens.fit``; the first bad one raises ConfigError."""
        K = ens.K
        X = ens._check_X(X)
        y = ens._check_y(y, X)
        rules = rule_names(rule, K)
        choice("loss", loss, LOSSES)
        if isinstance(lr, str) and lr in ("paper", "paper_dropout"):  # the authors' step
            lr = ens.activation.paper_lr(dropout=lr == "paper_dropout")
        lr = per_member("lr", lr, K, strict=True)
        lam = per_member("lam", lam, K)
        w_decay = per_member("w_decay", w_decay, K)
        dropout = per_member("dropout", dropout, K)
        check(
            (dropout < MAX_DROPOUT).all(),
            f"dropout must be < 1 (the probability of dropping a hidden unit), got "
            f"{float(dropout.max())!r}",
        )
        if dropout.any():
            check(
                path in ("auto", "explicit", "rowspace"),
                f"path {path!r} cannot run dropout (a per-sample mask breaks its A = b a^T "
                "form); accepted with dropout: 'auto', 'explicit', 'rowspace'",
            )
            check(
                kernels in ("auto", "torch"),
                f"kernels={kernels!r} cannot run dropout (they take no mask); accepted with "
                "dropout: 'auto', 'torch'",
            )
        schedule = get_schedule(lam_schedule)
        if isinstance(metrics, str):  # one name, never iterated letter by letter
            metrics = (metrics,)
        check(
            isinstance(metrics, Iterable),
            f"metrics must be a name or a sequence of names, got {metrics!r}",
        )
        metrics = tuple(metrics)
        for m in metrics:
            choice("metric", m, METRICS + CONSERVATION_METRICS)
        check(
            (steps is None) != (stop is None),
            f"give exactly one of steps or stop, got steps={steps!r}, stop={stop!r}",
        )
        if steps is not None:
            check(_is_int(steps) and steps >= 0, f"steps must be an integer >= 0, got {steps!r}")
            max_steps = within("steps", steps, "steps")
        else:
            check(isinstance(stop, Plateau), f"stop must be a Plateau, got {stop!r}")
            max_steps = stop.max_steps if stop.max_steps is not None else MAX_STEPS
        check(
            record_every is None or (_is_int(record_every) and record_every >= 0),
            f"record_every must be an integer >= 0 (0: only the last step), got {record_every!r}",
        )
        check(
            steps != 0 or "delta_alignment" not in metrics,
            "metric delta_alignment, cos(beta - beta(0), b), is undefined after steps = 0 "
            "(beta has not moved); accepted: steps >= 1, or metrics without delta_alignment",
        )
        record_every = record_every or None
        check(
            isinstance(blowup, int | float) and not isinstance(blowup, bool) and blowup > 1,
            f"blowup must be a number > 1, got {blowup!r}",
        )
        check(
            _is_int(check_every) and check_every >= 1,
            f"check_every must be a positive integer, got {check_every!r}",
        )
        check(
            record_steps is None
            or (
                not isinstance(record_steps, str | bytes)
                and isinstance(record_steps, Iterable)
                and all(_is_int(s) and s >= 0 for s in record_steps)
            ),
            f"record_steps must be a sequence of integers >= 0, got {record_steps!r}",
        )
        check(
            chunk_members is None or (_is_int(chunk_members) and chunk_members >= 1),
            f"chunk_members must be a positive integer, got {chunk_members!r}",
        )
        choice("path", path, ("auto", *PATHS))
        choice("kernels", kernels, KERNELS)
        check(
            keep_weights in (True, False),
            f"keep_weights must be True or False, got {keep_weights!r}",
        )
        if not keep_weights:
            need_w = [m for m in metrics if m in ("w_change", "w_sq_norm")]
            if "penalty" in metrics and w_decay.any():
                need_w.append("penalty (with w_decay)")
            check(
                not need_w,
                f"metric {need_w[0] if need_w else ''!s} needs the first-layer weights W; "
                "keep_weights=False does not keep them: drop the metric or fit with "
                "keep_weights=True",
            )
        check(
            ens._path is None or ens._path.keeps_weights,
            "this ensemble's last fit ran with keep_weights=False and kept no first-layer "
            "weights, so a fit cannot continue from it; build a new TwoLayerEnsemble",
        )
        record_steps = {int(s) for s in (record_steps or ())}
        _check_records(K, max_steps, record_every, record_steps, metrics)
        return cls(
            X, y, rules, lr, lam, w_decay, schedule, loss, steps, stop, max_steps,
            record_every, record_steps, metrics, blowup, check_every, path, chunk_members,
            kernels, keep_weights, dropout,
        )  # fmt: skip
