"""``fa train`` configuration: TOML (stdlib ``tomllib``), parsed, never evaluated.

:data:`FIELDS` declares every key once, as a :class:`feedback_alignment.fields.Field`
(the package's one kind of field: the two-layer fields and a sweep's study keys are the
same): its default, accepted types, names, bounds and condition, and what it means.
:func:`parse_config` checks a config against it: an unknown key or a refused value is a
one-line :class:`~feedback_alignment.errors.ConfigError` in the package's one format
("config key train.lr = -1 is not accepted; accepted: a number > 0"). The
:class:`~.trainer.Trainer` checks its keywords against the same fields
(:func:`trainer_settings`, :func:`trainer_kwargs`), and a sweep spec's deep
keys are these fields. See docs/rules.md for the layout.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .. import tomlfile
from ..backend import DTYPES
from ..bounds import check_memory
from ..errors import ConfigError, check, fmt, need, refusal
from ..fields import Check, Field
from .convert import convert
from .data import SOURCES, load_dataset
from .models import ACTIVATIONS, E3_HIDDEN, MODELS, WIDTH_MODELS, build_model
from .rules import INITS, RULES, get_rule

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "exponential")


def _key(
    default,
    types: tuple,
    meaning: str,
    accepted: tuple | Callable[[], tuple] | None = None,
    bounds: tuple | None = None,
    must: tuple[str, Callable] | None = None,
) -> Callable[[str], Field]:
    """A config key's :class:`Field`, given its dotted name: values of ``types`` (a float
    finite, a bool only where ``bool`` is named), one of ``accepted`` (a function when the
    names come from a registry, read at check time, so a rule registered at run time is
    accepted), within ``bounds`` (lowest, highest or None: a guard on memory and time) and
    meeting ``must`` (phrase, test), for a config and a Trainer keyword alike."""

    def names() -> tuple | None:
        return accepted() if callable(accepted) else accepted

    def test(value) -> bool:
        if not _typed(value, types):
            return False
        if value is None:
            return True
        ns = names()
        return (
            (ns is None or value in ns)
            and (bounds is None or _in_bounds(value, bounds))
            and (must is None or bool(must[1](value)))
        )

    def words() -> str:
        ns = names()
        if ns is not None:
            return ", ".join(map(fmt, ns))
        kinds = tuple(t for t in types if t is not type(None))
        kind = "number" if {int, float} <= set(kinds) else _typename(kinds)
        out = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
        if bounds is not None:  # the bounds say more than a condition such as ">= 1"
            out += f" {_range(*bounds)}"
        elif must is not None:
            out = must[0] if must[0].startswith(("a ", "an ")) else f"{out} {must[0]}"
        return out + (" (or absent)" if len(kinds) < len(types) else "")

    return lambda name: Field(name, default, Check(words, test), meaning)


def _section(section: str, **keys: Callable[[str], Field]) -> dict[str, Field]:
    """A section's keys, key -> Field named by its dotted config key."""
    return {k: make(f"{section}.{k}" if section else k) for k, make in keys.items()}


NUM = (int, float)
NONE = (type(None),)
_INT_GE0 = ("an int >= 0", lambda v: isinstance(v, int) and v >= 0)
_INT_GE1 = ("an int >= 1", lambda v: isinstance(v, int) and v >= 1)


def _positive(v) -> bool:
    return isinstance(v, NUM) and v > 0 and math.isfinite(v)


def _rule_names() -> tuple:
    return tuple(sorted(RULES))


