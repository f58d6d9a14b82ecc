"""Error types with one-line messages that name the offending value.

Every user-facing check raises :class:`ConfigError` (a ``ValueError``) so the CLI can
print it as a single line and exit with status 2; numerical failures during training
raise or report :class:`DivergenceError`; a failed write raises :class:`WriteError`.
"""

from __future__ import annotations

import json


class ConfigError(ValueError):
    """Bad input: the message names the value and what would be accepted, in one line
    (a line break or other control character in it, e.g. from a key a user wrote, is
    written as its escape, ``\\n``, so the message cannot split)."""

    def __init__(self, message="", *args):
        super().__init__(one_line(str(message)), *args)


def one_line(text: str) -> str:
    """``text`` with every character that could break or hide a line (control characters,
    line and paragraph separators) written as its Python escape."""
    return "".join(
        c.encode("unicode_escape").decode("ascii")
        if (c < " " or "\x7f" <= c <= "\x9f" or c in "\u2028\u2029")
        else c
        for c in text
    )


class WriteError(RuntimeError):
    """Writing an output failed while running (a full disk, a vanished directory): the
    message names the path and the cause; the CLI prints it as one line, exit status 1."""


class DivergenceError(RuntimeError):
    """Training produced NaN/inf or blew up; the message gives the step and a likely cause."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def fmt(value) -> str:
    """A value as a spec writes it (strings, arrays and booleans in JSON)."""
    return json.dumps(value) if isinstance(value, str | list | dict | bool) else repr(value)


def refusal(key: str, value, accepted: str) -> ConfigError:
    """The package's one error for a refused value, in one line:
    "KEY = VALUE is not accepted; accepted: WHAT IS"."""
    return ConfigError(f"{key} = {fmt(value)} is not accepted; accepted: {accepted}")


def need(ok: bool, key: str, value, accepted: str) -> None:
    """Refuse ``value`` of ``key`` with :func:`refusal` unless ``ok``."""
    if not ok:
        raise refusal(key, value, accepted)


def choice(name: str, value, accepted) -> None:
    """Check that ``value`` is one of ``accepted``; the error (:func:`refusal`) lists them."""
    if value not in accepted:
        raise refusal(name, value, ", ".join(map(fmt, sorted(accepted))))


def printable(text) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``), for a name from a
    file that is printed to a terminal; other characters, accents included, stay."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
