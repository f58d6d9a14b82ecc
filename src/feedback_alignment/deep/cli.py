"""``fa train CONFIG``: train a classifier with a feedback rule from a TOML config."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

from ..errors import ConfigError, DivergenceError
from ..outputs import add_out_flags, atomic_write_text, check_input_file, check_output_file
from ..progress import add_flags as add_progress_flags
from ..progress import wanted


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a classifier with a feedback rule (the rules: docs/rules.md)",
        description="Train from a TOML config (layout: docs/rules.md); print a summary.",
        func=_run,
    )
    p.add_argument("config", help="TOML file")
    add_out_flags(p, "JSON file of every recorded metric series")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set rule.name=kp --set train.lr=0.05 "
        "(VALUE is a TOML value; bare words are strings)",
    )
    add_progress_flags(p)


def _parse_value(text: str):
    from ..tomlfile import check_nesting

    check_nesting(text, f"--set value {text[:40]!r}")  # before tomllib's recursion meets it
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Set ``section.key=value`` (or top-level ``key=value``) entries in ``raw``."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE; got {item!r}")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) > 2 or not all(parts):
            raise ConfigError(f"--set key {key!r} must be 'key' or 'section.key'")
        target = raw
        if len(parts) == 2:
            target = raw.setdefault(parts[0], {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {key!r}: {parts[0]!r} is not a section")
        target[parts[-1]] = _parse_value(value.strip())
    return raw


def _run(args) -> int:
    from .config import read_toml
    from .trainer import check_checkpoint_dir, run_from_config

    path = Path(args.config)
    check_input_file(path, "config")
    raw = read_toml(path)
    raw = apply_overrides(raw, args.set)
    # every output is checked before the training starts (nothing is lost at the end)
    out = None if args.out is None else check_output_file(args.out, inputs=[path], force=args.force)
    train = raw.get("train")
    ckpt = train.get("checkpoint_dir") if isinstance(train, dict) else None
    if isinstance(ckpt, str) and ckpt:
        check_checkpoint_dir(ckpt, inputs=[path])
    progress = args.progress
    if progress is None and not (isinstance(train, dict) and "progress" in train):
        progress = wanted(None)  # neither flag nor config: on when stderr is a terminal
    try:
        result = run_from_config(raw, progress=progress)
    except DivergenceError as exc:
        print(f"fa train: {exc}", file=sys.stderr)
        return 1
    cfg = result["config"]
    print(
        f"rule {cfg['rule']['name']}, model {cfg['model']['name']}, data {cfg['data']['source']}: "
        f"{result['step'][-1] if result['step'] else 0} steps, final loss "
        f"{result['loss'][-1]:.4f}, test accuracy {result['final_test_accuracy']:.4f}"
    )
    if out is not None:
        atomic_write_text(out, json.dumps(result, allow_nan=True))
        print(f"results written to {out}")
    return 0
