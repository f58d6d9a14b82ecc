"""TOML a user gives (a study spec, an ``fa train`` config, a ``--set`` value), bounded
before it is parsed: a file's size (``spec_bytes``) and the nesting of its arrays, inline
tables and dotted keys (``toml_depth``, :mod:`feedback_alignment.bounds`). Python's
``tomllib`` parses nested arrays by recursion, so 5000 ``[`` would end in a RecursionError
and pages of traceback; the text is scanned first and refused in one line. Parsed, never
evaluated.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from .bounds import BOUNDS, fmt_bytes
from .errors import ConfigError


def nesting(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in TOML text, strings and comments skipped (a
    table header ``[[zip]]`` counts 2)."""
    depth = deepest = i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if c in "\"'":
            i = _skip_string(text, i)
            continue
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return deepest


def _skip_string(text: str, i: int) -> int:
    """The index after the string that opens at ``i`` (basic or literal, one or three
    quotes); the end of the text for an unterminated one (tomllib reports it)."""
    q = text[i]
    triple = text.startswith(q * 3, i)
    close = q * 3 if triple else q
    j = i + len(close)
    while j < len(text):
        if q == '"' and text[j] == "\\":
            j += 2
            continue
        if text.startswith(close, j):
            j += len(close)
            while triple and j < len(text) and text[j] == q:  # """a"""" ends at the last
                j += 1
            return j
        if not triple and text[j] == "\n":
            return j
        j += 1
    return j


def _parsed_depth(obj) -> int:
    """Nesting of a parsed table (dotted keys and ``[a.b.c]`` headers nest without
    brackets), found without recursion."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        children = o.values() if isinstance(o, dict) else o if isinstance(o, list) else ()
        stack.extend((c, d + 1) for c in children if isinstance(c, dict | list))
    return deepest


def check_nesting(text: str, what: str, deep: int | None = None) -> None:
    """Refuse TOML text (or a parsed table ``deep`` levels deep) nested beyond the bound."""
    limit = BOUNDS["toml_depth"].hi
    deep = nesting(text) if deep is None else deep
    if deep > limit:
        raise ConfigError(
            f"{what} nests arrays and tables {deep} deep; accepted: at most {limit} "
            "(a spec or config nests 4 deep)"
        )


def loads(text: str, what: str) -> dict:
    """``text`` parsed, or one ConfigError line naming ``what`` (e.g. "spec file 'x.toml'")."""
    check_nesting(text, what)
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{what} is not valid TOML: {first}") from None
    check_nesting(text, what, _parsed_depth(table))
    return table


def read(path, what: str) -> dict:
    """The table in the TOML file ``path``, its size checked before it is read."""
    p = Path(path)
    limit = BOUNDS["spec_bytes"].hi
    size = p.stat().st_size
    if size > limit:
        raise ConfigError(
            f"{what} holds {fmt_bytes(size)}; accepted: at most {fmt_bytes(limit)} "
            "(specs and configs are a few KB)"
        )
    try:
        text = p.read_text()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} is not valid TOML: not UTF-8 text ({exc.reason})") from None
    return loads(text, what)
