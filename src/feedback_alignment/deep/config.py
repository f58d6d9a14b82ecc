"""``fa train`` configuration: TOML (stdlib ``tomllib``), parsed, never evaluated.

:data:`FIELDS` declares every key once: its default, accepted types, what it means,
and the names, bounds or condition it accepts. :func:`parse_config` checks a config
against it (unknown keys, wrong types, unknown names and values out of bounds raise a
one-line :class:`~feedback_alignment.errors.ConfigError`), and the
:class:`~.trainer.Trainer` takes its settings and their defaults from it
(:func:`trainer_settings`, :func:`trainer_kwargs`). See docs/rules.md for the layout.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import tomlfile
from ..backend import DTYPES
from ..bounds import check_memory
from ..errors import ConfigError, check, choice
from .convert import convert
from .data import SOURCES, load_dataset
from .models import ACTIVATIONS, E3_HIDDEN, MODELS, WIDTH_MODELS, build_model
from .rules import INITS, RULES, get_rule

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "exponential")


@dataclass(frozen=True)
class Field:
    """One config key.

    ``accepted``: the names it takes (a function when they come from a registry, read at
    check time, so a rule registered at run time is accepted); ``bounds``: (lowest,
    highest or None), a guard on memory and time checked when a config is read;
    ``must``: (phrase, test), a condition the :class:`~.trainer.Trainer` checks for every
    caller, Python or config ("lr must be > 0").
    """

    default: object
    types: tuple
    meaning: str
    accepted: tuple | Callable[[], tuple] | None = None
    bounds: tuple | None = None
    must: tuple[str, Callable] | None = None

    def names(self) -> tuple | None:
        """The accepted names, or None when any value of the right type is."""
        return self.accepted() if callable(self.accepted) else self.accepted

    def check(self, where: str, value) -> None:
        """A one-line ConfigError naming config key ``where`` unless ``value`` has the
        field's type, is a finite number where a number, one of its names and within its
        bounds (``must`` is the Trainer's: see :meth:`ok`)."""
        _check_type(where, value, self.types)
        names = self.names()
        if names is not None and value not in names:
            raise ConfigError(
                f"config key {where} = {value!r} is not accepted; accepted: "
                f"{', '.join(map(repr, names))}"
            )
        if self.bounds is not None:
            _check_bounds(where, value, self.bounds)

    def ok(self, value) -> bool:
        """Whether ``value`` passes :meth:`check` and the ``must`` condition (a sweep spec
        asks this of every value before any run starts)."""
        try:
            self.check("", value)
        except ConfigError:
            return False
        return self.must is None or value is None or bool(self.must[1](value))

    def describe(self, fmt: Callable = repr) -> str:
        """What the field accepts, in words: its names, or its type with its condition
        and bounds ("a number > 0", "an integer in [1, 1e+07]")."""
        names = self.names()
        if names is not None:
            return ", ".join(map(fmt, names))
        types = tuple(t for t in self.types if t is not type(None))
        kind = "number" if {int, float} <= set(types) else _typename(types)
        words = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
        if self.bounds is not None:  # the bounds say more than a condition such as ">= 1"
            words += f" {_range(*self.bounds)}"
        elif self.must is not None:
            phrase = self.must[0]
            words = phrase if phrase.startswith(("a ", "an ")) else f"{words} {phrase}"
        return words + (" (or absent)" if len(types) < len(self.types) else "")


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
    "": {
        "seed": Field(0, (int,), "model init, feedback draws, data order, mirror noise"),
        "device": Field("cpu", (str,), "cpu, cuda, cuda:N, auto"),
        "dtype": Field("float32", (str,), "floating-point type", tuple(DTYPES)),
        "threads": Field(0, (int,), "torch threads; 0 leaves torch's setting", bounds=(0, 4096)),
    },
    "data": {
        "source": Field("digits", (str,), "where the data come from", SOURCES),
        "path": Field(None, (str, *NONE), "directory of IDX files"),
        "train_limit": Field(None, (int, *NONE), "first N training samples", bounds=(1, None)),
        "test_limit": Field(None, (int, *NONE), "first N test samples", bounds=(1, None)),
        "normalize": Field(
            True, (bool, list), "data set mean/std; false: pixels in [0, 1]; or [mean, std]"
        ),
    },
    "model": {
        "name": Field("mlp", (str,), "the network", tuple(MODELS)),
        "hidden": Field(
            [256], (int, list), "mlp: hidden sizes; e3, e4, bp_baseline: the width (default 1000)"
        ),
        "activation": Field("relu", (str,), "mlp: between layers", tuple(ACTIVATIONS)),
        "bias": Field(True, (bool,), "mlp: layers with biases"),
        "width": Field(16, (int,), "cnn: channels of the first conv", bounds=(1, 10**5)),
        "seed": Field(None, (int, *NONE), "model seed; default: the top-level seed"),
    },
    "rule": {
        "name": Field("fa", (str,), "the learning rule (any registered rule)", _rule_names),
        "init": Field("gaussian", (str,), "how the feedback is drawn", INITS),
        "scale": Field(None, NUM + NONE, "feedback std; default: each layer's W std (e3, e4: 1)"),
        "seed": Field(None, (int, *NONE), "feedback seed; default: the top-level seed"),
        "options": Field({}, (dict,), "the rule's options (wm: lr, decay, batch)"),
    },
    "train": {
        "optimizer": Field("sgd", (str,), "the optimiser", OPTIMIZERS),
        "lr": Field(0.01, NUM, "learning rate", must=("> 0", _positive)),
        "momentum": Field(0.0, NUM, "SGD momentum", must=("in [0, 1)", lambda v: 0 <= v < 1)),
        "nesterov": Field(False, (bool,), "SGD with Nesterov momentum"),
        "betas": Field([0.9, 0.999], (list,), "Adam's betas"),
        "schedule": Field(
            "constant",
            (str,),
            "step: times gamma at each milestone; cosine: to 0 over the run; "
            "exponential: gamma over the run",
            SCHEDULES,
        ),
        "gamma": Field(0.1, NUM, "the schedule's factor"),
        "milestones": Field([], (list,), "steps at which the step schedule multiplies"),
        "warmup_steps": Field(0, (int,), "linear warm-up steps", must=_INT_GE0),
        "batch_size": Field(600, (int,), "training batch", bounds=(1, 10**7), must=_INT_GE1),
        "epochs": Field(1, NUM + NONE, "passes over the training data", bounds=(0, 10**6)),
        "steps": Field(None, (int, *NONE), "optimiser steps (not epochs)", bounds=(1, 10**9)),
        "eval_every": Field(
            100, (int,), "test every N steps (and at the start and end)", must=_INT_GE0
        ),
        "eval_batch": Field(2000, (int,), "test batch", bounds=(1, 10**7), must=_INT_GE1),
        "weight_decay": Field(
            0.0, NUM + (dict,), "a number, or {layer: lambda} with 'last' and 'default'"
        ),
        "mirror_every": Field(1, (int,), "wm: mirror phase every N steps", must=_INT_GE0),
        "checkpoint_dir": Field(None, (str, *NONE), "directory for checkpoints"),
        "checkpoint_every": Field(0, (int,), "checkpoint every N steps", must=_INT_GE0),
        "progress": Field(False, (bool,), "elapsed time and time left on stderr"),
    },
    "metrics": {
        "record_every": Field(
            0, (int,), "cheap metrics on the training batch every N steps", must=_INT_GE0
        ),
        "layers": Field(None, (list, *NONE), "the layers to record (default: all)"),
        "measure_every": Field(
            0, (int,), "all metrics, one extra backprop pass, every N steps", must=_INT_GE0
        ),
    },
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


def _check_type(where: str, value, types) -> None:
    if isinstance(value, float) and not math.isfinite(value) and float in types:
        raise ConfigError(f"config key {where} = {value!r} must be a finite number")
    ok = isinstance(value, types)
    if isinstance(value, bool) and bool not in types:
        ok = False
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if not ok:
        name = _typename(types)
        article = "an" if name[0] in "aeiou" else "a"
        raise ConfigError(f"config key {where} = {value!r} must be {article} {name}")


def _range(lo, hi) -> str:
    """Bounds in words: ">= 1", "in [0, 4096]", "in [1, 1e+07]"."""
    if hi is None:
        return f">= {lo}"
    return f"in [{lo}, {hi:.0e}]" if hi >= 10**6 else f"in [{lo}, {hi}]"


def _check_bounds(where: str, value, bounds) -> None:
    lo, hi = bounds
    if value is None or isinstance(value, bool):
        return
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(
            f"config key {where} = {value!r} is out of bounds; accepted: {_range(lo, hi)}"
        )


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
        check(isinstance(value, dict), f"config section [{key}] must be a table; got {value!r}")
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
            v = given.get(k, copy.deepcopy(f.default))
            f.check(f"{s}.{k}" if s else k, v)
            into[k] = v
    hidden = out["model"]["hidden"]
    widths = [hidden] if isinstance(hidden, int) else hidden
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise ConfigError(
            f"config key model.hidden = {hidden!r} is not accepted; accepted: an integer >= 1 "
            "or an array of them"
        )
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
        names = f.names()
        if names is not None and not isinstance(v, torch.dtype):  # dtype: a name or a dtype
            choice(k, v, names)
        if f.must is not None:
            check(f.must[1](v), f"{k} must be {f.must[0]}; got {v!r}")
        out[k] = v
    out["betas"] = tuple(out["betas"])
    out["milestones"] = tuple(out["milestones"])
    return out


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
