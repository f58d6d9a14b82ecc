"""A batched engine for K independent two-layer networks trained in lockstep.

Each member is the paper's network f(x) = (1/sqrt p) sum_r beta_r psi(w_r . x) with its
own seed, data (or shared data), rule, step size and weight decay. Tensors carry a
leading ensemble axis K; one full-batch gradient-descent step is a handful of batched
matrix products with the update equations written out (no autograd, no per-member loop):

    Z    = W X^T                        pre-activations, (K, p, n)
    u    = beta^T psi(Z) / sqrt p       outputs, (K, n);   e = u - y
    beta <- beta - lr (c/sqrt p) psi(Z) e - lr lam(t) beta
    W    <- (1 - lr wd) W - lr (c/sqrt p) [fb * psi'(Z) * e] X

with c the loss factor (2/n for the authors' mean squared error) and fb = b for feedback
alignment, fb = beta for backprop. Both layers are updated from the same e(t).

The first layer is held by a *path* object. :class:`ExplicitPath` stores W itself;
faster exact paths (the row-space form W = s W0 + A X) plug in behind the same methods.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..activations import Activation, get_activation
from ..backend import resolve_device, resolve_dtype
from ..bounds import check_memory
from ..errors import ConfigError, check, choice
from .loss import LOSSES, loss_factor
from .paths import PATHS, ExplicitPath, LinearFAPath, RowSpacePath
from .schedules import Constant, get_schedule

RULES = ("bp", "fa")
# working-set budget per chunk on the CPU: measured, large products lose ~2x past it
_CHUNK_BYTES = 24e6
# with fused kernels (fewer, larger passes) bigger chunks pay: measured best at ~64 MB
# (p = 3200: 25 members, 11 vs 13 ms a step at 9; p = 12800: 6 members)
_CHUNK_BYTES_FUSED = 64e6
# below this many element-steps (K p n steps) compiling (~5 s a shape) costs more than it
# saves on a CPU (measured ~0.2 ns an element-step at p = 3200)
_FUSE_MIN_WORK = 2e11
# most steps between two divergence checks (the ring buffer of MSEs holds this many)
_MSE_WINDOW = 256
METRICS = (
    "mse",  # mean squared error, without any penalty
    "penalty",  # lam(t)/2 |beta|^2 + wd/2 |W|_F^2
    "alignment",  # cos(beta, b)
    "delta_alignment",  # cos(beta - beta(0), b); NaN at t = 0
    "beta_change",  # |beta - beta(0)| / |beta(0)|
    "w_change",  # |W - W(0)|_F / |W(0)|_F
    "update_alignment",  # cos(first-layer update applied, true backprop gradient)
)
# the terms of the conservation law (twolayer/conservation.py); asked for by name only,
# as they cost about a step each when recorded
CONSERVATION_METRICS = (
    "b_beta",  # b . beta, the alignment's numerator
    "w_sq_norm",  # |W|_F^2
    "beta_sq_norm",  # |beta|^2
    "w_step_sq",  # |lr (fb * psi'(Z) * c e / sqrt p) X|_F^2: this step's W update less decay
    "beta_step_sq",  # |beta(t+1) - beta(t)|^2, this step's second-layer update
)


# --------------------------------------------------------------------------- stopping
PLATEAU_CHECKS = ("after_min", "authors")


def paper_min_steps(p: int, base: int = 5000) -> int:
    """The authors' minimum run length at width p: rint(base sqrt(p) // rint(sqrt(200))).

    Floor division by 14 then rounding, as their code computes it: 5050 at p = 200, 10101 at
    p = 800, 20203 at p = 3200 (not round(base sqrt(p/200)), which gives 5000, 10000, 20000).
    """
    return int(np.rint(base * np.sqrt(p) // np.rint(np.sqrt(200))))


@dataclass(frozen=True)
class Plateau:
    """A plateau stopping rule, decided per member; ``max_steps`` caps the run.

    ``checks="after_min"``: train at least ``min_steps``; from then on, at ``min_steps +
    k check_every`` (k >= 1), stop a member whose MSE changed by less than ``tol`` since the
    previous checkpoint (``check_every`` steps earlier).

    ``checks="authors"``: the loop of the paper's published code. The MSE is checked at
    every step t (t updates applied) with ``t % check_every == check_every - 1``, from the
    start, against the previous check (the first against 0); once a change below ``tol``
    has been seen the member stops at the first step >= ``min_steps`` that its loop reaches
    (a check at t lets the update at t through, so a stop after ``min_steps`` comes at a
    multiple of ``check_every``). :meth:`paper` builds this rule.
    """

    min_steps: int
    check_every: int = 1000
    tol: float = 1e-3
    max_steps: int | None = None
    checks: str = "after_min"

    @classmethod
    def paper(cls, p: int, max_steps: int | None = None) -> Plateau:
        """The paper's rule as its code runs it: at least :func:`paper_min_steps` (p) steps,
        MSE checked at t % 1000 == 999, on until it changed by < 1e-3 between checks."""
        return cls(paper_min_steps(p), 1000, 1e-3, max_steps, "authors")

    def __post_init__(self):
        choice("Plateau checks", self.checks, PLATEAU_CHECKS)
        check(self.min_steps >= 0, f"Plateau min_steps must be >= 0, got {self.min_steps!r}")
        check(self.check_every >= 1, f"Plateau check_every must be >= 1, got {self.check_every!r}")
        check(self.tol >= 0, f"Plateau tol must be >= 0, got {self.tol!r}")
        check(
            self.max_steps is None or self.max_steps >= self.min_steps,
            f"Plateau max_steps {self.max_steps!r} must be >= min_steps {self.min_steps}",
        )


# --------------------------------------------------------------------------- history
@dataclass
class History:
    """What a :meth:`TwoLayerEnsemble.fit` call recorded.

    ``metrics[name]`` is a float64 array (R, K) at the step numbers ``steps`` (R,);
    ``final[name]`` is (K,) at each member's last step. ``status[k]`` is ``"done"`` or
    ``"diverged"``; ``stop_step[k]`` the step count at which member k stopped (its
    parameters are frozen from there); ``diverged_at[k]`` the first step whose MSE was
    non-finite or exploded (-1 if none), with ``messages[k]`` saying why. ``path`` names
    the first layer's representation and ``kernels`` what ran its element-wise work:
    ``"torch"`` (eager ops), ``"compiled"`` (torch.compile) or ``"native"`` (the C++
    row-space kernels for ReLU and tanh); where the native kernels did not run,
    ``kernels_why`` says why (empty where they ran).
    """

    steps: np.ndarray
    metrics: dict[str, np.ndarray]
    final: dict[str, np.ndarray]
    status: list[str]
    stop_step: np.ndarray
    diverged_at: np.ndarray
    messages: list[str]
    path: str
    seconds: float
    kernels: str = "torch"
    extra: dict = field(default_factory=dict)
    kernels_why: str = ""

    def member(self, k: int) -> dict[str, np.ndarray]:
        """Member k's series: ``{"step": ..., metric: ...}``."""
        return {"step": self.steps, **{m: v[:, k] for m, v in self.metrics.items()}}

    @property
    def diverged(self) -> list[int]:
        return [k for k, s in enumerate(self.status) if s == "diverged"]