# section -> key -> Field; top-level keys live under "".
FIELDS: dict[str, dict[str, Field]] = {
    "": _section(
        "",
        seed=_key(0, (int,), "model init, feedback draws, data order, mirror noise"),
        device=_key("cpu", (str,), "cpu, cuda, cuda:N, auto"),
        dtype=_key("float32", (str,), "floating-point type", tuple(DTYPES)),
        threads=_key(0, (int,), "torch threads; 0 leaves torch's setting", bounds=(0, 4096)),
    ),
    "data": _section(
        "data",
        source=_key("digits", (str,), "where the data come from", SOURCES),
        path=_key(None, (str, *NONE), "directory of IDX files"),
        train_limit=_key(None, (int, *NONE), "first N training samples", bounds=(1, None)),
        test_limit=_key(None, (int, *NONE), "first N test samples", bounds=(1, None)),
        normalize=_key(
            True, (bool, list), "data set mean/std; false: pixels in [0, 1]; or [mean, std]"
        ),
    ),
    "model": _section(
        "model",
        name=_key("mlp", (str,), "the network", tuple(MODELS)),
        hidden=_key(
            [256], (int, list), "mlp: hidden sizes; e3, e4, bp_baseline: the width (default 1000)"
        ),
        activation=_key("relu", (str,), "mlp: between layers", tuple(ACTIVATIONS)),
        bias=_key(True, (bool,), "mlp: layers with biases"),
        width=_key(16, (int,), "cnn: channels of the first conv", bounds=(1, 10**5)),
        seed=_key(None, (int, *NONE), "model seed; default: the top-level seed"),
    ),
    "rule": _section(
        "rule",
        name=_key("fa", (str,), "the learning rule (any registered rule)", _rule_names),
        init=_key("gaussian", (str,), "how the feedback is drawn", INITS),
        scale=_key(None, NUM + NONE, "feedback std; default: each layer's W std (e3, e4: 1)"),
        seed=_key(None, (int, *NONE), "feedback seed; default: the top-level seed"),
        options=_key({}, (dict,), "the rule's options (wm: lr, decay, batch)"),
    ),
    "train": _section(
        "train",
        optimizer=_key("sgd", (str,), "the optimiser", OPTIMIZERS),
        lr=_key(0.01, NUM, "learning rate", must=("> 0", _positive)),
        momentum=_key(0.0, NUM, "SGD momentum", must=("in [0, 1)", lambda v: 0 <= v < 1)),
        nesterov=_key(False, (bool,), "SGD with Nesterov momentum"),
        betas=_key([0.9, 0.999], (list,), "Adam's betas"),
        schedule=_key(
            "constant",
            (str,),
            "step: times gamma at each milestone; cosine: to 0 over the run; "
            "exponential: gamma over the run",
            SCHEDULES,
        ),
        gamma=_key(0.1, NUM, "the schedule's factor"),
        milestones=_key([], (list,), "steps at which the step schedule multiplies"),
        warmup_steps=_key(0, (int,), "linear warm-up steps", must=_INT_GE0),
        batch_size=_key(600, (int,), "training batch", bounds=(1, 10**7), must=_INT_GE1),
        epochs=_key(1, NUM + NONE, "passes over the training data", bounds=(0, 10**6)),
        steps=_key(None, (int, *NONE), "optimiser steps (not epochs)", bounds=(1, 10**9)),
        eval_every=_key(
            100, (int,), "test every N steps (and at the start and end)", must=_INT_GE0
        ),
        eval_batch=_key(2000, (int,), "test batch", bounds=(1, 10**7), must=_INT_GE1),
        weight_decay=_key(
            0.0, NUM + (dict,), "a number, or {layer: lambda} with 'last' and 'default'"
        ),
        mirror_every=_key(1, (int,), "wm: mirror phase every N steps", must=_INT_GE0),
        checkpoint_dir=_key(None, (str, *NONE), "directory for checkpoints"),
        checkpoint_every=_key(0, (int,), "checkpoint every N steps", must=_INT_GE0),
        progress=_key(False, (bool,), "elapsed time and time left on stderr"),
    ),
    "metrics": _section(
        "metrics",
        record_every=_key(
            0, (int,), "cheap metrics on the training batch every N steps", must=_INT_GE0
        ),
        layers=_key(None, (list, *NONE), "the layers to record (default: all)"),
        measure_every=_key(
            0, (int,), "all metrics, one extra backprop pass, every N steps", must=_INT_GE0
        ),
    ),
}

