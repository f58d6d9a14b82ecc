"""A measured loss curve set beside its linearised prediction (see :mod:`.dynamics`).

:func:`feedback_alignment.reproduce.figures.plot_comparison` draws a :class:`Comparison`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import check
from .dynamics import LossPrediction


@dataclass
class Comparison:
    """A measured loss curve beside its prediction at the measured steps (numpy float64).

    ``log10_ratio`` = log10(measured) - log10(predicted) per step (and member);
    ``max_abs_log10`` / ``mean_abs_log10`` summarise it per member; ``measured_rate`` and
    ``predicted_rate`` are least-squares slopes of -ln(mse) per step over the same steps.
    """

    steps: np.ndarray
    measured: np.ndarray
    predicted: np.ndarray
    log10_ratio: np.ndarray
    max_abs_log10: np.ndarray | float
    mean_abs_log10: np.ndarray | float
    measured_rate: np.ndarray | float
    predicted_rate: np.ndarray | float


def _fit_rate(steps: np.ndarray, mse: np.ndarray) -> np.ndarray:
    """-slope of ln(mse) against step, per column, over finite positive entries."""
    out = np.full(mse.shape[1:], np.nan)
    for idx in np.ndindex(*mse.shape[1:]):
        col = mse[(slice(None), *idx)]
        ok = np.isfinite(col) & (col > 0)
        if ok.sum() >= 2:
            out[idx] = -np.polyfit(steps[ok].astype(float), np.log(col[ok]), 1)[0]
    return out


def compare_with_prediction(steps, measured_mse, predicted) -> Comparison:
    """Set a run's measured MSE beside the prediction at the measured steps.

    ``steps`` (R,) recorded step numbers, ``measured_mse`` (R,) or (R, K) (e.g. an engine
    history's ``metrics["mse"]``), ``predicted`` a :class:`LossPrediction` or an array of
    the predicted MSE at every step 0..T (T >= max(steps)).
    """
    steps = np.asarray(steps)
    check(
        steps.ndim == 1 and np.issubdtype(steps.dtype, np.integer) and (steps >= 0).all(),
        f"steps must be a 1-D array of non-negative ints, got shape {steps.shape}, "
        f"dtype {steps.dtype}",
    )
    meas = np.asarray(measured_mse, dtype=np.float64)
    check(
        meas.ndim in (1, 2) and meas.shape[0] == steps.shape[0],
        f"measured_mse shape {meas.shape} must be ({steps.shape[0]},) or ({steps.shape[0]}, K)",
    )
    curve = predicted.mse if isinstance(predicted, LossPrediction) else np.asarray(predicted)
    curve = np.asarray(curve, dtype=np.float64)
    check(
        curve.shape[0] > (steps.max() if steps.size else -1),
        f"prediction covers steps 0..{curve.shape[0] - 1} but measured steps reach {steps.max()}",
    )
    pred = curve[steps]
    if pred.ndim == 1 and meas.ndim == 2:  # one curve shared by every member
        pred = np.repeat(pred[:, None], meas.shape[1], axis=1)
    check(
        pred.shape == meas.shape,
        f"predicted shape {pred.shape} at the measured steps does not match measured {meas.shape}",
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.log10(meas) - np.log10(pred)
    ab = np.abs(ratio)
    return Comparison(
        steps=steps,
        measured=meas,
        predicted=pred,
        log10_ratio=ratio,
        max_abs_log10=_np_out(ab.max(0)),
        mean_abs_log10=_np_out(ab.mean(0)),
        measured_rate=_np_out(_fit_rate(steps, meas)),
        predicted_rate=_np_out(_fit_rate(steps, pred)),
    )


def _np_out(a: np.ndarray):
    return float(a) if np.ndim(a) == 0 else a
