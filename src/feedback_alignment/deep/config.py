"""``fa train`` configuration: TOML (stdlib ``tomllib``), parsed, never evaluated.

Every key is checked against :data:`SCHEMA`; unknown keys and wrong types raise a
one-line :class:`~feedback_alignment.errors.ConfigError`. See docs/rules.md for the layout.
"""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path

from ..bounds import check_memory
from ..errors import ConfigError, check
from .convert import convert
from .data import load_dataset
from .models import build_model
from .rules import get_rule

NUM = (int, float)
# section -> key -> (accepted types, default). Top-level scalars live under "".
SCHEMA: dict[str, dict[str, tuple]] = {
    "": {
        "seed": ((int,), 0),
        "device": ((str,), "cpu"),
        "dtype": ((str,), "float32"),
        "threads": ((int,), 0),
    },
    "data": {
        "source": ((str,), "digits"),
        "path": ((str, type(None)), None),
        "train_limit": ((int, type(None)), None),
        "test_limit": ((int, type(None)), None),
        "normalize": ((bool, list), True),
    },
    "model": {
        "name": ((str,), "mlp"),
        "hidden": ((int, list), [256]),
        "activation": ((str,), "relu"),
        "bias": ((bool,), True),
        "width": ((int,), 16),
        "seed": ((int, type(None)), None),
    },
    "rule": {
        "name": ((str,), "fa"),
        "init": ((str,), "gaussian"),
        "scale": (NUM + (type(None),), None),
        "seed": ((int, type(None)), None),
        "options": ((dict,), {}),
    },
    "train": {
        "optimizer": ((str,), "sgd"),
        "lr": (NUM, 0.01),
        "momentum": (NUM, 0.0),
        "nesterov": ((bool,), False),
        "betas": ((list,), [0.9, 0.999]),
        "schedule": ((str,), "constant"),
        "gamma": (NUM, 0.1),
        "milestones": ((list,), []),
        "warmup_steps": ((int,), 0),
        "batch_size": ((int,), 600),
        "epochs": (NUM + (type(None),), 1),
        "steps": ((int, type(None)), None),
        "eval_every": ((int,), 100),
        "eval_batch": ((int,), 2000),
        "weight_decay": (NUM + (dict,), 0.0),
        "mirror_every": ((int,), 1),
        "checkpoint_dir": ((str, type(None)), None),
        "checkpoint_every": ((int,), 0),
        "progress": ((bool,), False),
    },
    "metrics": {
        "record_every": ((int,), 0),
        "layers": ((list, type(None)), None),
        "measure_every": ((int,), 0),
    },
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


# declared bounds: (lowest, highest) accepted; the highest guards memory and time
BOUNDS = {
    "threads": (0, 4096),
    "train.steps": (1, 10**9),
    "train.epochs": (0, 10**6),
    "train.batch_size": (1, 10**7),
    "train.eval_batch": (1, 10**7),
    "model.width": (1, 10**5),
    "data.train_limit": (1, None),
    "data.test_limit": (1, None),
}


def _check_bounds(where: str, value) -> None:
    lo, hi = BOUNDS[where]
    if value is None or isinstance(value, bool):
        return
    if value < lo or (hi is not None and value > hi):
        rng = (
            f">= {lo}"
            if hi is None
            else f"in [{lo}, {hi:.0e}]"
            if hi >= 10**6
            else f"in [{lo}, {hi}]"
        )
        raise ConfigError(f"config key {where} = {value!r} is out of bounds; accepted: {rng}")


def parse_config(config: dict) -> dict:
    """Validate ``config`` (nested dict) and fill defaults; returns a new dict."""
    check(isinstance(config, dict), f"config must be a table; got {type(config).__name__}")
    sections = [s for s in SCHEMA if s]
    out: dict = {}
    for key, value in config.items():
        if key in SCHEMA[""]:
            continue
        if key not in sections:
            accepted = sorted(list(SCHEMA[""]) + sections)
            raise ConfigError(f"unknown config key {key!r}; accepted: {', '.join(accepted)}")
        check(isinstance(value, dict), f"config section [{key}] must be a table; got {value!r}")
        for k in value:
            if k not in SCHEMA[key]:
                raise ConfigError(
                    f"unknown config key {key}.{k}; accepted in [{key}]: "
                    f"{', '.join(sorted(SCHEMA[key]))}"
                )
    for k, (types, default) in SCHEMA[""].items():
        v = config.get(k, default)
        _check_type(k, v, types)
        if k in BOUNDS:
            _check_bounds(k, v)
        out[k] = v
    for s in sections:
        given = config.get(s, {})
        out[s] = {}
        for k, (types, default) in SCHEMA[s].items():
            v = given.get(k, copy.deepcopy(default))
            _check_type(f"{s}.{k}", v, types)
            if f"{s}.{k}" in BOUNDS:
                _check_bounds(f"{s}.{k}", v)
            out[s][k] = v
    hidden = out["model"]["hidden"]
    widths = [hidden] if isinstance(hidden, int) else hidden
    if not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise ConfigError(
            f"config key model.hidden = {hidden!r} is not accepted; accepted: an integer >= 1 "
            "or an array of them"
        )
    return out


def load_config(path) -> dict:
    """Read and validate a TOML config file."""
    p = Path(path)
    check(p.is_file(), f"config file {str(p)!r} does not exist")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"config file {str(p)!r} is not valid TOML: {exc}".splitlines()[0]
        ) from None
    return parse_config(raw)


