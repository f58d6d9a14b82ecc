"""A batched engine for K independent two-layer networks trained in lockstep.

Read :mod:`.reference` first: it is the paper's step for one network, written plainly, and
every path and kernel here is tested against it (float64, 1e-12). This module runs that
step for K members at once, each with its own seed, data (or shared data), rule, step size
and weight decay. Tensors carry a leading ensemble axis K; one full-batch step is a
handful of batched matrix products with the update equations written out (no autograd,
no per-member loop):

    Z    = W X^T                        pre-activations, (K, p, n)
    u    = beta^T psi(Z) / sqrt p       outputs, (K, n);   e = u - y
    beta <- beta - lr (c/sqrt p) psi(Z) e - lr lam(t) beta
    W    <- (1 - lr wd) W - lr (c/sqrt p) [fb * psi'(Z) * e] X

with c the loss factor (2/n for the authors' mean squared error) and fb the rule's
feedback vector (:mod:`.rules`: b for feedback alignment, beta for backprop). Both layers
are updated from the same e(t).

:meth:`TwoLayerEnsemble.fit` is the loop; around it sit the argument checks
(:mod:`.options`), the stopping and divergence monitor (:mod:`.monitor`), the recorder
(:mod:`.recorder`) and the kernel choice (:mod:`.kernels`). The first layer is held by a
*path* object (:mod:`.paths`): :class:`~.paths.ExplicitPath` stores W itself; faster exact
paths (the row-space form W = s W0 + A X) plug in behind the same methods.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..activations import Activation, get_activation
from ..backend import resolve_device, resolve_dtype
from ..bounds import check_memory, is_int, within
from ..errors import ConfigError, check, need, refusal
from . import fitstate
from .dropout import Dropout
from .kernels import choose
from .loss import loss_factor
from .monitor import PLATEAU_CHECKS, Monitor, Plateau, paper_min_steps
from .options import FitOptions
from .paths import ExplicitPath, LinearFAPath, RowSpacePath
from .recorder import CONSERVATION_METRICS, METRICS, History, Recorder
from .rules import RULES, MemberFeedback
from .schedules import Constant
from .schema import FIELDS

# working-set budget per chunk on the CPU: past it, large products slow down (measured)
_CHUNK_BYTES = 24e6
# with compiled kernels (fewer, larger passes) bigger chunks pay (measured)
_CHUNK_BYTES_COMPILED = 64e6

__all__ = [
    "CONSERVATION_METRICS",
    "METRICS",
    "PLATEAU_CHECKS",
    "RULES",
    "History",
    "Plateau",
    "TwoLayerEnsemble",
    "paper_min_steps",
]


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
        activation: str | Activation = FIELDS["activation"].default,
        init_scale: float | dict = FIELDS["init_scale"].default,
        dtype: str | torch.dtype = FIELDS["dtype"].default,
        device: str | torch.device | None = FIELDS["device"].default,
    ):
        for name, v in (("d", d), ("p", p)):
            need(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                name,
                v,
                "an integer >= 1",
            )
        if isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
            seeds = [seeds]
        elif isinstance(seeds, str | bytes | dict) or not isinstance(seeds, Iterable):
            raise refusal("seeds", seeds, "a non-negative integer or a sequence of them")
        seeds = list(seeds)
        check(len(seeds) >= 1, "seeds must hold at least one seed, got an empty sequence")
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
            ok = isinstance(v, int | float) and math.isfinite(v) and v > 0
            need(ok, f"init_scale[{k!r}]", v, "a finite number > 0")
        # W0, W, beta, b in float64 while drawn, then in the dtype: refuse before allocating
        check_memory(
            2 * 8 * len(seeds) * p * (d + 3),
            f"an ensemble of {len(seeds)} member(s) at d = {d}, p = {p}",
            "smaller d or p, or fewer seeds",
        )
        for name, v in (("d", d), ("p", p)):  # where memory cannot be told, the bound holds
            within(name, v, "size")
        for s in seeds:  # after the memory check: a list of 1e9 seeds is refused at once
            need(is_int(s) and s >= 0, "seed", s, "a non-negative integer")
            within("seed", s, "seed")
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
        self.t = 0  # updates applied so far (schedules and dropout masks read it)

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
    def fit(self, X, y, *, checkpoint=None, **options) -> History:
        """Train every member by full-batch gradient descent; return a :class:`History`.

        The options and their defaults are declared once, as the fields of
        :class:`.options.FitOptions` (this signature is built from them). ``rule``: a name
        of :mod:`.rules`, or one per member; ``lr``, ``lam`` (beta's decay, times
        ``lam_schedule``'s factor) and ``w_decay`` (W's): a number or one per member. Give
        ``steps`` or ``stop`` (a :class:`Plateau`). ``metrics`` (default mse and alignment)
        are recorded at multiples of ``record_every``, at ``record_steps`` (updates applied
        in this call; 0 is before the first) and at the last step. A member whose MSE turns
        non-finite or grows ``blowup``-fold (judged at least every ``divergence_every``
        steps) is marked diverged and frozen; the others go on. ``path`` picks the first
        layer's exact form (:mod:`.paths`), ``chunk_members`` the members a pass (never
        changing the numbers), ``kernels`` what runs the element-wise work
        (:mod:`.kernels`); ``History.path``, ``kernels`` and ``kernels_why`` say what ran.
        With ``keep_weights=False`` the row-space path keeps only Z = W X^T and beta, and
        what needs W (``w_change``, ``penalty`` with ``w_decay``, ``ens.W``, a further fit)
        is refused with a :class:`ConfigError`. ``dropout`` (a number or one per member, 0
        <= q < 1) applies inverted dropout to the hidden activations at every step, as
        ``torch.nn.Dropout`` would (:mod:`.dropout`); it runs on the explicit and row-space
        paths, with the torch ops or the native kernels (not the compiled ones).
        ``checkpoint`` (an object with ``load``, ``due`` and ``save``, :mod:`.fitstate`):
        resume from the state it holds, and save the fit's state whenever it is due; the
        numbers equal an uninterrupted fit's. More in docs/twolayer.md.
        """
        o = FitOptions.given(self, X, y, options)
        key = saved = None
        asked_kernels = o.kernels
        if checkpoint is not None:
            key = fitstate.fingerprint(self, o)
            saved = fitstate.loaded(checkpoint, key)
            if saved is not None and o.kernels == "auto":  # the kernels that ran, same sums
                o = o.with_kernels(saved["kernels"])
        K, y, to = self.K, o.y, {"dtype": self.dtype, "device": self.device}
        c_p = loss_factor(o.loss, o.n) / math.sqrt(self.p)  # e -> the error the updates use
        lr_t, lam_t = torch.as_tensor(o.lr, **to), torch.as_tensor(o.lam, **to)
        wd_t = torch.as_tensor(o.w_decay, **to) if o.w_decay.any() else None
        feedback = MemberFeedback(o.rule, self.b)
        try:
            fl, kernels_why = self._make_path(o, feedback)
        except ConfigError as exc:
            if saved is None or asked_kernels != "auto":
                raise
            # the saved state's kernels cannot run here (another machine): its numbers
            # cannot be continued exactly, so the fit starts afresh, saying why
            warnings.warn(
                f"{fitstate.where(checkpoint)} was saved on the {saved['kernels']} kernels, "
                f"which cannot run here ({exc}); this fit starts afresh",
                RuntimeWarning,
                stacklevel=2,
            )
            saved, o = None, o.with_kernels("auto")
            fl, kernels_why = self._make_path(o, feedback)
        chunks = self._chunks(o.chunk_members, fl, o.n)
        mon = Monitor(K, o.stop, o.max_steps, o.divergence_every, o.blowup, self.dtype, self.device)
        rec = Recorder(self, fl, o.metrics, o.record_every, o.record_steps, wd_t, c_p)
        constant_schedule, lam_now = isinstance(o.lam_schedule, Constant), lam_t
        t0, t = time.perf_counter(), 0
        if saved is not None:
            t = fitstate.restore(saved, self, fl, mon, rec)
            kernels_why = saved["kernels_why"]
        t_resumed = t
        rates = _rates(lr_t, mon.active, lam_now, wd_t)

        def advance(t: int, steps: int) -> int:
            """Past ``steps`` applied steps: the step count, and a checkpoint if due."""
            t += steps
            self.t += steps
            if checkpoint is not None and checkpoint.due():
                state = fitstate.capture(key, self, fl, mon, rec, t, fl.kernel_kind, kernels_why)
                checkpoint.save(state)
            return t

        # a run of steps with nothing to record or check in between, in one native call
        # a chunk, where fb is b or beta (formed in the run) and lam does not change
        runs = fl.takes_runs and feedback.b_or_beta and constant_schedule
        run_most = max(1, _RUN_ELEMENTS // (K * o.n))  # every step's e is returned
        while True:
            count = runs and _quiet_steps(mon, rec, t, run_most)
            if count:
                if fl.dropout is not None:
                    fl.dropout.t = self.t  # the run's first step's masks
                for sl in chunks:
                    beta = self.beta[sl]
                    lr_eff, lr, lam, keep = (None if r is None else r[sl] for r in rates)
                    fb_lr = feedback(sl, beta) * lr
                    fb_beta = None if feedback.beta_members is None else feedback.beta_members[sl]
                    e = fl.run(sl, count, beta, y[sl], c_p, fb_lr, lr_eff, keep, lam, fb_beta)
                    mon.record_run(sl, t, e)
                t = advance(t, count)
                continue
            if not constant_schedule:
                lam_now = lam_t * torch.as_tensor(o.lam_schedule(self.t), **to)
                rates = _rates(lr_t, mon.active, lam_now, wd_t)
            mon.begin(t)
            if fl.dropout is not None:
                fl.dropout.t = self.t  # this step's masks
            recording = rec.begin(t, mon.last)
            for sl in chunks:
                beta = self.beta[sl]
                u, cache = fl.outputs(sl, beta)
                e = u - y[sl]
                mse = mon.mse(sl, e)
                # stops members that plateaued or diverged
                mon.observe(sl, mse, lambda sl=sl: self._alignment(sl, fl))
                fb = feedback(sl, beta)
                if recording:
                    rec.chunk(sl, cache, e, mse, fb, lam_now[sl], lr_t[sl] * mon.active[sl])
                if mon.last:
                    continue
                # ---- the update, both layers from the same e(t); frozen members get lr 0
                if mon.sync:
                    rates = _rates(lr_t, mon.active, lam_now, wd_t)  # `active` may change
                lr_eff, lr, lam, keep = (None if r is None else r[sl] for r in rates)
                grad_beta = fl.step(sl, cache, e * c_p, fb * lr, lr_eff, keep, (beta, lr, lam))
                if grad_beta is not None:  # else the path updated beta itself, the same way
                    # beta <- beta - lr (grad + lam beta); not (1 - lr lam) beta - lr grad,
                    # whose rounded factor would bias every step the same way in float32
                    beta.addcmul_(lr, grad_beta.addcmul_(lam, beta), value=-1.0)
                del cache
            all_stopped = mon.end()
            if recording:
                rec.commit(t)
            if mon.last:
                break
            if all_stopped:  # every member stopped at t: the updates just applied were 0
                if not recording:
                    rec.record_all(t, chunks, y, feedback, lam_now)
                break
            t = advance(t, 1)
        final = rec.final()
        status, messages = mon.outcome(self.seeds, o.lr, final.get("mse"))
        return rec.history(
            final,
            status=status,
            stop_step=mon.stop_step,
            diverged_at=mon.first_bad.cpu().numpy(),
            messages=messages,
            path=fl.name,
            kernels=fl.kernel_kind,
            kernels_why=kernels_why,
            seconds=time.perf_counter() - t0,
            extra={"resumed_at": t_resumed} if t_resumed else {},
        )

    fit.__signature__ = FitOptions.signature(fit)

    def _alignment(self, sl: slice, fl) -> torch.Tensor:
        """cos(beta, b) of members ``sl`` now (for a plateau rule that watches it)."""
        if fl.owns_beta:
            fl.write_beta(sl, self.beta[sl])
        beta, b = self.beta[sl], self.b[sl]
        return (beta * b).sum(-1) / (beta.norm(dim=-1) * b.norm(dim=-1))

    # ------------------------------------------------------------------ paths
    def _make_path(self, o: FitOptions, feedback: MemberFeedback):
        """The first-layer representation for this fit, starting from the current W and
        bound to the data; with why the native kernels do not run ("" where they do)."""
        n = o.n
        linear = self.activation.identity  # psi(z) = z
        name, dropout = o.path, bool(o.dropout.any())
        if name == "auto":  # the cheapest exact form that applies
            name = "rowspace" if n < self.d else "explicit"
            if linear and feedback.linear_fa and not dropout:
                name = "linear_fa"
        check(
            name != "linear_fa" or (linear and feedback.linear_fa),
            f"path 'linear_fa' needs the linear activation and rule 'fa' for every member, "
            f"got activation {self.activation.name!r} and rules {sorted(set(o.rule))}",
        )
        work = self.K * self.p * o.work
        kind, why = choose(
            o.kernels, name, self.activation, o.X, self.K, self.p, o.keep_weights, work, dropout
        )
        W, act = self.W, self.activation
        if name == "explicit":
            fl = ExplicitPath(W.clone() if W is self.W0 else W, self.W0, act, kind)
        elif name == "rowspace":
            fl = RowSpacePath(W, self.W0, act, kind, o.keep_weights)
        else:
            fl = LinearFAPath(W, self.W0, act, self.b)
        if dropout:
            fl.dropout = Dropout(self.activation, o.dropout, self.seeds)
        fl.bind(o.X)
        if fl.owns_beta:
            fl.bind_beta(self.beta)  # the path holds beta in its own coordinates
        self._path = fl
        return fl, why

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
                budget = _CHUNK_BYTES_COMPILED if fl.kernels.compiled else _CHUNK_BYTES
                chunk_members = max(1, int(budget // per_member))
        return [slice(k, min(k + chunk_members, K)) for k in range(0, K, chunk_members)]


_RUN_ELEMENTS = 1 << 20  # most numbers of e a run of quiet steps returns (4-8 MB)


def _quiet_steps(mon: Monitor, rec: Recorder, t: int, most: int) -> int:
    """How many steps from t on have nothing to record and no event of the monitor: the
    engine takes them as one run (:meth:`.paths.RowSpacePath.run`)."""
    count = mon.quiet(t, most)
    for i in range(count):
        if rec.records(t + i, False):
            return i
    return count


def _rates(lr_t, active, lam_now, wd_t):
    """Per-member step factors: lr (0 for a stopped member), lr and lam as columns, and
    W's decay factor 1 - lr wd (None without decay). They change only with ``active`` or
    lam(t), so the loop recomputes them only then."""
    lr_eff = lr_t * active
    keep = None if wd_t is None else 1 - lr_eff * wd_t
    return lr_eff, lr_eff[:, None], lam_now[:, None], keep
