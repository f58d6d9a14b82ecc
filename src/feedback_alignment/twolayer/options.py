"""The options of :meth:`TwoLayerEnsemble.fit`, declared once and checked before anything
is computed.

:class:`FitOptions` is that declaration: one field per option with its default (the
defaults a sweep shares come from :data:`.schema.FIELDS`), checked when it is built, the
first bad value raising a one-line :class:`~feedback_alignment.errors.ConfigError` that
names it and what is accepted. ``fit``'s signature is built from its fields, and the fit
loop reads only checked values; a fit's checkpoint fingerprint reads every field too.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, InitVar, dataclass, field, fields

import numpy as np
import torch

from ..bounds import BOUNDS, MAX_STEPS, check_memory, fmt_int, is_int, within
from ..errors import ConfigError, check, choice, need, refusal
from ..fields import BLOWUP, Field
from .kernels import KERNELS
from .monitor import Plateau
from .paths import PATHS
from .recorder import CONSERVATION_METRICS, METRICS
from .rules import rule_names
from .schedules import get_schedule
from .schema import FIELDS, step_size


def per_member(field: Field, value, K: int) -> np.ndarray:
    """A number or K numbers (one per member) of a two-layer field -> float64 numpy (K,),
    each value accepted by the field's one declaration (:data:`.schema.FIELDS`): "lam =
    'big' is not accepted; ...", "lam[1] = -0.2 is not accepted; accepted: a finite number
    >= 0"."""
    name, words = field.name, field.check.accepted
    accepted = f"{words}; or {K} such numbers, one per member"
    if isinstance(value, str | bytes) or (
        isinstance(value, list | tuple) and any(isinstance(v, str | bytes | bool) for v in value)
    ):
        raise refusal(name, value, accepted)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise refusal(name, value, accepted) from None
    if arr.ndim == 0:
        arr = np.full(K, float(arr))
    if arr.shape != (K,):
        raise refusal(name, value, f"{accepted} (got shape {arr.shape})")
    for k, v in enumerate(arr.tolist()):
        if not field.check.test(v):
            raise refusal(name if np.ndim(value) == 0 else f"{name}[{k}]", v, words)
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


def check_moved(steps: int | None, metrics, key: str = "") -> None:
    """Refuse metric delta_alignment on a run of 0 steps (beta has not moved)."""
    check(
        steps != 0 or "delta_alignment" not in metrics,
        f"{key}metric delta_alignment, cos(beta - beta(0), b), is undefined after steps = 0 "
        "(beta has not moved); accepted: steps >= 1, or metrics without delta_alignment",
    )


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


def _default(name: str):
    """A fit option's default where a sweep's two-layer field declares it (:mod:`.schema`)."""
    value = FIELDS[name].default
    return field(default_factory=lambda: list(value)) if isinstance(value, list) else value


