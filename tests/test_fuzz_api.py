"""Fuzz suite, part 2: the public API and the ``fa demo`` command line.

Properties (Hypothesis; the example counts are the ``ci`` profile's, tests/_fuzz.py):

1. ``TwoLayerEnsemble(d, p, seeds=...)`` and ``fit(...)`` with generated sizes, seeds,
   steps, stop rules, records and metrics either train (finite-time: every accepted value
   is small here or refused) within the bounds, or refuse with one ConfigError line.
2. The theory (``h_inf``, ``g_inf_bp``, ``h_monte_carlo``, ``lambda_min``,
   ``predicted_rate``, ``predict_loss_curve``) and the data (``linear_teacher``,
   ``random_teacher``) with generated arguments: a result, or one ConfigError line.
3. ``fa demo`` with generated ``--steps``, ``--reps`` and ``--seed`` texts and an existing
   ``summary.json`` (no ``--force``): one line, exit 2, every file unchanged; the line names
   the first option out of bounds, or the existing output when all are in bounds.

Every property runs in a fresh directory that must be byte-identical afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from _badinput import fa
from _fuzz import floats, ints, run_or_refuse, untouched_dir, values
from feedback_alignment import TwoLayerEnsemble, theory
from feedback_alignment.bounds import BOUNDS, within
from feedback_alignment.errors import ConfigError
from feedback_alignment.twolayer.data import linear_teacher, random_teacher
from feedback_alignment.twolayer.monitor import Plateau

pytestmark = pytest.mark.usefixtures("one_thread")

# a size is small enough to run here, or past a bound (so refused before any work)
BIG = [10**9 + 1, 10**12, 2**64, 10**30]
small_or_huge = st.one_of(st.integers(-2, 6), st.sampled_from(BIG), st.sampled_from([-(10**9)]))
steps_ = st.one_of(st.integers(-1, 30), st.sampled_from(BIG), st.none(), floats)
seeds_ = st.one_of(
    st.integers(0, 2**64 + 2), st.lists(st.integers(-1, 2**70), min_size=0, max_size=3), values
)


@st.composite
def plateaus(draw):
    kwargs = {
        "min_steps": draw(small_or_huge),
        "check_every": draw(small_or_huge),
        "tol": draw(st.one_of(st.sampled_from([0.0, 1e-3, 1e9]), floats)),
        "max_steps": draw(st.one_of(st.none(), small_or_huge)),
    }
    return Plateau(**kwargs)


@given(
    d=small_or_huge,
    p=small_or_huge,
    seeds=seeds_,
    steps=steps_,
    use_plateau=st.booleans(),
    plateau_args=st.data(),
    record_every=st.one_of(st.integers(0, 5), ints, st.none()),
    record_steps=st.one_of(st.none(), st.lists(st.integers(-1, 40), max_size=4), values),
    metrics=st.one_of(
        st.lists(st.sampled_from(["mse", "alignment", "delta_alignment", "w_change"]), max_size=3),
        values,
    ),
)
def test_fit_trains_within_bounds_or_one_line(
    d, p, seeds, steps, use_plateau, plateau_args, record_every, record_steps, metrics
):
    with untouched_dir():
        ens = run_or_refuse(lambda: TwoLayerEnsemble(d, p, seeds=seeds))
        if ens is None:
            return
        assert 1 <= ens.d <= 6 and 1 <= ens.p <= 6  # a huge size never passes
        stop = None
        if use_plateau:
            try:
                stop = plateau_args.draw(plateaus())
            except ConfigError as exc:  # a Plateau refuses its own bad values
                assert "\n" not in str(exc)
                return
            # an accepted rule could still ask for up to 1e9 steps: cap it small to run here
            if stop.max_steps is None or stop.max_steps > 40:
                assert stop.tol > 0 or stop.max_steps is not None
                return
        X = np.random.default_rng(0).standard_normal((3, d))
        y = np.random.default_rng(1).standard_normal(3)
        h = run_or_refuse(
            lambda: ens.fit(
                X,
                y,
                steps=None if use_plateau else steps,
                stop=stop,
                record_every=record_every,
                record_steps=record_steps,
                metrics=metrics,
            )
        )
        if h is not None:
            assert len(h.steps) <= BOUNDS["records"].hi
            assert h.stop_step.max() <= BOUNDS["steps"].hi
            if "delta_alignment" in h.final and (np.asarray(h.stop_step) > 0).all():
                done = np.asarray(h.status) == "done"
                assert np.isfinite(h.final["delta_alignment"][done]).all()


X3 = np.random.default_rng(2).standard_normal((3, 2))


# anything but an integer that is in bounds yet large (that would run, slowly, as asked)
args_ = st.one_of(
    small_or_huge,
    floats,
    st.booleans(),
    st.text(max_size=5),
    st.none(),
    st.lists(small_or_huge, max_size=2),
)


@given(
    which=st.sampled_from(["h_inf", "g_inf_bp", "mc", "lambda_min", "rate", "curve", "data"]),
    a=args_,
    b=args_,
    arr=st.one_of(
        st.lists(floats, max_size=4),
        st.just([]),
        st.just([[]]),
        st.lists(st.lists(floats, min_size=2, max_size=2), min_size=2, max_size=2),
    ),
)
def test_theory_and_data_give_a_result_or_one_line(which, a, b, arr):
    small = lambda v: isinstance(v, int) and not isinstance(v, bool) and -2 <= v <= 6  # noqa: E731
    calls = {
        # order and levels small enough to run here, else they must be refused
        "h_inf": lambda: theory.h_inf(X3, "tanh", order=a, levels=b),
        "g_inf_bp": lambda: theory.g_inf_bp(X3, "tanh", order=a, levels=b),
        "mc": lambda: theory.h_monte_carlo(X3, "relu", samples=a, chunk=b),
        "lambda_min": lambda: theory.lambda_min(arr),
        "rate": lambda: theory.predicted_rate(arr if arr else a, b, "sse"),
        "curve": lambda: theory.predict_loss_curve(np.eye(3), np.ones(3), np.zeros(3), 0.1, a),
        "data": lambda: (linear_teacher(a, b, seed=0), random_teacher(b, a, 2, seed=a)),
    }
    big = {
        "h_inf": not (small(a) and small(b)),
        "g_inf_bp": not (small(a) and small(b)),
        "mc": not (small(a) and small(b)),
        "curve": not small(a),
        "data": not (small(a) and small(b)),
    }
    if big.get(which):  # a value that would run long here must be refused, not run
        with untouched_dir():
            try:
                calls[which]()
            except ConfigError as exc:
                assert "\n" not in str(exc)
            else:  # accepted: then every size was an integer within its bound
                assert all(isinstance(v, int) and abs(v) <= 10**8 for v in (a, b)), (a, b)
        return
    with untouched_dir():
        out = run_or_refuse(calls[which])
        if which == "rate" and out is not None:  # >= 0 exactly where 0 <= lr lam_min <= 2
            lm = np.asarray(arr if arr else a, dtype=float)  # (c = 1: sse)
            lr_lm = np.asarray(b, dtype=float) * lm
            rate = np.broadcast_to(np.asarray(out), lr_lm.shape)
            assert (rate[(lm >= 0) & (lr_lm <= 2)] >= -1e-12).all(), (out, lm, b)
            assert (rate[(lm < 0) | (lr_lm > 2)] <= 1e-12).all(), (out, lm, b)


@given(
    steps=st.one_of(st.sampled_from(["3000", "1e6", "1e12", "0", "-5", "2.5", "abc", "", "1e400"]),
                    st.integers(-10, 10**13).map(str), st.text(max_size=8)),
    reps=st.one_of(st.sampled_from(["4", "1e8", "1000", "1001", "nan"]), st.text(max_size=6)),
    seed=st.one_of(st.integers(-5, 2**65).map(str), st.sampled_from(["1e23", "0", "inf"])),
)  # fmt: skip
def test_fa_demo_options_refused_in_one_line_before_any_work(capsys, steps, reps, seed):
    with untouched_dir({"o/summary.json": "{}"}):  # exists, and no --force
        argv = ["demo", "--steps", steps, "--reps", reps, "--seed", seed, "--out", "o"]
        rc, lines = fa(capsys, *argv)
        assert rc == 2 and len(lines) == 1, (rc, lines)
        for opt, text, bound in (("--reps", reps, "demo_reps"), ("--steps", steps, "demo_steps")):
            try:
                within(opt, text, bound)
            except ConfigError:  # named by the check, or by argparse for a text like "-:"
                assert f"{opt} = " in lines[0] or f"argument {opt}: " in lines[0], lines
                return
        try:
            within("--seed", seed, "seed")
        except ConfigError:
            assert "--seed = " in lines[0] or "argument --seed: " in lines[0], lines
            return
        assert "summary.json" in lines[0] or "--seed" in lines[0], lines
