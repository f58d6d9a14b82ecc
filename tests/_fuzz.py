"""Shared pieces of the fuzz suite (tests/test_fuzz_*.py): Hypothesis profiles and the
property every fuzz test asserts.

Profiles, picked by the environment variable ``FA_FUZZ``:

- ``ci`` (the default, what ``make test`` runs): a fixed, small number of examples per
  property, derandomised so CI sees the same inputs every run;
- ``release``: 2000 examples per property from fresh random draws, no deadline (the run
  docs/bounds.md asks for before a release).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from _badinput import snapshot
from feedback_alignment.errors import ConfigError

CI_EXAMPLES = 30
# capsys is read afresh by every call of _badinput.fa, so sharing it between inputs is safe
SUPPRESS = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture]
settings.register_profile(
    "ci",
    max_examples=CI_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=SUPPRESS,
)
settings.register_profile(
    "release",
    max_examples=2000,
    deadline=None,
    suppress_health_check=SUPPRESS,
)
PROFILE = os.environ.get("FA_FUZZ", "ci")
settings.load_profile(PROFILE)


def refused_in_one_line(exc: BaseException) -> str:
    """The ConfigError's line: one line, not empty."""
    assert isinstance(exc, ConfigError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text and "\n" not in text, repr(text)
    return text


def run_or_refuse(call):
    """``call()``'s value, or None when it raised a one-line ConfigError; anything else
    (TypeError, RuntimeError, a multi-line message) fails the property."""
    try:
        return call()
    except ConfigError as exc:
        refused_in_one_line(exc)
        return None


@contextmanager
def untouched_dir(files: dict[str, str] | None = None):
    """A fresh working directory (made the current one) holding ``files`` (name -> text)
    and keep.txt, every one of which must be byte-identical when the block ends: what a
    refused or read-only call leaves."""
    old = Path.cwd()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "keep.txt").write_text("precious\n")
        for name, text in (files or {}).items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        before = snapshot(root)
        os.chdir(root)
        try:
            yield root
        finally:
            os.chdir(old)
        assert snapshot(root) == before


# ---------------------------------------------------------------- value strategies
# integers around every bound that matters: small, at the edges, just past them, huge
EDGES = [0, 1, 2, 10**5, 10**6, 10**8, 10**9, 10**9 + 1, 2**63 - 1, 2**64 - 1, 2**64, 10**30]
ints = st.one_of(
    st.integers(-3, 50),
    st.sampled_from(EDGES),
    st.sampled_from([-e for e in EDGES if e]),
    st.integers(),
)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-3, 0.5, 1.0, 1e300, -1.0]),
)
scalars = st.one_of(ints, floats, st.booleans(), st.text(max_size=12), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
