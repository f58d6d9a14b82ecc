"""Schedules for the second-layer weight decay lambda(t) = lambda * factor(t).

The paper's published runs use a constant lambda; the authors' code also has a cut-off
(lambda for t < T, then 0) and an exponential decay. Any callable ``t -> float`` (or
``t -> K floats``, one per member) works as a schedule too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import need


@dataclass(frozen=True)
class Constant:
    """factor(t) = 1."""

    def __call__(self, t: int) -> float:
        return 1.0


@dataclass(frozen=True)
class CutOff:
    """factor(t) = 1 for t < T, else 0."""

    T: int

    def __post_init__(self):
        need(self.T >= 0, "CutOff T", self.T, "a number >= 0")

    def __call__(self, t: int) -> float:
        return 1.0 if t < self.T else 0.0


@dataclass(frozen=True)
class ExpDecay:
    """factor(t) = gamma ** t, 0 < gamma <= 1."""

    gamma: float

    def __post_init__(self):
        need(0 < self.gamma <= 1, "ExpDecay gamma", self.gamma, "a number in (0, 1]")

    def __call__(self, t: int) -> float:
        return self.gamma**t


TEXT = '"constant", "cutoff:T" (T an integer >= 0) or "exp:GAMMA" (0 < GAMMA <= 1)'


def parse(text: str):
    """A schedule as a spec writes it (:data:`TEXT`) -> the schedule object, or None when
    ``text`` is not one. The one parser of these strings: a spec's check and ``fit``."""
    if text == "constant":
        return Constant()
    kind, _, arg = text.partition(":")
    try:
        if kind == "cutoff" and int(arg) >= 0:
            return CutOff(int(arg))
        if kind == "exp" and 0 < float(arg) <= 1:
            return ExpDecay(float(arg))
    except ValueError:
        pass
    return None


def get_schedule(spec):
    """None/'constant' -> Constant(); "cutoff:T", "exp:GAMMA" (:func:`parse`); ('cutoff',
    T); ('exp', gamma); or a callable."""
    if spec is None:
        return Constant()
    if isinstance(spec, str):
        parsed = parse(spec)
        need(parsed is not None, "lam_schedule", spec, TEXT)
        return parsed
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] in ("cutoff", "exp"):
        return CutOff(int(spec[1])) if spec[0] == "cutoff" else ExpDecay(float(spec[1]))
    need(
        callable(spec),
        "lam_schedule",
        spec,
        f"None, {TEXT}, ('cutoff', T), ('exp', gamma), CutOff, ExpDecay or a callable t -> factor",
    )
    return spec
