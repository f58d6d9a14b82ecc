"""The ``fa`` command line.

Each subcommand lives beside the code it drives and registers itself through a
``register(subparsers)`` function; this module only collects them. Exit status:
0 success, 2 bad input (one line on stderr), 1 a failure while running.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import ConfigError

# Modules that provide a ``register(subparsers)`` function, one subcommand family each.
COMMAND_MODULES = [
    "feedback_alignment.twolayer.cli",
    "feedback_alignment.deep.cli",
    "feedback_alignment.reproduce.cli",
    "feedback_alignment.experiments.cli",
]


class _Parser(argparse.ArgumentParser):
    """argparse with one line for a bad command line (no usage block); subcommands too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="fa", description="Feedback alignment: training with random feedback weights."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a bad command line: one line on stderr, status 2
        if exc.code in (0, None):  # --help, --version
            raise
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"fa {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
