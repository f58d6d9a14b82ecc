"""The fields of a two-layer run, declared once: default, accepted values and meaning.

A run of the paper's two-layer network is described by the fields of :data:`FIELDS`: its
data (``task``, ``n``, ``d``), network (``p``, ``activation``, ``init_scale``), rule and
training (``rule``, ``lr``, ``lam``, ...), stopping rule and what it records. The sweep
spec (``fa sweep``, :mod:`feedback_alignment.experiments.spec`) checks its two-layer fields
here, and docs/sweeps.md's table of fields is generated from here (:func:`markdown_table`;
a test keeps the two equal)::

    FIELDS["lr"].default                  # "paper"
    FIELDS["lr"].validate(-0.1, "lr")     # ConfigError: lr = -0.1 is not accepted; accepted: ...

Names that live elsewhere are read from there when a value is checked, never copied: the
rules from :mod:`.rules`, the metrics from :mod:`.recorder`, the activations from
:mod:`feedback_alignment.activations` (so a rule registered at run time is accepted; none
of those modules imports this one).
"""

from __future__ import annotations

import math

import numpy as np

from ..activations import ACTIVATIONS, PAPER_LR_OTHER, get_activation
from ..bounds import BOUNDS, MAX_SIZE, MAX_STEPS, fmt_int
from ..fields import Check, Field, by_name, integer, is_int, is_num, number, one_of
from ..fields import markdown_table as _table
from . import schedules
from .data import TASKS
from .dropout import MAX_DROPOUT
from .loss import LOSSES
from .monitor import PAPER_CHECK_EVERY, PAPER_TOL
from .recorder import METRICS
from .rules import RULES

# MAX_STEPS, MAX_SIZE and the other bounds: bounds.py
MAX_RECORDS = BOUNDS["records"].hi


# --------------------------------------------------------------------------- names
def _rules() -> tuple:
    return tuple(RULES)  # read when checked: a rule registered at run time is accepted


def _metrics() -> tuple:
    return tuple(METRICS)


def _activations() -> tuple:
    return tuple(ACTIVATIONS)


# --------------------------------------------------------------------------- special values
# lr = "paper" / "paper_dropout": the activation's declared step size (Activation.lr /
# dropout_lr), the authors' with weight decay / in their dropout runs
PAPER_STEPS = {"paper": False, "paper_dropout": True}  # name -> dropout


def step_size(lr, activation):
    """``lr`` with a paper step's name (:data:`PAPER_STEPS`) replaced by ``activation``'s
    declared step size; any other value unchanged."""
    if isinstance(lr, str) and lr in PAPER_STEPS:
        return get_activation(activation).paper_lr(dropout=PAPER_STEPS[lr])
    return lr


def log_count(v) -> int | None:
    """N of a ``record_steps = "log:N"`` (N log-spaced steps), None for any other value."""
    if not (isinstance(v, str) and v.startswith("log:") and v[4:].isdigit()):
        return None
    return int(v[4:])


def log_spaced(count: int, horizon: int) -> list[int]:
    """The steps of ``"log:COUNT"`` over a run of up to ``horizon`` steps: step 0 and
    ``count`` log-spaced steps in [1, horizon], rounded (duplicates merged)."""
    pts = np.unique(np.round(np.logspace(0, math.log10(horizon), count)).astype(np.int64))
    return [0, *pts.tolist()]


def _record_steps_ok(v) -> bool:
    if isinstance(v, list):
        return len(v) <= MAX_RECORDS and all(is_int(s) and 0 <= s <= MAX_STEPS for s in v)
    count = log_count(v)
    return count is not None and 2 <= count <= MAX_RECORDS


def _metrics_ok(v) -> bool:
    names = _metrics()
    return isinstance(v, list) and bool(v) and len(set(v)) == len(v) and set(v) <= set(names)


