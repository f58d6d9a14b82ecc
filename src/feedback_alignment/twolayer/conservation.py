"""The exact conservation law of the discrete two-layer step, and what it says about alignment.

For activations with psi(z) = z psi'(z) (linear, ReLU, leaky ReLU) the first-layer update
of hidden unit r, dw_r = -lr fb_r sum_i g_i psi'(z_ri) x_i (g = c e / sqrt p), satisfies
w_r . dw_r = -lr fb_r sum_i g_i psi(z_ri) = fb_r times the second layer's gradient step.
Both layers move from the same error e(t), so for feedback alignment (fb = b) the quantity

    Q_r = 1/2 |w_r|^2 - b_r beta_r

changes by exactly 1/2 |dw_r|^2 + lr lam(t) b_r beta_r(t) per step, and for backprop
(fb = beta) P_r = 1/2 |w_r|^2 - 1/2 beta_r^2 changes by exactly
1/2 |dw_r|^2 - 1/2 dbeta_r^2 + lr lam(t) beta_r(t)^2. With first-layer decay wd
(k = 1 - lr wd, w_r <- k w_r - s_r with s_r the gradient part):

    FA:  1/2|w_r'|^2 - k b_r beta_r'      = k^2 1/2|w_r|^2 - k (1 - lr lam) b_r beta_r + 1/2|s_r|^2
    BP:  1/2|w_r'|^2 - k 1/2 beta_r'^2    = k^2 1/2|w_r|^2 - k (1 - 2 lr lam) 1/2 beta_r^2
                                             - k 1/2 dbeta_r^2 + 1/2|s_r|^2

Summed over r, the FA law splits the alignment's numerator into four terms:

    b.beta(t) = b.beta(0)                                   initial
              + 1/2 (|W_t|^2 - |W_0|^2)                      W-norm growth
              - sum_{s<t} 1/2 |S_s|^2 / k                    step-size correction
              - sum_{s<t} lr lam(s) b.beta(s)                 weight decay (second layer)
              + sum_{s<t} (1-k)/2 (|W_{s+1}|^2 / k + |W_s|^2)  first-layer decay (0 if wd = 0)

:func:`decompose` trains an ensemble with the engine, recording the law's terms every step
(the engine's ``b_beta``, ``w_sq_norm`` and ``w_step_sq`` metrics; |W|^2 comes from each
path's own state, W is not formed on the row-space paths), and returns the terms.
:func:`law_residuals` checks the per-step law on such a record. See docs/theory.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import check, choice, need
from ..fields import is_int
from .engine import History, TwoLayerEnsemble
from .schedules import get_schedule

__all__ = ["Decomposition", "decompose", "law_residuals", "TERMS"]

TERMS = ("initial", "w_growth", "step_correction", "weight_decay", "first_layer_decay")
LAW_METRICS = ("b_beta", "w_sq_norm", "beta_sq_norm", "w_step_sq", "beta_step_sq")


@dataclass
class Decomposition:
    """The terms of b.beta(t), each (R, K) at ``steps`` (R,), from one engine run.

    ``b_beta`` is the measured numerator, ``alignment`` cos(beta, b) at the same steps;
    ``terms[name]`` for name in :data:`TERMS` add up to ``b_beta`` (``residual`` is the
    difference, rounding only); ``history`` is the engine's record, every step.
    """

    steps: np.ndarray
    b_beta: np.ndarray
    alignment: np.ndarray
    terms: dict[str, np.ndarray]
    residual: np.ndarray
    history: History

    def relative_residual(self) -> np.ndarray:
        """|residual| / |b.beta(t) - b.beta(0)| per step and member (NaN where no change)."""
        change = np.abs(self.b_beta - self.b_beta[:1])
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(change > 0, np.abs(self.residual) / change, np.nan)


def _lam_series(lam: np.ndarray, lam_schedule, t0: int, T: int) -> np.ndarray:
    """lam(s) for s = 0..T-1 (T, K), as the engine computes it from ``ens.t``."""
    schedule = get_schedule(lam_schedule)
    f = np.stack(
        [np.broadcast_to(np.asarray(schedule(t0 + s), float), lam.shape) for s in range(T)]
    )
    return lam[None, :] * f


def law_residuals(history: History, *, rule: str, lr, lam, lam_schedule=None, w_decay=0.0, t0=0):
    """Per-step residual of the conservation law on a run recorded at every step.

    ``history`` from :meth:`TwoLayerEnsemble.fit` with ``record_every=1`` and the
    metrics in :data:`LAW_METRICS` (``beta_sq_norm``, ``beta_step_sq`` needed for bp
    only); ``rule``, ``lr``, ``lam``, ``lam_schedule`` and ``w_decay`` as given to that fit
    (one rule for all members); ``t0`` the ensemble's step count when the fit began (the
    schedule reads it). Returns (residual, scale), both (T, K) for the T steps taken:
    left side minus right side of the law of each step, and the size of the largest term
    in it, so residual / scale is the relative error of the law.
    """
    choice("rule", rule, ("fa", "bp"))
    m, steps = history.metrics, history.steps
    check(
        len(steps) >= 2 and np.array_equal(steps, np.arange(len(steps))),
        "law_residuals needs a record of every step (fit with record_every=1)",
    )
    T, K = len(steps) - 1, m["b_beta"].shape[1]
    lr = np.broadcast_to(np.asarray(lr, float), (K,))
    lam_s = _lam_series(np.broadcast_to(np.asarray(lam, float), (K,)), lam_schedule, t0, T)
    k = 1 - lr * np.broadcast_to(np.asarray(w_decay, float), (K,))
    W2, S2 = m["w_sq_norm"], m["w_step_sq"]
    if rule == "fa":
        bb = m["b_beta"]
        left = 0.5 * W2[1:] - k * bb[1:]
        right = k**2 * 0.5 * W2[:-1] - k * (1 - lr * lam_s) * bb[:-1] + 0.5 * S2[:-1]
        parts = (0.5 * W2[1:], k * bb[1:], 0.5 * S2[:-1])
    else:
        B2, D2 = m["beta_sq_norm"], m["beta_step_sq"]
        left = 0.5 * W2[1:] - k * 0.5 * B2[1:]
        right = (
            k**2 * 0.5 * W2[:-1]
            - k * (1 - 2 * lr * lam_s) * 0.5 * B2[:-1]
            - k * 0.5 * D2[:-1]
            + 0.5 * S2[:-1]
        )
        parts = (0.5 * W2[1:], 0.5 * B2[1:], 0.5 * D2[:-1], 0.5 * S2[:-1])
    scale = np.max(np.abs(np.stack(parts)), axis=0)
    return left - right, scale


def decompose(
    ens: TwoLayerEnsemble,
    X,
    y,
    *,
    steps: int,
    lr,
    lam=0.0,
    lam_schedule=None,
    w_decay=0.0,
    record_every: int = 1,
    **fit_options,
) -> Decomposition:
    """Train ``ens`` by feedback alignment for ``steps`` steps and split b.beta(t).

    The law's terms are recorded at every step (they are sums over steps); the result
    keeps every ``record_every``-th step and the last. ``fit_options`` go to
    :meth:`TwoLayerEnsemble.fit` (``path``, ``kernels``, ``loss``, ...). A member that
    diverges is frozen by the engine; its terms stay exact (its later steps are zero).
    """
    need(is_int(steps) and steps >= 1, "steps", steps, "an integer >= 1")
    need(
        is_int(record_every) and record_every >= 1, "record_every", record_every, "an integer >= 1"
    )
    t0 = ens.t
    # the settings the law's terms below are computed from, given to the fit as they are
    law = {"lr": lr, "lam": lam, "lam_schedule": lam_schedule, "w_decay": w_decay}
    metrics = ("alignment", "b_beta", "w_sq_norm", "w_step_sq")
    h = ens.fit(X, y, rule="fa", steps=steps, record_every=1, metrics=metrics, **law, **fit_options)
    K = ens.K
    m = h.metrics
    # frozen members (diverged, or stopped) take steps of size zero: lr 0 from there
    moving = h.steps[None, :-1] < h.stop_step[:, None]  # (K, T)
    lr_s = np.broadcast_to(np.asarray(lr, float), (K,))[None, :] * moving.T  # (T, K)
    lam_s = _lam_series(np.broadcast_to(np.asarray(lam, float), (K,)), lam_schedule, t0, steps)
    k = 1 - lr_s * np.broadcast_to(np.asarray(w_decay, float), (K,))[None, :]
    bb, W2, S2 = m["b_beta"], m["w_sq_norm"], m["w_step_sq"]

    def cumulative(per_step):  # (T, K) -> (T + 1, K), 0 at step 0
        return np.concatenate([np.zeros((1, K)), np.cumsum(per_step, 0)])

    terms = {
        "initial": np.broadcast_to(bb[:1], bb.shape).copy(),
        "w_growth": 0.5 * (W2 - W2[:1]),
        "step_correction": -cumulative(0.5 * S2[:-1] / k),
        "weight_decay": -cumulative(lr_s * lam_s * bb[:-1]),
        "first_layer_decay": cumulative((1 - k) / 2 * (W2[1:] / k + W2[:-1])),
    }
    residual = bb - sum(terms.values())
    keep = np.unique(np.r_[np.arange(0, steps + 1, record_every), steps])
    return Decomposition(
        steps=h.steps[keep],
        b_beta=bb[keep],
        alignment=m["alignment"][keep],
        terms={name: v[keep] for name, v in terms.items()},
        residual=residual[keep],
        history=h,
    )
