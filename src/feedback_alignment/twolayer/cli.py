"""``fa demo``: a small run of the two-layer engine (placeholder until the engine lands)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="train a small ensemble of two-layer FA/BP networks")
    p.add_argument("--out", default=None, help="directory for a JSON summary")
    p.set_defaults(func=_run)


def _run(args) -> int:
    raise NotImplementedError
