"""Fields: one setting's default, accepted values and meaning, declared once.

Every option a user can set is a :class:`Field`: the two-layer fields of a run
(:data:`feedback_alignment.twolayer.schema.FIELDS`), the ``fa train`` config keys
(:data:`feedback_alignment.deep.config.FIELDS`) and a sweep spec's study keys
(:mod:`feedback_alignment.experiments.spec`). A field's :class:`Check` tests a value, names
what is accepted and gives the value's normal form; :meth:`Field.validate` refuses a value
with the one error format of the package::

    KEY = VALUE is not accepted; accepted: WORDS

The tables of docs/sweeps.md and docs/rules.md are generated from the declarations
(:func:`markdown_table`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .bounds import fmt_int
from .errors import fmt, refusal


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


# the divergence limit of every trainer: the two-layer engine's fit and the deep Trainer
BLOWUP = Field(
    "blowup",
    1e10,
    Check("a number > 1", lambda v: is_num(v) and v > 1 or v == math.inf, float),
    "a loss this many times its first value counts as divergence (inf: only NaN/inf does)",
)


def by_name(*fields: Field) -> dict[str, Field]:
    """Fields as a table, name -> :class:`Field`, in declaration order."""
    return {f.name: f for f in fields}


def markdown_table(fields: dict[str, Field], title: str = "field") -> str:
    """A table of ``fields``: name, default, accepted values and meaning."""
    rows = [f"| {title} | default | accepted | meaning |", "|---|---|---|---|"]
    for name, f in fields.items():
        cells = (f"`{name}`", f"`{fmt(f.default)}`", f.check.accepted, f.doc)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
