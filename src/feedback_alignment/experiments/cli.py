"""``fa sweep``, ``fa results`` and ``fa plot``: run a study spec, export and plot its store.

Exit status: 0 success, 2 bad input (one line on stderr, nothing written), 1 a failure
while running (some run failed; the store says why, a rerun redoes it), 130 interrupted.
"""

from __future__ import annotations

import json
import sys

from ..cli import keywords
from ..errors import ConfigError, printable
from ..executors import Inline, from_text
from ..executors import add_flags as add_executor_flags
from ..outputs import add_out_flags
from ..progress import add_flags as add_progress_flags


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run (or resume) a study spec into a SQLite store",
        description="Run every run of a TOML study spec into a store; running it again "
        "skips finished runs. See docs/sweeps.md.",
        func=_sweep,
    )
    p.add_argument("spec", help="the study spec (TOML)")
    p.add_argument("--store", required=True, help="the study's SQLite file (created)")
    add_executor_flags(p, sweep=True)
    p.add_argument("--profile", default=None, help="a profile defined in the spec")
    p.add_argument("--pack", default=None, help="'auto' or the most runs per ensemble")
    p.add_argument("--dry-run", action="store_true", help="validate and plan, run nothing")
    p.add_argument(
        "--extend",
        action="store_true",
        help="accept a changed spec that keeps every run already in the store and adds runs",
    )
    add_progress_flags(p)

    r = _store_command(sub, "results", "export a study store as CSV or Parquet", _results)
    r.add_argument("--format", default="csv", help="csv (default) or parquet")
    add_out_flags(r, "output file (csv: stdout; parquet: STUDY.parquet)")
    r.add_argument("--table", default="runs", help="runs (default) or series (long form)")
    r.add_argument("--status", default=None, help="only runs with this status")

    q = _store_command(sub, "plot", "plot a study store (PNG/PDF)", _plot)
    q.add_argument("--kind", default="final", help="final (metric vs field) or curve")
    q.add_argument("--metric", default=None, help="default: alignment (final), mse (curve)")
    q.add_argument("--x", default="p", help="field on the x axis (final; default p)")
    q.add_argument("--by", default="lam", help="one line per value of this field; 'none'")
    q.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE")
    add_out_flags(q, ".png or .pdf (repeatable)", action="append", required=True)
    q.add_argument("--logx", action="store_true", default=None)
    q.add_argument("--logy", action="store_true", default=None)
    q.add_argument("--title", default=None)


def _store_command(sub, name: str, help: str, func):
    """``fa NAME STORE``: a command that reads a study store."""
    p = sub.add_parser(name, func=func, help=help)
    p.add_argument("store", help="the study's SQLite file")
    return p


def _pack(value):
    if value is None or value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--pack {value!r} is not accepted; accepted: 'auto' or an integer >= 1")
    return n


def _sweep(args) -> int:
    from ..outputs import check_input_file
    from ..twolayer.native import check_environment
    from .planner import warnings_for
    from .study import check_store, prepare, run_study

    check_environment()  # FA_NATIVE and friends: one line now, not every run failing later
    check_input_file(args.spec, "spec file")
    ex = from_text(args.executor, workers=args.workers, scheduler=args.scheduler)
    pack = _pack(args.pack)
    spec, runs, packs = prepare(args.spec, profile=args.profile, pack=pack)
    if isinstance(ex, Inline) and ex.threads is not None:  # inline:T
        threads = spec.study["threads"]
        raise ConfigError(
            f"--executor {args.executor!r}: a sweep's packs run on the spec's study.threads "
            f"({threads}), not on T; accepted: --executor inline, with threads = T in [study]"
        )
    check_store(args.store, spec, runs, extend=args.extend)
    for line in warnings_for(runs, packs):
        print(f"fa sweep: warning: {line}", file=sys.stderr)
    if args.dry_run:
        sizes = sorted({len(pk) for pk in packs})
        print(f"{printable(spec.name)}: {len(runs)} runs in {len(packs)} packs (sizes {sizes})")
        return 0
    try:
        report = run_study(
            spec,
            args.store,
            executor=ex,
            pack=pack,
            **keywords(args, "profile", "progress", "extend"),
        )
    finally:
        ex.close()
    print(f"fa sweep: {report.summary()}; store {printable(report.store)}", file=sys.stderr)
    if report.interrupted:
        return 130
    if report.failed:
        for reason in report.failures:
            print(f"fa sweep: failed: {reason}", file=sys.stderr)
        return 1
    return 0


def _results(args) -> int:
    from .export import export

    text = export(args.store, args.format, args.out, **keywords(args, "table", "status", "force"))
    if args.format == "csv" and text is not None:
        sys.stdout.write(text)
    elif args.format == "parquet":
        print(text)
    return 0


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _plot(args) -> int:
    from . import plots

    where = {}
    for item in args.where:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ConfigError(f"--where {item!r} is not accepted; accepted: FIELD=VALUE")
        where.setdefault(k, []).append(_value(v))
    by = None if args.by in ("none", "") else args.by
    drawing = {"where": where, **keywords(args, "out", "logx", "logy", "title", "force")}
    if args.kind == "final":
        plots.plot_final(args.store, args.metric or "alignment", args.x, by, **drawing)
    elif args.kind == "curve":
        plots.plot_curves(args.store, args.metric or "mse", by, **drawing)
    else:
        raise ConfigError(f"--kind {args.kind!r} is not accepted; accepted: final, curve")
    print(" ".join(args.out))
    return 0
