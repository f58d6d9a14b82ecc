"""The ``fa`` command line.

Each subcommand lives beside the code it drives and registers itself through a
``register(subparsers)`` function, declaring ``fa NAME`` and the function that runs it
with ``subparsers.add_parser(NAME, func=F, ...)``; this module only collects them. Exit
status: 0 success, 2 bad input (one line on stderr), 1 a failure while running (a write
that failed, e.g. a full disk on a file or on standard output: one line naming it and
the cause), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM, handled as Ctrl-C is:
every file whole, one line). A closed pipe on standard output (``fa results S | head``)
ends the command quietly with status 141.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import signal
import sys
import threading

from .errors import ConfigError, WriteError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the signal lands; every handler of Ctrl-C handles it too."""


_terminated: list[int] = []


def _on_sigterm(signum, frame):
    _terminated.append(signum)
    raise Terminated


def _stdout_failed(command: str, exc: OSError) -> int:
    """Standard output cannot be written: silence it (so the exit does not fail again)."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):  # pragma: no cover - no real stdout
        pass
    if exc.errno == errno.EPIPE:
        return 141
    print(
        f"fa {command}: error: cannot write to standard output: {exc.strerror or exc}",
        file=sys.stderr,
    )
    return 1


# Modules that provide a ``register(subparsers)`` function, one subcommand family each.
COMMAND_MODULES = [
    "feedback_alignment.twolayer.cli",
    "feedback_alignment.deep.cli",
    "feedback_alignment.reproduce.cli",
    "feedback_alignment.experiments.cli",
]


def keywords(args: argparse.Namespace, *names: str) -> dict:
    """The options ``names`` of ``args``, as the keywords of the function a command calls
    (each option's name is the keyword's)."""
    return {name: getattr(args, name) for name in names}


class _Commands(argparse._SubParsersAction):
    """The subcommands: ``sub.add_parser(NAME, func=F, ...)`` declares ``fa NAME``, which
    :func:`main` runs as ``F(args)``."""

    def add_parser(self, name, *, func, **kwargs):
        parser = super().add_parser(name, **kwargs)
        parser.set_defaults(func=func)
        return parser


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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", action=_Commands)
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
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGTERM, _on_sigterm)
    _terminated.clear()
    try:
        try:
            rc = int(args.func(args) or 0)
            sys.stdout.flush()
        except ConfigError as exc:
            print(f"fa {args.command}: error: {exc}", file=sys.stderr)
            return 2
        except WriteError as exc:
            print(f"fa {args.command}: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            if not _terminated:
                print(f"fa {args.command}: interrupted", file=sys.stderr)
                return 130
            print(f"fa {args.command}: terminated (SIGTERM)", file=sys.stderr)
            return 143
        except OSError as exc:
            if exc.filename is None and exc.errno in (errno.EPIPE, errno.ENOSPC, errno.EIO):
                return _stdout_failed(args.command, exc)  # print() or write() to stdout
            where = f" {exc.filename!r}" if exc.filename is not None else ""
            print(f"fa {args.command}: error:{where} {exc.strerror or exc}", file=sys.stderr)
            return 1
        # a command that stopped on SIGTERM after handling it (fa sweep: its summary line)
        return 143 if _terminated and rc == 130 else rc
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