# the Trainer's settings that live outside [train], as keyword -> config key
_TRAINER_KEYS = {
    "record_every": "metrics.record_every",
    "record_layers": "metrics.layers",
    "measure_every": "metrics.measure_every",
    "seed": "seed",
    "device": "device",
    "dtype": "dtype",
    "normalize": "data.normalize",
}


def _typename(types) -> str:
    names = {
        int: "integer",
        float: "number",
        str: "string",
        bool: "boolean",
        list: "array",
        dict: "table",
        type(None): "absent",
    }
    return " or ".join(dict.fromkeys(names[t] for t in types))


def _typed(value, types) -> bool:
    """``value`` is of ``types``: a bool only where bool is named, a float only finite."""
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, types)


def _range(lo, hi) -> str:
    """Bounds in words: ">= 1", "in [0, 4096]", "in [1, 1e+07]"."""
    if hi is None:
        return f">= {lo}"
    return f"in [{lo}, {hi:.0e}]" if hi >= 10**6 else f"in [{lo}, {hi}]"


def _in_bounds(value, bounds) -> bool:
    lo, hi = bounds
    return isinstance(value, bool) or (value >= lo and (hi is None or value <= hi))


def parse_config(config: dict) -> dict:
    """Validate ``config`` (nested dict) and fill defaults; returns a new dict."""
    check(isinstance(config, dict), f"config must be a table; got {type(config).__name__}")
    sections = [s for s in FIELDS if s]
    for key, value in config.items():
        if key in FIELDS[""]:
            continue
        if key not in sections:
            accepted = sorted(list(FIELDS[""]) + sections)
            raise ConfigError(f"unknown config key {key!r}; accepted: {', '.join(accepted)}")
        need(isinstance(value, dict), f"config section [{key}]", value, "a table")
        for k in value:
            if k not in FIELDS[key]:
                raise ConfigError(
                    f"unknown config key {key}.{k}; accepted in [{key}]: "
                    f"{', '.join(sorted(FIELDS[key]))}"
                )
    out: dict = {}
    for s, keys in FIELDS.items():
        given = config.get(s, {}) if s else config
        into = out.setdefault(s, {}) if s else out
        for k, f in keys.items():
            into[k] = f.validate(given.get(k, copy.deepcopy(f.default)), f"config key {f.name}")
    hidden = out["model"]["hidden"]
    widths = [hidden] if isinstance(hidden, int) else hidden
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise refusal("config key model.hidden", hidden, "an integer >= 1 or an array of them")
    return out


def _trainer_fields() -> dict[str, tuple[str, Field]]:
    """Trainer keyword -> (config key, Field): every [train] key, plus :data:`_TRAINER_KEYS`."""
    out = {k: (f"train.{k}", f) for k, f in FIELDS["train"].items()}
    for k, where in _TRAINER_KEYS.items():
        section, _, key = where.rpartition(".")
        out[k] = (where, FIELDS[section][key])
    return out


def trainer_kwargs(cfg: dict) -> dict:
    """The :class:`~.trainer.Trainer` keywords that a parsed config sets."""
    out = {}
    for k, (where, _) in _trainer_fields().items():
        section, _, key = where.rpartition(".")
        out[k] = copy.deepcopy((cfg[section] if section else cfg)[key])
    return out


