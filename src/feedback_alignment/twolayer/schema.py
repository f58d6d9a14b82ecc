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

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from ..activations import ACTIVATIONS, PAPER_LR_OTHER
from ..bounds import BOUNDS, MAX_SIZE, MAX_STEPS, fmt_int
from ..errors import ConfigError
from .data import TASKS
from .recorder import METRICS
from .rules import RULES

# MAX_STEPS, MAX_SIZE and the other bounds: bounds.py
MAX_RECORDS = BOUNDS["records"].hi


def fmt(value) -> str:
    """A value as a spec writes it (strings, arrays and booleans in JSON)."""
    return json.dumps(value) if isinstance(value, str | list | dict | bool) else repr(value)


def refusal(key: str, value, accepted: str) -> ConfigError:
    """The one-line error for a refused value: "KEY = VALUE is not accepted; accepted: ..."."""
    return ConfigError(f"{key} = {fmt(value)} is not accepted; accepted: {accepted}")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class Check:
    """Accepted values: a test, the words that name them (or a function giving the words,
    for lists read when a value is checked), and the normal form of an accepted value."""

    words: str | Callable[[], str]
    test: Callable[[object], bool]
    normal: Callable[[object], object] | None = None

    @property
    def accepted(self) -> str:
        return self.words if isinstance(self.words, str) else self.words()


def integer(lo: int, hi: int | None = None) -> Check:
    """An integer >= lo; ``hi`` bounds a value that would exhaust memory or time."""
    words = f"an integer >= {lo}" + ("" if hi is None else f" and <= {fmt_int(hi)}")
    return Check(words, lambda v: is_int(v) and v >= lo and (hi is None or v <= hi))


def number(lo: float, *, strict: bool = False) -> Check:
    """A finite number >= lo (> lo when ``strict``), as a float."""
    words = f"a finite number {'>' if strict else '>='} {lo:g}"
    return Check(words, lambda v: is_num(v) and (v > lo if strict else v >= lo), float)


def one_of(names: tuple | Callable[[], tuple]) -> Check:
    """One of ``names`` (or of the names a function returns when a value is checked)."""
    get = names if callable(names) else lambda: names
    return Check(lambda: ", ".join(map(fmt, get())), lambda v: isinstance(v, str) and v in get())


@dataclass(frozen=True)
class Field:
    """One setting of a run: its default, the values it accepts and what it means."""

    name: str
    default: object
    check: Check
    doc: str

    def validate(self, value, key: str | None = None):
        """``value`` in normal form, or a one-line ConfigError naming ``key`` (default: the
        field's name), the value and what is accepted."""
        if not self.check.test(value):
            raise refusal(key or self.name, value, self.check.accepted)
        return value if self.check.normal is None else self.check.normal(value)


def by_name(*fields: Field) -> dict[str, Field]:
    """Fields as a table, name -> :class:`Field`, in declaration order."""
    return {f.name: f for f in fields}


# --------------------------------------------------------------------------- names
def _rules() -> tuple:
    return tuple(RULES)  # read when checked: a rule registered at run time is accepted


def _metrics() -> tuple:
    return tuple(METRICS)


def _activations() -> tuple:
    return tuple(ACTIVATIONS)


# --------------------------------------------------------------------------- special values
def _schedule_ok(v) -> bool:
    if v == "constant":
        return True
    if not (isinstance(v, str) and ":" in v):
        return False
    kind, _, arg = v.partition(":")
    try:
        return (kind == "cutoff" and int(arg) >= 0) or (kind == "exp" and 0 < float(arg) <= 1)
    except ValueError:
        return False


def _log_spaced(v) -> bool:
    try:
        return isinstance(v, str) and v.startswith("log:") and 2 <= int(v[4:]) <= MAX_RECORDS
    except ValueError:
        return False


def _record_steps_ok(v) -> bool:
    if isinstance(v, list):
        return len(v) <= MAX_RECORDS and all(is_int(s) and 0 <= s <= MAX_STEPS for s in v)
    return _log_spaced(v)


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
            lambda v: v in ("paper", "paper_dropout") or (is_num(v) and v > 0),
            lambda v: v if isinstance(v, str) else float(v),
        ),
        "step size; \"paper\": the authors' code's value for the activation; "
        '"paper_dropout": their dropout runs\' value',
    ),
    Field("lam", 0.0, number(0), "weight decay lambda on the second layer beta"),
    Field(
        "lam_schedule",
        "constant",
        Check(
            '"constant", "cutoff:T" (T an integer >= 0) or "exp:GAMMA" (0 < GAMMA <= 1)',
            _schedule_ok,
        ),
        "lambda(t): constant, lambda for t < T then 0, or lambda GAMMA^t",
    ),
    Field("w_decay", 0.0, number(0), "weight decay on the first layer W"),
    Field(
        "dropout",
        0.0,
        Check(
            "a number >= 0 and < 1",
            lambda v: is_num(v) and 0 <= v < 1,
            float,
        ),
        "inverted dropout on the hidden activations psi(Wx) at every step (nn.Dropout: each "
        "sample's unit dropped with this probability, the kept ones scaled by 1/(1 - q))",
    ),
    Field(
        "loss",
        "mse",
        one_of(("mse", "sse")),
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
        1000,
        integer(1, MAX_STEPS),
        'steps between plateau checks (stop = "plateau")',
    ),
    Field("tol", 1e-3, number(0), 'the MSE change that ends a plateau (stop = "plateau")'),
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
    rows = ["| field | default | accepted | meaning |", "|---|---|---|---|"]
    for f in FIELDS.values():
        cells = (f"`{f.name}`", f"`{fmt(f.default)}`", f.check.accepted, f.doc)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