# --------------------------------------------------------------------------- ensemble
def _per_member(name: str, value, K: int, *, minimum: float = 0.0, strict: bool = False):
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


def _as_tensor(name: str, value, dtype, device) -> torch.Tensor:
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(
            f"{name} must be an array of numbers, got {type(value).__name__}"
        ) from None
    check(not t.is_complex(), f"{name} must be real, got dtype {t.dtype}")
    t = t.to(dtype=dtype, device=device)
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise ConfigError(
            f"{name} holds a non-finite value {t[tuple(bad)].item()!r} at index {tuple(bad)}; "
            "remove or impute NaN/inf entries"
        )
    return t


class TwoLayerEnsemble:
    """K two-layer networks of one shape (d inputs, p hidden units), one per seed.

    Initialisation follows the paper: W, beta and the feedback vector b i.i.d. N(0, 1),
    each times its ``init_scale`` (a float for all three or a dict with keys W, beta, b).
    Every member draws from its own generator, so a member gives the same numbers alone
    or inside any ensemble, in float32 or float64 (drawn in float64, then cast).
    """

    def __init__(
        self,
        d: int,
        p: int,
        *,
        seeds: Sequence[int] | int = 0,
        activation: str | Activation = "relu",
        init_scale: float | dict = 1.0,
        dtype: str | torch.dtype = "float64",
        device: str | torch.device | None = "cpu",
    ):
        for name, v in (("d", d), ("p", p)):
            check(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                f"{name} must be an integer >= 1, got {v!r}",
            )
        if isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
            seeds = [seeds]
        elif isinstance(seeds, str | bytes | dict) or not isinstance(seeds, Iterable):
            raise ConfigError(
                f"seeds must be a non-negative integer or a sequence of them, got {seeds!r}"
            )
        seeds = list(seeds)
        check(len(seeds) >= 1, "seeds must hold at least one seed, got an empty sequence")
        for s in seeds:
            check(
                isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 0,
                f"seed must be a non-negative integer, got {s!r}",
            )
        scales = {"W": 1.0, "beta": 1.0, "b": 1.0}
        if isinstance(init_scale, dict):
            unknown = set(init_scale) - set(scales)
            check(
                not unknown,
                f"init_scale has unknown key(s) {sorted(unknown)}; accepted: W, beta, b",
            )
            scales.update(init_scale)
        else:
            scales = dict.fromkeys(scales, init_scale)
        for k, v in scales.items():
            check(
                isinstance(v, int | float) and math.isfinite(v) and v > 0,
                f"init_scale[{k!r}] must be a positive number, got {v!r}",
            )
        # W0, W, beta, b in float64 while drawn, then in the dtype: refuse before allocating
        check_memory(
            2 * 8 * len(seeds) * p * (d + 3),
            f"an ensemble of {len(seeds)} member(s) at d = {d}, p = {p}",
            "smaller d or p, or fewer seeds",
        )
        self.d, self.p, self.K = d, p, len(seeds)
        self.seeds = [int(s) for s in seeds]
        self.activation = get_activation(activation)
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)
        Ws, betas, bs = [], [], []
        for s in self.seeds:
            g = torch.Generator().manual_seed(s)
            Ws.append(torch.randn(p, d, generator=g, dtype=torch.float64) * scales["W"])
            betas.append(torch.randn(p, generator=g, dtype=torch.float64) * scales["beta"])
            bs.append(torch.randn(p, generator=g, dtype=torch.float64) * scales["b"])
        to = {"dtype": self.dtype, "device": self.device}
        self.W0 = torch.stack(Ws).to(**to)
        self._W = self.W0  # current weights when no path holds them (never mutated)
        self._path = None
        self.beta = torch.stack(betas).to(**to)
        self.b = torch.stack(bs).to(**to)
        self.beta0 = self.beta.clone()
        self.t = 0  # updates applied so far (schedules read it)

    # ------------------------------------------------------------------ parameters
    @property
    def W(self) -> torch.Tensor:
        """First-layer weights (K, p, d), formed from the path's representation if needed.

        Raises :class:`ConfigError` after a fit with ``keep_weights=False`` on the
        row-space path, which kept only Z = W X^T and beta."""
        return self._W if self._path is None else self._path.materialise()

    def output(self, X) -> torch.Tensor:
        """u = f(X) for every member: X (n, d) or (K, n, d) -> (K, n)."""
        X = self._check_X(X)
        Z = self.W @ X.transpose(-1, -2) if X.dim() == 3 else self.W @ X.T
        return torch.einsum("kp,kpn->kn", self.beta, self.activation(Z)) / math.sqrt(self.p)

    # ------------------------------------------------------------------ validation
    def _check_X(self, X) -> torch.Tensor:
        X = _as_tensor("X", X, self.dtype, self.device)
        check(
            X.dim() in (2, 3),
            f"X must have shape (n, d) or (K, n, d), got {tuple(X.shape)}",
        )
        check(
            X.shape[-1] == self.d,
            f"X has {X.shape[-1]} features but the networks take d = {self.d}",
        )
        check(
            X.dim() == 2 or X.shape[0] == self.K,
            f"X has {X.shape[0]} data sets but the ensemble has K = {self.K} members",
        )
        check(X.shape[-2] >= 1, "X holds no samples (n = 0)")
        return X

    def _check_y(self, y, X: torch.Tensor) -> torch.Tensor:
        y = _as_tensor("y", y, self.dtype, self.device)
        n = X.shape[-2]
        if y.dim() == 1:
            check(y.shape[0] == n, f"y has {y.shape[0]} targets but X has n = {n} samples")
            y = y.expand(self.K, n)
        check(
            y.shape == (self.K, n),
            f"y must have shape ({n},) or ({self.K}, {n}), got {tuple(y.shape)}",
        )
        return y.contiguous()

    # ------------------------------------------------------------------ training
    def fit(
        self,
        X,
        y,
        *,
        rule: str | Sequence[str] = "fa",
        lr: float | Sequence[float] = 1e-2,
        lam: float | Sequence[float] = 0.0,
        lam_schedule=None,
        w_decay: float | Sequence[float] = 0.0,
        loss: str = "mse",
        steps: int | None = None,
        stop: Plateau | None = None,
        record_every: int | None = None,
        record_steps: Sequence[int] | None = None,
        metrics: Sequence[str] = METRICS,
        blowup: float = 1e10,
        check_every: int = 100,
        path: str = "auto",
        chunk_members: int | None = None,
        fuse: bool | str = "auto",
        keep_weights: bool = True,
    ) -> History:
        """Train every member by full-batch gradient descent; return a :class:`History`.

        Give either ``steps`` (a fixed count) or ``stop`` (a :class:`Plateau`). Metrics in
        ``metrics`` are recorded at multiples of ``record_every`` and at ``record_steps``
        (step numbers count updates applied in this call; 0 is before the first), and at
        the last step. A member whose MSE turns non-finite or grows ``blowup``-fold over
        its start is marked diverged, reported with its step, and frozen; the others go on.

        ``path`` picks the first layer's exact representation (``"auto"``: the cheapest
        that applies; see :mod:`.paths`); ``History.path`` says which one ran. Members are
        processed in chunks of ``chunk_members`` (default: sized to stay in cache on the
        CPU, the whole ensemble on a GPU); chunking never changes the numbers. ``fuse``
        picks what runs the element-wise work of the dense paths: ``"auto"``, the native
        C++ kernels where they apply and a self-check (timed once per machine and shape
        class) finds them faster than the torch ops, else ``torch.compile`` kernels on a
        GPU and on the CPU for runs long enough to repay compiling, else the torch ops;
        ``True`` the native kernels wherever they apply (no self-check), else compiled
        ones; ``False`` the torch ops. ``History.kernels`` says which ran and
        ``History.kernels_why`` why the native ones did not. It changes results only by
        float rounding.

        ``keep_weights=False`` lets the row-space path keep only Z = W X^T and beta
        (half the memory traffic of a step): metrics that need W (``w_change``, and
        ``penalty`` with ``w_decay``) are then refused, and so are ``ens.W``,
        ``ens.output`` and a further ``fit`` afterwards, each with a
        :class:`ConfigError`. The other paths hold W cheaply and keep it exact.
        """
        K, p = self.K, self.p
        X = self._check_X(X)
        y = self._check_y(y, X)
        n = X.shape[-2]
        rules = [rule] * K if isinstance(rule, str) else list(rule)
        check(len(rules) == K, f"rule must be one name or {K} names, got {len(rules)}")
        for r in rules:
            choice("rule", r, RULES)
        choice("loss", loss, LOSSES)
        lr_np = _per_member("lr", lr, K, strict=True)
        lam_np = _per_member("lam", lam, K)
        wd_np = _per_member("w_decay", w_decay, K)
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
            check(
                isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0,
                f"steps must be an integer >= 0, got {steps!r}",
            )
            max_steps = steps
        else:
            check(isinstance(stop, Plateau), f"stop must be a Plateau, got {stop!r}")
            max_steps = stop.max_steps if stop.max_steps is not None else 10**12
        check(
            record_every is None or (isinstance(record_every, int) and record_every >= 1),
            f"record_every must be a positive integer, got {record_every!r}",
        )
        check(
            isinstance(blowup, int | float) and not isinstance(blowup, bool) and blowup > 1,
            f"blowup must be a number > 1, got {blowup!r}",
        )
        check(
            record_steps is None
            or (
                not isinstance(record_steps, str | bytes)
                and isinstance(record_steps, Iterable)
                and all(
                    isinstance(s, int | np.integer) and not isinstance(s, bool) and s >= 0
                    for s in record_steps
                )
            ),
            f"record_steps must be a sequence of integers >= 0, got {record_steps!r}",
        )
        record_set = set(int(s) for s in (record_steps or ()))
        check(
            keep_weights in (True, False),
            f"keep_weights must be True or False, got {keep_weights!r}",
        )
        if not keep_weights:
            need_w = [m for m in metrics if m in ("w_change", "w_sq_norm")]
            if "penalty" in metrics and wd_np.any():
                need_w.append("penalty (with w_decay)")
            check(
                not need_w,
                f"metric {need_w[0] if need_w else ''!s} needs the first-layer weights W; "
                "keep_weights=False does not keep them: drop the metric or fit with "
                "keep_weights=True",
            )
        check(
            self._path is None or self._path.keeps_weights,
            "this ensemble's last fit ran with keep_weights=False and kept no first-layer "
            "weights, so a fit cannot continue from it; build a new TwoLayerEnsemble",
        )

        to = {"dtype": self.dtype, "device": self.device}
        c = loss_factor(loss, n)
        c_p = c / math.sqrt(p)  # e -> the error the updates use
        lr_t = torch.as_tensor(lr_np, **to)
        lam_t = torch.as_tensor(lam_np, **to)
        wd_t = torch.as_tensor(wd_np, **to) if wd_np.any() else None
        is_fa = torch.as_tensor([r == "fa" for r in rules], device=self.device)
        all_fa, all_bp = bool(is_fa.all()), not bool(is_fa.any())
        check(
            fuse in (True, False, "auto"),
            f"fuse must be True, False or 'auto', got {fuse!r}",
        )
        # the native kernels: built once a machine; with "auto" timed once per shape class
        native = "auto" if fuse == "auto" else bool(fuse)
        if fuse == "auto":
            work = K * p * n * (steps if stop is None else stop.min_steps)  # element-steps
            fuse = self.device.type == "cuda" or work >= _FUSE_MIN_WORK
        fl = self._make_path(path, n, all_fa, bool(fuse), native, keep_weights)
        fl.bind(X)
        if fl.owns_beta:
            fl.bind_beta(self.beta)  # the path holds beta in its own coordinates
        self._path = fl
        chunks = self._chunks(chunk_members, fl, n)
        active = torch.ones(K, dtype=torch.bool, device=self.device)
        first_bad = torch.full((K,), -1, dtype=torch.long, device=self.device)
        stop_step = np.full(K, -1, dtype=np.int64)
        mse0 = torch.empty(K, **to)
        mse_ckpt = torch.empty(K, **to)
        have_ckpt = False
        authors = stop is not None and stop.checks == "authors"
        if authors:  # the authors' loop: the first check compares with 0, a plateau sticks
            mse_ckpt.zero_()
            settled = torch.zeros(K, dtype=torch.bool, device=self.device)
        constant_schedule = isinstance(schedule, Constant)
        lam_now = lam_t
        # divergence is judged at sync steps from a ring buffer of every step's MSE since
        # the last one (no per-step bookkeeping, no host sync between them)
        window = min(check_every, _MSE_WINDOW, max_steps + 1)
        mse_buf = torch.empty(window, K, **to)
        last_sync = -1
        rates: dict[str, torch.Tensor] = {}

        def update_rates() -> None:
            """Per-member step factors; they change only with `active` or lam(t)."""
            lr_eff = lr_t * active
            rates["lr"] = lr_eff[:, None]
            rates["lam"] = lam_now[:, None]
            rates["b_lr"] = self.b * rates["lr"]
            if wd_t is not None:
                rates["keep"] = 1 - lr_eff * wd_t
            rates["lr_eff"] = lr_eff

        rec_steps: list[int] = []
        rec: dict[str, list[torch.Tensor]] = {m: [] for m in metrics}
        t0 = time.perf_counter()
        t = 0
        update_rates()
        while True:
            if not constant_schedule:
                lam_now = lam_t * torch.as_tensor(schedule(self.t), **to)
                update_rates()
            last = t >= max_steps
            checkpoint = (
                stop is not None
                and not authors
                and t >= stop.min_steps
                and (t - stop.min_steps) % stop.check_every == 0
            )
            # authors' rule: a settled member stops at min_steps or just after a check
            auth_stop = (
                authors
                and t >= stop.min_steps
                and (t == stop.min_steps or t % stop.check_every == 0)
            )
            auth_check = authors and t % stop.check_every == stop.check_every - 1
            sync = (
                last or checkpoint or auth_stop or t % check_every == 0 or t - last_sync >= window
            )
            recording = last or (record_every and t % record_every == 0) or t in record_set
            row = {m: torch.empty(K, **to) for m in metrics} if recording else None
            if sync:  # the steps since the last sync, oldest first, as ring-buffer rows
                since = torch.arange(last_sync + 1, t + 1, device=self.device)
                rows = since % window
            for sl in chunks:
                beta = self.beta[sl]
                u, cache = fl.outputs(sl, beta)
                e = u - y[sl]
                mse = torch.mean(e * e, 1, out=mse_buf[t % window, sl])
                if t == 0:
                    mse0[sl] = mse
                if sync:
                    # first step since the last sync with a non-finite or blown-up MSE
                    hist = mse_buf[rows, sl]
                    bad = ~torch.isfinite(hist) | (hist > blowup * mse0[sl].clamp_min(1e-300))
                    newly = bad.any(0) & (first_bad[sl] < 0) & active[sl]
                    first_bad[sl] = torch.where(newly, since[bad.int().argmax(0)], first_bad[sl])
                if checkpoint:
                    if have_ckpt:
                        plateaued = ((mse - mse_ckpt[sl]).abs() < stop.tol) & active[sl]
                        stop_step[sl][plateaued.cpu().numpy()] = t
                        active[sl] &= ~plateaued
                    mse_ckpt[sl] = mse
                if auth_stop:  # settled by a check before t
                    done = settled[sl] & active[sl]
                    stop_step[sl][done.cpu().numpy()] = t
                    active[sl] &= ~done
                if auth_check:
                    settled[sl] |= (mse - mse_ckpt[sl]).abs() < stop.tol
                    mse_ckpt[sl] = mse
                if sync:
                    diverged = (first_bad[sl] >= 0) & active[sl]
                    if bool(diverged.any()):
                        stop_step[sl][diverged.cpu().numpy()] = t
                        active[sl] &= ~diverged
                if recording:
                    fb = (
                        self.b[sl]
                        if all_fa
                        else beta
                        if all_bp
                        else torch.where(is_fa[sl, None], self.b[sl], beta)
                    )
                    vals = self._metrics(
                        metrics,
                        fl,
                        sl,
                        cache,
                        e,
                        mse,
                        fb,
                        lam_now[sl],
                        wd_t,
                        (lr_t[sl] * active[sl], c_p),
                    )
                    for m in metrics:
                        row[m][sl] = vals[m]
                if last:
                    continue
                # ---- the update, both layers from the same e(t); frozen members get lr 0
                if sync:
                    update_rates()  # `active` may have changed
                lr = rates["lr"][sl]
                fb_lr = (
                    rates["b_lr"][sl]
                    if all_fa
                    else beta * lr
                    if all_bp
                    else torch.where(is_fa[sl, None], rates["b_lr"][sl], beta * lr)
                )
                keep = None if wd_t is None else rates["keep"][sl]
                lam = rates["lam"][sl]
                grad_beta = fl.step(
                    sl, cache, e * c_p, fb_lr, rates["lr_eff"][sl], keep, (beta, lr, lam)
                )
                if grad_beta is not None:  # else the path updated beta itself, the same way
                    # beta <- beta - lr (grad + lam beta); not (1 - lr lam) beta - lr grad,
                    # whose rounded factor would bias every step the same way in float32
                    beta.addcmul_(lr, grad_beta.addcmul_(lam, beta), value=-1.0)
                del cache
            if sync:
                last_sync = t
            have_ckpt |= checkpoint
            if recording:
                rec_steps.append(t)
                for m in metrics:
                    rec[m].append(row[m])
            if last:
                break
            if sync and not bool(active.any()):
                # every member stopped at t: the updates just applied were all zero
                if not recording:
                    rec_steps.append(t)
                    for m, v in self._record_all(metrics, fl, chunks, y, lam_now, wd_t).items():
                        rec[m].append(v)
                break
            t += 1
            self.t += 1

        stop_step[stop_step < 0] = t
        # the last record holds the state each member stopped in (frozen since)
        final = {m: rec[m][-1].detach().cpu().double().numpy() for m in metrics}
        first_bad_np = first_bad.cpu().numpy()
        status, messages = [], []
        mse0_np = mse0.cpu().double().numpy()
        for k in range(K):
            if first_bad_np[k] >= 0:
                status.append("diverged")
                msg = (
                    f"member {k} (seed {self.seeds[k]}) diverged at step {first_bad_np[k]}: "
                    f"MSE became {final['mse'][k] if 'mse' in final else float('nan'):.3g} "
                    f"from {mse0_np[k]:.3g} at step 0; likely cause: step size lr={lr_np[k]:g} "
                    f"is too large for this member's kernel (try a smaller lr)"
                )
                messages.append(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
            else:
                status.append("done")
                messages.append("")
        return History(
            steps=np.asarray(rec_steps, dtype=np.int64),
            metrics={
                m: torch.stack(v).detach().cpu().double().numpy() if v else np.empty((0, K))
                for m, v in rec.items()
            },
            final=final,
            status=status,
            stop_step=stop_step,
            diverged_at=first_bad_np,
            messages=messages,
            path=fl.name,
            kernels=fl.kernel_kind,
            kernels_why="" if fl.native is not None else fl.kernels_why,
            seconds=time.perf_counter() - t0,
        )

    def _record_all(self, names, fl, chunks, y, lam_now, wd_t):
        """Metrics of the current state of every member (a forward pass, no update)."""
        out = {m: torch.empty(self.K, dtype=self.dtype, device=self.device) for m in names}
        for sl in chunks:
            u, cache = fl.outputs(sl, self.beta[sl])
            e = u - y[sl]
            vals = self._metrics(
                names,
                fl,
                sl,
                cache,
                e,
                (e * e).mean(1),
                self.b[sl],
                lam_now[sl],
                wd_t,
                (torch.zeros_like(lam_now[sl]), 0.0),  # every member stopped: no step
            )
            for m in names:
                out[m][sl] = vals[m]
        return out

    def _metrics(self, names, fl, sl, cache, e, mse, fb, lam_now, wd_t, step=None):
        """The recorded metrics, (k,) each, for members ``sl``; changes no parameter.

        ``step`` = (lr (k,), c / sqrt p): the step about to be taken (the *_step_sq)."""
        out: dict[str, torch.Tensor] = {}
        if fl.owns_beta:
            fl.write_beta(sl, self.beta[sl])
        beta, b, beta0 = self.beta[sl], self.b[sl], self.beta0[sl]

        def cos(a, c):
            return (a * c).sum(-1) / (a.norm(dim=-1) * c.norm(dim=-1))

        for m in names:
            if m == "mse":
                out[m] = mse
            elif m == "penalty":
                pen = 0.5 * lam_now * beta.square().sum(-1)
                if wd_t is not None:
                    pen = pen + 0.5 * wd_t[sl] * fl.sq_norm(sl)
                out[m] = pen
            elif m == "alignment":
                out[m] = cos(beta, b)
            elif m == "delta_alignment":
                out[m] = cos(beta - beta0, b)
            elif m == "beta_change":
                out[m] = (beta - beta0).norm(dim=-1) / beta0.norm(dim=-1)
            elif m == "w_change":
                W0 = self.W0[sl]
                out[m] = (fl.change_sq_norm(sl) / W0.square().sum((1, 2))).sqrt()
            elif m == "update_alignment":
                # row r of the applied update is fb_r m_r X, of the gradient beta_r m_r X,
                # with m = psi'(Z) * e; q_r = |m_r X|^2
                q = fl.update_row_sq_norms(sl, cache, e)
                out[m] = (fb * beta * q).sum(-1) / torch.sqrt(
                    (fb * fb * q).sum(-1) * (beta * beta * q).sum(-1)
                )
            elif m == "b_beta":
                out[m] = (b * beta).sum(-1)
            elif m == "w_sq_norm":
                out[m] = fl.sq_norm(sl)
            elif m == "beta_sq_norm":
                out[m] = beta.square().sum(-1)
            elif m == "w_step_sq":
                lr, c_p = step
                q = fl.update_row_sq_norms(sl, cache, e)
                out[m] = (lr * c_p).square() * (fb * fb * q).sum(-1)
            elif m == "beta_step_sq":
                lr, c_p = step
                if "H" in cache:
                    H = cache["H"]
                elif "Z" in cache:
                    H = self.activation(cache["Z"])
                else:  # linear_fa keeps no Z: form it (slow, exact)
                    X = fl.X if fl.shared else fl.X[sl]
                    H = self.activation(fl.materialise()[sl] @ X.transpose(-1, -2))
                grad = torch.einsum("kpn,kn->kp", H, e) * c_p
                out[m] = (lr[:, None] * (grad + lam_now[:, None] * beta)).square().sum(-1)
        return out

    # ------------------------------------------------------------------ paths
    def _make_path(
        self,
        name: str,
        n: int,
        all_fa: bool,
        fuse: bool = False,
        native: bool | str = False,
        keep_weights: bool = True,
    ):
        """The first-layer representation for this fit, starting from the current W."""
        choice("path", name, ("auto", *PATHS))
        linear = (
            self.activation.name == "linear"
            and self.activation.fn(torch.tensor([2.0])).item() == 2.0
        )
        if name == "auto":
            name = "linear_fa" if linear and all_fa else "rowspace" if n < self.d else "explicit"
        check(
            name != "linear_fa" or (linear and all_fa),
            f"path 'linear_fa' needs the linear activation and rule 'fa' for every member, "
            f"got activation {self.activation.name!r}",
        )
        W = self.W
        if name == "explicit":
            return ExplicitPath(W.clone() if W is self.W0 else W, self.W0, self.activation, fuse)
        if name == "rowspace":
            return RowSpacePath(W, self.W0, self.activation, fuse, native, keep_weights)
        return LinearFAPath(W, self.W0, self.activation, self.b)

    def _chunks(self, chunk_members, fl, n) -> list[slice]:
        """Member slices whose working set stays in cache (CPU) or the whole ensemble (GPU)."""
        K = self.K
        if chunk_members is None:
            if self.device.type != "cpu" or fl.native is not None or fl.name == "linear_fa":
                # native kernels stream rows and a linear-FA step touches O(n^2) numbers:
                # nothing to keep in cache, so one chunk (fewest calls)
                chunk_members = K
            else:
                cols = self.d + 2 * n if fl.name == "explicit" else 4 * n
                per_member = self.p * cols * self.dtype.itemsize
                budget = _CHUNK_BYTES_FUSED if fl.kernels.fused else _CHUNK_BYTES
                chunk_members = max(1, int(budget // per_member))
        check(
            isinstance(chunk_members, int) and chunk_members >= 1,
            f"chunk_members must be a positive integer, got {chunk_members!r}",
        )
        return [slice(k, min(k + chunk_members, K)) for k in range(0, K, chunk_members)]