def _e(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")  # 1e-3, as the paper writes it


def _paper_lr_words(dropout: bool) -> str:
    """The step sizes the activations declare (``Activation.lr`` / ``dropout_lr``)."""
    lrs = {n: a.dropout_lr if dropout else a.lr for n, a in ACTIVATIONS.items()}
    return ", ".join(f"{_e(lr)} {n}" for n, lr in lrs.items() if lr is not None)


def _lr_accepted() -> str:
    return (
        f'a finite number > 0, "paper" ({_paper_lr_words(False)}; {_e(PAPER_LR_OTHER)} '
        f'otherwise) or "paper_dropout" ({_paper_lr_words(True)})'
    )


FIELDS: dict[str, Field] = by_name(
    Field(
        "task",
        "linear",
        one_of(tuple(TASKS)),
        "the data: y = X theta, or a random two-layer teacher of the same activation and width p",
    ),
    Field("n", 50, integer(1, MAX_SIZE), "samples"),
    Field("d", 150, integer(1, MAX_SIZE), "input dimension"),
    Field("p", 200, integer(1, MAX_SIZE), "hidden width"),
    Field("activation", "linear", one_of(_activations), "psi, the hidden activation"),
    Field("rule", "fa", one_of(_rules), "feedback alignment or backprop"),
    Field(
        "lr",
        "paper",
        Check(
            _lr_accepted,
            lambda v: v in PAPER_STEPS or (is_num(v) and v > 0),
            lambda v: v if isinstance(v, str) else float(v),
        ),
        "step size; \"paper\": the authors' code's value for the activation; "
        '"paper_dropout": their dropout runs\' value',
    ),
    Field("lam", 0.0, number(0), "weight decay lambda on the second layer beta"),
    Field(
        "lam_schedule",
        "constant",
        Check(schedules.TEXT, lambda v: isinstance(v, str) and schedules.parse(v) is not None),
        "lambda(t): constant, lambda for t < T then 0, or lambda GAMMA^t",
    ),
    Field("w_decay", 0.0, number(0), "weight decay on the first layer W"),
    Field(
        "dropout",
        0.0,
        Check(
            f"a number >= 0 and < {MAX_DROPOUT:g}",
            lambda v: is_num(v) and 0 <= v < MAX_DROPOUT,
            float,
        ),
        "inverted dropout on the hidden activations psi(Wx) at every step (nn.Dropout: each "
        "sample's unit dropped with this probability, the kept ones scaled by 1/(1 - q))",
    ),
    Field(
        "loss",
        "mse",
        one_of(LOSSES),
        "mean squared error (the authors', gradient factor 2/n) or sum of squares",
    ),
    Field(
        "init_scale",
        1.0,
        number(0, strict=True),
        "W, beta and b drawn from N(0, scale^2)",
    ),
    Field(
        "stop",
        "steps",
        one_of(("steps", "paper", "paper_dropout", "plateau")),
        '"steps": exactly `steps`; "paper": the paper\'s rule as the authors\' code runs '
        "it (`Plateau.paper`: at least rint(5000 sqrt(p) // 14) steps, the MSE checked at "
        "t % 1000 == 999, on until it changed by < 1e-3 between checks; docs/reproduce.md); "
        "\"paper_dropout\": the authors' dropout runs' rule (`Plateau.paper_dropout`: at "
        "least rint(N sqrt(p) // 14) steps, N = 5000 (10000 linear), the alignment checked "
        "every N/5 steps, on until it changed by < 1e-4); "
        '"plateau": at least `min_steps`, then checkpoints every `check_every` from there '
        "until the MSE changes by < `tol`",
    ),
    Field("steps", 1000, integer(0, MAX_STEPS), 'steps to train (with stop = "steps")'),
    Field("min_steps", 0, integer(0, MAX_STEPS), 'fewest steps (stop = "plateau")'),
    Field(
        "check_every",
        PAPER_CHECK_EVERY,
        integer(1, MAX_STEPS),
        'steps between plateau checks (stop = "plateau")',
    ),
    Field("tol", PAPER_TOL, number(0), 'the MSE change that ends a plateau (stop = "plateau")'),
    Field(
        "max_steps",
        0,
        integer(0, MAX_STEPS),
        f"a cap on the steps (0: no cap but the bound {fmt_int(MAX_STEPS)}; a plateau with "
        "tol = 0 needs a cap)",
    ),
    Field(
        "record_every",
        0,
        integer(0, MAX_STEPS),
        "record the metrics every this many steps (0: only the last step)",
    ),
    Field(
        "record_steps",
        [],
        Check(
            f"an array of at most {fmt_int(MAX_RECORDS)} integers in [0, {fmt_int(MAX_STEPS)}], "
            f'or "log:N" (N in [2, {fmt_int(MAX_RECORDS)}] log-spaced steps)',
            _record_steps_ok,
            lambda v: v if isinstance(v, str) else sorted(set(v)),
        ),
        "extra steps to record",
    ),
    Field(
        "metrics",
        ["mse", "alignment"],
        Check(
            lambda: f"a non-empty array of distinct names from {', '.join(_metrics())}",
            _metrics_ok,
            list,
        ),
        "what to record (definitions: docs/twolayer.md)",
    ),
    Field("dtype", "float64", one_of(("float32", "float64")), "arithmetic precision"),
    Field("device", "cpu", one_of(("cpu", "cuda", "auto")), "where the ensemble runs"),
)


def markdown_table() -> str:
    """docs/sweeps.md's table of two-layer fields, generated from :data:`FIELDS`."""
    return _table(FIELDS)