def build(cfg: dict):
    """(dataset, converted model, Trainer keyword arguments) from a parsed config."""
    d, m, r, t = cfg["data"], cfg["model"], cfg["rule"], cfg["train"]
    data = load_dataset(d["source"], d["path"])
    if d["train_limit"] or d["test_limit"]:
        data = data.limit(d["train_limit"], d["test_limit"])
    seed = cfg["seed"]
    mseed = seed if m["seed"] is None else m["seed"]
    name = m["name"]
    n_in = math.prod(data.shape)
    if name in ("mlp", "e3"):  # refuse before allocating: weights, feedback, grads, optimiser
        if name == "e3":
            widths = [m["hidden"] if isinstance(m["hidden"], int) else 1000]
        else:
            widths = [m["hidden"]] if isinstance(m["hidden"], int) else list(m["hidden"])
        sizes = [n_in, *widths, data.classes]
        params = sum(a * b + b for a, b in zip(sizes, sizes[1:], strict=False))
        itemsize = 8 if cfg["dtype"] == "float64" else 4
        check_memory(
            5 * itemsize * params,
            f"model.hidden = {m['hidden']!r} ({params:.3g} parameters)",
            "smaller hidden widths",
        )
    if name == "e3":
        hidden = m["hidden"] if isinstance(m["hidden"], int) else 1000
        if m["hidden"] != SCHEMA["model"]["hidden"][1] and not isinstance(m["hidden"], int):
            raise ConfigError(
                f"model.hidden for 'e3' is the width, an integer; got {m['hidden']!r}"
            )
        model = build_model("e3", hidden=hidden, inputs=n_in, classes=data.classes, seed=mseed)
    elif name == "mlp":
        hidden = [m["hidden"]] if isinstance(m["hidden"], int) else list(m["hidden"])
        model = build_model(
            "mlp",
            sizes=[n_in, *hidden, data.classes],
            activation=m["activation"],
            bias=m["bias"],
            seed=mseed,
        )
    elif name == "cnn":
        c, h, w = data.shape
        check(h == w, f"model 'cnn' needs square images; data has {h}x{w}")
        model = build_model(
            "cnn", in_channels=c, classes=data.classes, image=h, width=m["width"], seed=mseed
        )
    else:
        model = build_model(name)  # raises the one-line "unknown model" error
    scale = r["scale"]
    if scale is None and name == "e3":
        scale = 1.0  # the paper: B ~ N(0, 1) like W and beta
    rseed = seed if r["seed"] is None else r["seed"]
    kw = {"input_shape": data.shape} if get_rule(r["name"]).direct else {}
    model = convert(
        model, r["name"], init=r["init"], scale=scale, seed=rseed, options=r["options"], **kw
    )
    train = dict(t)
    train["betas"] = tuple(train["betas"])
    train["milestones"] = tuple(train["milestones"])
    train["record_every"] = cfg["metrics"]["record_every"]
    train["measure_every"] = cfg["metrics"]["measure_every"]
    train["record_layers"] = cfg["metrics"]["layers"]
    train.update(seed=seed, device=cfg["device"], dtype=cfg["dtype"], normalize=d["normalize"])
    return data, model, train