@dataclass(frozen=True)
class FitOptions:
    """The options of :meth:`TwoLayerEnsemble.fit`, declared once: each field's default is
    here (or, where a sweep shares the option, in :data:`.schema.FIELDS`), and
    :meth:`TwoLayerEnsemble.fit`'s signature is built from these fields.

    Built with the ensemble (``FitOptions(ens, X, y, lr=...)``), every value is checked
    in declaration order, the first bad one raising a one-line ConfigError, and held in
    its checked form: ``X`` and ``y`` tensors in the ensemble's dtype and device, y (K, n);
    ``rule`` one name per member; ``lr``, ``lam``, ``w_decay`` and ``dropout`` float64
    arrays (K,); ``lam_schedule`` the schedule object; ``record_every`` None for the last
    step only; ``record_steps`` a set; ``metrics`` a tuple; ``max_steps`` the step cap
    (``steps`` or the Plateau's). The meaning of each option: :meth:`TwoLayerEnsemble.fit`.
    """

    ens: InitVar[object]
    X: torch.Tensor
    y: torch.Tensor
    rule: str | Sequence[str] = _default("rule")
    lr: float | str | Sequence[float] = _default("lr")
    lam: float | Sequence[float] = _default("lam")
    lam_schedule: object = _default("lam_schedule")
    w_decay: float | Sequence[float] = _default("w_decay")
    loss: str = _default("loss")
    steps: int | None = None
    stop: Plateau | None = None
    record_every: int | None = _default("record_every")
    record_steps: Iterable[int] | None = _default("record_steps")
    metrics: Sequence[str] = _default("metrics")
    blowup: float = BLOWUP.default
    divergence_every: int = 100  # steps between divergence checks at most
    path: str = "auto"
    chunk_members: int | None = None
    kernels: str = "auto"
    keep_weights: bool = True
    dropout: float | Sequence[float] = _default("dropout")
    max_steps: int = field(init=False)

    @property
    def n(self) -> int:
        return self.X.shape[-2]

    @property
    def work(self) -> int:
        """Element-steps per member and unit, n steps (the minimum run under a Plateau)."""
        return self.n * (self.steps if self.stop is None else self.stop.min_steps)

    def _set(self, **checked) -> None:
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def __post_init__(self, ens) -> None:
        """Check every option against ``ens``; the first bad one raises ConfigError."""
        K = ens.K
        X = ens._check_X(self.X)
        self._set(X=X, y=ens._check_y(self.y, X), rule=rule_names(self.rule, K))
        FIELDS["loss"].validate(self.loss)
        self._set(
            lr=per_member(FIELDS["lr"], step_size(self.lr, ens.activation), K),
            lam=per_member(FIELDS["lam"], self.lam, K),
            w_decay=per_member(FIELDS["w_decay"], self.w_decay, K),
            dropout=per_member(FIELDS["dropout"], self.dropout, K),
        )
        dropout, path, kernels = self.dropout, self.path, self.kernels
        if dropout.any():
            check(
                path in ("auto", "explicit", "rowspace"),
                f"path {path!r} cannot run dropout (a per-sample mask breaks its A = b a^T "
                "form); accepted with dropout: 'auto', 'explicit', 'rowspace'",
            )
            check(
                kernels != "compiled",
                "kernels='compiled' cannot run dropout (they take no mask); accepted with "
                "dropout: 'auto', 'torch', 'native'",
            )
        self._set(lam_schedule=get_schedule(self.lam_schedule))
        metrics = self.metrics
        if isinstance(metrics, str):  # one name, never iterated letter by letter
            metrics = (metrics,)
        need(
            isinstance(metrics, Iterable),
            "metrics",
            metrics,
            "a name or a sequence of names",
        )
        metrics = tuple(metrics)
        for m in metrics:
            choice("metric", m, METRICS + CONSERVATION_METRICS)
        self._set(metrics=metrics)
        steps, stop, record_every = self.steps, self.stop, self.record_every
        check(
            (steps is None) != (stop is None),
            f"give exactly one of steps or stop, got steps={steps!r}, stop={stop!r}",
        )
        if steps is not None:
            max_steps = within("steps", steps, "steps")
        else:
            need(isinstance(stop, Plateau), "stop", stop, "a Plateau: fa.Plateau(min_steps, ...)")
            max_steps = stop.max_steps if stop.max_steps is not None else MAX_STEPS
        if record_every is not None:
            FIELDS["record_every"].validate(record_every)
        check_moved(steps, metrics)
        self._set(max_steps=max_steps, record_every=record_every or None)
        self._set(blowup=BLOWUP.validate(self.blowup))
        every, record_steps = self.divergence_every, self.record_steps
        need(
            is_int(every) and every >= 1,
            "divergence_every",
            every,
            "a positive integer",
        )
        need(
            record_steps is None
            or (
                not isinstance(record_steps, str | bytes)
                and isinstance(record_steps, Iterable)
                and all(is_int(s) and s >= 0 for s in record_steps)
            ),
            "record_steps",
            record_steps,
            "a sequence of integers >= 0",
        )
        chunk_members = self.chunk_members
        need(
            chunk_members is None or (is_int(chunk_members) and chunk_members >= 1),
            "chunk_members",
            chunk_members,
            "a positive integer",
        )
        choice("path", path, ("auto", *PATHS))
        choice("kernels", kernels, KERNELS)
        keep_weights = self.keep_weights
        need(
            keep_weights in (True, False),
            "keep_weights",
            keep_weights,
            "True or False",
        )
        if not keep_weights:
            need_w = [m for m in metrics if m in ("w_change", "w_sq_norm")]
            if "penalty" in metrics and self.w_decay.any():
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
        self._set(record_steps=record_steps)
        _check_records(K, max_steps, self.record_every, record_steps, metrics)

    @classmethod
    def _options(cls) -> list:
        """The fields a caller gives: every field but the data and ``max_steps``."""
        return [f for f in fields(cls) if f.init and f.name not in ("X", "y")]

    @classmethod
    def given(cls, ens, X, y, options: dict) -> FitOptions:
        """``FitOptions(ens, X, y, **options)``; an unknown name is one ConfigError line."""
        names = [f.name for f in cls._options()]
        for name in options:
            if name not in names:
                raise ConfigError(f"unknown fit option {name!r}; accepted: {', '.join(names)}")
        return cls(ens, X, y, **options)

    def with_kernels(self, kernels: str) -> FitOptions:
        """These options with ``kernels`` in place of theirs (a resumed fit's)."""
        out = copy.copy(self)
        choice("kernels", kernels, KERNELS)
        out._set(kernels=kernels)
        return out

    @classmethod
    def signature(cls, method) -> inspect.Signature:
        """``method``'s signature (self, X, y, *options*, checkpoint) built from the fields:
        what help() and inspect show for :meth:`TwoLayerEnsemble.fit`."""
        keyword = inspect.Parameter.KEYWORD_ONLY
        params = list(inspect.signature(method).parameters.values())[:3]  # self, X, y
        for f in cls._options():
            default = f.default_factory() if f.default is MISSING else f.default
            params.append(inspect.Parameter(f.name, keyword, default=default))
        params.append(inspect.Parameter("checkpoint", keyword, default=None))
        return inspect.Signature(params, return_annotation="History")