def trainer_settings(**given) -> dict:
    """The :class:`~.trainer.Trainer`'s settings: those ``given``, the declared defaults
    for the rest, checked against :data:`FIELDS` (one-line errors that use the Trainer's
    keyword)."""
    fields = _trainer_fields()
    for k in given:
        if k not in fields:
            raise ConfigError(f"unknown Trainer setting {k!r}; accepted: {', '.join(fields)}")
    out = {}
    for k, (_, f) in fields.items():
        v = given[k] if k in given else copy.deepcopy(f.default)
        if isinstance(v, torch.dtype):  # Python may name the dtype by the torch object
            need(v in DTYPES.values(), "dtype", v, _dtypes())
        else:  # Python's tuples and paths where a config writes arrays and strings
            f.validate(_as_written(v), k)
        out[k] = v
    out["betas"] = tuple(out["betas"])
    out["milestones"] = tuple(out["milestones"])
    return out


def _as_written(v):
    """A Trainer keyword's value as a config would write it: a tuple as an array, a path
    as a string."""
    if isinstance(v, tuple):
        return list(v)
    return os.fspath(v) if isinstance(v, os.PathLike) else v


def _dtypes() -> str:
    return ", ".join(f"{name} (torch.{name})" for name in DTYPES)


def read_toml(path, what: str = "config file") -> dict:
    """The table in a TOML file; one-line errors for a directory, a missing file or bad TOML."""
    p = Path(path)
    check(not p.is_dir(), f"{what} {str(p)!r} is a directory; accepted: a TOML file")
    check(p.is_file(), f"{what} {str(p)!r} does not exist")
    return tomlfile.read(p, f"{what} {str(p)!r}")  # its size and nesting bounded first


def load_config(path) -> dict:
    """Read and validate a TOML config file."""
    return parse_config(read_toml(path))


def _build_model(cfg: dict, data):
    """The network a parsed config names, sized for ``data``; an MLP or E3 whose
    parameters (with feedback, gradients and optimiser state) would not fit in memory is
    refused before anything is allocated."""
    m = cfg["model"]
    name, hidden = m["name"], m["hidden"]
    seed = cfg["seed"] if m["seed"] is None else m["seed"]
    if name == "cnn":
        c, h, w = data.shape
        check(h == w, f"model 'cnn' needs square images; data has {h}x{w}")
        return build_model(
            "cnn", in_channels=c, classes=data.classes, image=h, width=m["width"], seed=seed
        )
    if name in WIDTH_MODELS:
        check(
            isinstance(hidden, int) or hidden == FIELDS["model"]["hidden"].default,
            f"model.hidden for {name!r} is the width, an integer; got {hidden!r}",
        )
        widths = [hidden if isinstance(hidden, int) else E3_HIDDEN] * WIDTH_MODELS[name]
    else:
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
    sizes = [math.prod(data.shape), *widths, data.classes]
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))
    itemsize = 8 if cfg["dtype"] == "float64" else 4
    check_memory(
        5 * itemsize * params,
        f"model.hidden = {hidden!r} ({params:.3g} parameters)",
        "smaller hidden widths",
    )
    if name in WIDTH_MODELS:
        return build_model(name, hidden=widths[0], inputs=sizes[0], classes=data.classes, seed=seed)
    return build_model("mlp", sizes=sizes, activation=m["activation"], bias=m["bias"], seed=seed)


def build(cfg: dict):
    """(dataset, converted model, Trainer keyword arguments) from a parsed config."""
    d, r = cfg["data"], cfg["rule"]
    data = load_dataset(d["source"], d["path"])
    if d["train_limit"] or d["test_limit"]:
        data = data.limit(d["train_limit"], d["test_limit"])
    model = _build_model(cfg, data)
    scale = r["scale"]
    if scale is None and cfg["model"]["name"] in ("e3", "e4"):
        scale = 1.0  # the paper: B ~ N(0, 1) like W and beta
    seed = cfg["seed"] if r["seed"] is None else r["seed"]
    rule = get_rule(r["name"], **r["options"])
    kw = {"input_shape": data.shape} if rule.direct else {}
    model = convert(model, rule, init=r["init"], scale=scale, seed=seed, **kw)
    return data, model, trainer_kwargs(cfg)
