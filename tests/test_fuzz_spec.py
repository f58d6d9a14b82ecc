"""Fuzz suite, part 1: sweep specs and ``fa train`` configs.

Properties (Hypothesis; the example counts are the ``ci`` profile's, tests/_fuzz.py):

1. ``parse_spec`` of any generated spec table either gives a spec whose every run is within
   the declared bounds (runs, steps, sizes, seeds, recorded rows) and plans, or refuses it
   with one ConfigError line.
2. ``fa sweep SPEC --dry-run`` of any generated TOML text (a spec written out, nested deep,
   cut short or padded) exits 0 or 2; 2 with one line on stderr; every file is unchanged.
3. ``parse_config`` of any generated ``fa train`` config (with ``--set`` overrides applied)
   either validates or refuses it with one ConfigError line.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _badinput import fa
from _fuzz import ints, run_or_refuse, untouched_dir, values
from feedback_alignment.bounds import BOUNDS, MAX_SEED, MAX_SIZE, MAX_STEPS
from feedback_alignment.experiments.planner import plan
from feedback_alignment.experiments.spec import STUDY_KEYS, TWOLAYER_FIELDS, parse_spec

pytestmark = pytest.mark.usefixtures("one_thread")

# valid-looking values per field, so that many generated specs get past the first key
GOOD = {
    "task": st.sampled_from(["linear", "teacher"]),
    "n": st.integers(1, 8),
    "d": st.integers(1, 8),
    "p": st.integers(1, 8),
    "activation": st.sampled_from(["linear", "relu", "tanh"]),
    "rule": st.sampled_from(["fa", "bp"]),
    "lr": st.one_of(st.just("paper"), st.floats(1e-4, 1.0)),
    "lam": st.floats(0, 1),
    "stop": st.sampled_from(["steps", "paper", "plateau"]),
    "steps": st.integers(0, 20),
    "min_steps": st.integers(0, 20),
    "check_every": st.integers(1, 20),
    "tol": st.sampled_from([0.0, 1e-3]),
    "max_steps": st.integers(0, 30),
    "record_every": st.integers(0, 5),
    "record_steps": st.one_of(st.lists(st.integers(0, 30), max_size=4), st.just("log:5")),
    "metrics": st.sampled_from([["mse"], ["mse", "alignment"], ["delta_alignment"]]),
}
FIELD_NAMES = sorted(TWOLAYER_FIELDS) + ["nonsense"]


def field_value(name):
    good = GOOD.get(name)
    return values if good is None else st.one_of(good, good, ints, values)


@st.composite
def spec_tables(draw):
    fixed_keys = draw(st.lists(st.sampled_from(FIELD_NAMES), unique=True, max_size=6))
    fixed = {k: draw(field_value(k)) for k in fixed_keys}
    free = [k for k in FIELD_NAMES if k not in fixed]
    grid_keys = draw(st.lists(st.sampled_from(free), unique=True, max_size=3))
    grid = {k: draw(st.lists(field_value(k), min_size=1, max_size=3)) for k in grid_keys}
    study = {}
    for k in draw(st.lists(st.sampled_from(sorted(STUDY_KEYS) + ["bogus"]), max_size=3)):
        study[k] = draw(
            {
                # 40000 repetitions of a grid of 3 or more cross the bound on runs
                "repetitions": st.one_of(st.integers(1, 3), st.just(40000), ints),
                "seed": ints,
                "seeds": st.one_of(st.lists(ints, max_size=3), values),
                "pack": st.one_of(st.just("auto"), ints),
            }.get(k, values)
        )
    table = {"study": study, "fixed": fixed, "grid": grid}
    if draw(st.booleans()):
        table["zip"] = draw(st.one_of(values, st.just([{"lam": [0.0, 0.1], "lr": [0.1, 0.2]}])))
    return table


def _within_bounds(spec) -> None:
    runs = spec.runs()
    assert 1 <= len(runs) <= BOUNDS["runs"].hi
    for r in runs:
        c = r.config
        assert 0 <= r.seed <= MAX_SEED
        assert all(1 <= c[k] <= MAX_SIZE for k in ("n", "d", "p"))
        assert all(0 <= c[k] <= MAX_STEPS for k in ("steps", "min_steps", "max_steps"))
        assert not (c["stop"] == "plateau" and c["tol"] == 0 and not c["max_steps"])
    run_or_refuse(lambda: plan(runs, spec))  # the memory an ensemble needs is the plan's


@given(spec_tables())
def test_any_spec_is_within_bounds_or_one_line(table):
    with untouched_dir():
        spec = run_or_refuse(lambda: parse_spec(json.loads(json.dumps(table, default=str))))
        if spec is not None:
            _within_bounds(spec)


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(repr(value), repr(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    return '"none"'


def _spec_text(table) -> str:
    lines = []
    for section in ("study", "fixed", "grid"):
        lines.append(f"[{section}]")
        lines += [f"{json.dumps(k)} = {_toml(v)}" for k, v in table.get(section, {}).items()]
    return "\n".join(lines) + "\n"


@given(
    spec_tables(),
    st.sampled_from(["as is", "nest", "cut", "pad", "dotted"]),
    st.integers(1, 6000),
)
def test_fa_sweep_dry_run_of_any_text_exits_0_or_one_line(capsys, table, how, k):
    text = _spec_text(table)
    if how == "nest":
        text += "deep = " + "[" * k + "]" * k + "\n"
    elif how == "cut":
        text = text[: k % (len(text) + 1)]
    elif how == "pad":
        text += "# " + "x" * 98 + "\n" * 1 * (k * 3)
    elif how == "dotted":
        text += ".".join(["a"] * (k % 100 + 1)) + " = 1\n"
    with untouched_dir({"spec.toml": text}) as root:  # --dry-run writes nothing, no store
        rc, lines = fa(capsys, "sweep", "spec.toml", "--store", root / "s.sqlite", "--dry-run")
        warnings = [ln for ln in lines if ln.startswith("fa sweep: warning:")]
        assert rc in (0, 2), (rc, lines)
        if rc == 2:
            assert len(lines) == 1 and lines[0].startswith("fa sweep: error: "), lines
        else:
            assert lines == warnings


# ---------------------------------------------------------------- fa train configs
CONFIG_KEYS = [
    "seed", "threads", "dtype", "data.source", "data.train_limit", "model.name", "model.hidden",
    "model.width", "rule.name", "rule.options", "train.lr", "train.steps", "train.epochs",
    "train.batch_size", "train.momentum", "train.milestones", "train.weight_decay",
    "metrics.layers", "bogus.key", "train.bogus",
]  # fmt: skip


@given(
    st.dictionaries(st.sampled_from(CONFIG_KEYS), st.one_of(values, ints), max_size=5),
    st.lists(st.tuples(st.sampled_from(CONFIG_KEYS), st.text(max_size=20)), max_size=3),
)
def test_any_train_config_validates_or_one_line(flat, sets):
    from feedback_alignment.deep.cli import apply_overrides
    from feedback_alignment.deep.config import parse_config

    raw: dict = {}
    for key, v in flat.items():
        section, _, k = key.rpartition(".")
        (raw.setdefault(section, {}) if section else raw)[k] = v
    with untouched_dir():
        out = run_or_refuse(
            lambda: parse_config(apply_overrides(raw, [f"{k}={v}" for k, v in sets]))
        )
        if out is not None:
            steps = out["train"]["steps"]
            assert steps is None or 1 <= steps <= BOUNDS["steps"].hi
