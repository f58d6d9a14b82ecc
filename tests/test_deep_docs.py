"""docs/rules.md: its Python examples run as written, its TOML examples are valid configs,
and the "every key" listing shows the real defaults."""

from __future__ import annotations

import pathlib
import re
import tomllib

import pytest

from feedback_alignment.deep.config import parse_config

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "rules.md"
TEXT = DOC.read_text()
PYTHON = re.findall(r"```python\n(.*?)```", TEXT, re.S)
TOML = re.findall(r"```toml\n(.*?)```", TEXT, re.S)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_doc_has_examples():
    assert len(PYTHON) >= 7 and len(TOML) == 2


@pytest.mark.parametrize("i", range(len(PYTHON)))
def test_python_example_runs(i, capsys):
    exec(compile(PYTHON[i], f"docs/rules.md:python-{i}", "exec"), {"__name__": "__doc__"})


def test_toml_examples_are_valid_and_defaults_are_documented():
    e3, every = (tomllib.loads(t) for t in TOML)
    cfg = parse_config(e3)
    assert cfg["model"]["name"] == "e3" and cfg["train"]["weight_decay"] == {"out": 0.1}
    assert cfg["train"]["batch_size"] == 600 and cfg["train"]["lr"] == 0.01
    assert parse_config(every) == parse_config({})


def test_every_rule_is_documented():
    from feedback_alignment.deep import RULES

    for name in ("bp", "fa", "usf", "frsf", "brsf", "kp", "wm", "dfa"):
        assert name in RULES and f"| `{name}` |" in TEXT


def test_every_declared_key_is_listed():
    """The "every key" listing names each key of config.FIELDS (set or commented out)."""
    from feedback_alignment.deep.config import FIELDS

    listed, section = set(), ""
    for line in TOML[1].splitlines():
        head = re.match(r"\[(\w+)\]", line)
        key = re.match(r"(?:# )?(\w+) = ", line)
        if head:
            section = head[1]
        elif key:
            listed.add((section, key[1]))
    assert listed == {(s, k) for s, keys in FIELDS.items() for k in keys}
