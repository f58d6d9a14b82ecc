"""Progress on stderr for the long commands: elapsed time and an estimate of the time left.

The estimate comes from work known before the run starts, not from a count of tasks: the
caller gives each piece of work a cost (:func:`twolayer_work` for the two-layer engine,
:func:`deep_work` for a deep network) and reports pieces as they finish. The time left is
the work left divided by the measured rate. Work of different kinds (``"twolayer"``,
``"deep"``) gets its own measured rate once some of it has finished; before that the
overall rate stands in, which is why the costs are in one unit (multiply-adds).

Shown only when the stream is a terminal, unless forced. On a terminal one line is
redrawn in place; elsewhere (forced, e.g. into a log file) whole lines are written, at
most one every ``every`` seconds, and never a carriage return.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable


def add_flags(parser) -> None:
    """``--progress`` / ``--no-progress`` (alias ``--quiet``) into ``args.progress``:
    True, False, or None when neither is given (then :func:`wanted` asks the terminal)."""
    bar = parser.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="progress with elapsed time and time left on stderr even when it is not a "
        "terminal (default: only on a terminal)",
    )
    bar.add_argument("--no-progress", "--quiet", dest="progress", action="store_false")


def wanted(flag: bool | None, stream=None) -> bool:
    """``flag`` if given (``--progress`` / ``--no-progress``), else: is ``stream`` a terminal."""
    if flag is not None:
        return bool(flag)
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def twolayer_work(members: int, steps: int, p: int, n: int, d: int) -> float:
    """Multiply-adds of ``members`` two-layer networks of width p, n samples in d
    dimensions, trained for ``steps`` full-batch steps (p n (n + d) per member-step)."""
    return float(members) * float(steps) * float(p) * float(n) * float(n + d)


def deep_work(steps: int, batch: int, layers, copies: int = 1) -> float:
    """Multiply-adds of ``steps`` SGD steps on ``batch`` samples through dense ``layers``
    [(inputs, outputs), ...]: forward, error and weight gradient, 3 per weight and sample."""
    per = sum(int(i) * int(o) for i, o in layers)
    return 3.0 * float(copies) * float(steps) * float(batch) * per


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Progress of a job whose work is known up front, by kind.

    ``work``: the total cost, a number or ``{kind: total}``; ``label``: the line's first
    word; ``enabled``: ``None`` means "when ``stream`` is a terminal" (:func:`wanted`);
    ``clock``: seconds (``time.monotonic``; tests pass a fake); ``every``: seconds between
    lines when not on a terminal; ``tick``: on a terminal, redraw every ``tick`` seconds
    from a background thread so the elapsed time moves between events (``None``: only on
    events). Use :meth:`done` as work finishes, :meth:`note` for a message, :meth:`close`
    at the end (or use it as a context manager).
    """

    def __init__(
        self,
        work: float | dict[str, float],
        *,
        label: str = "",
        stream=None,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        every: float = 30.0,
        tick: float | None = 1.0,
        redraw: float = 0.2,
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = wanted(enabled, self.stream)
        self.tty = self.enabled and wanted(None, self.stream)
        self._reset(work)
        self.label, self.status = label, ""
        self.clock, self.every, self.redraw = clock, every, redraw
        self.t0 = self.t_event = clock()
        self.left_at_event: float | None = None
        self._last_line = -float("inf")
        self._drawn = self._dirty = False
        # nothing is drawn before there is work to show (a job that fails its input
        # checks before set_work leaves stderr to its one-line error)
        self._live = sum(self.total.values()) > 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if self.tty and tick:
            self._thread = threading.Thread(target=self._tick, args=(tick,), daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ the estimate
    def _reset(self, work: float | dict[str, float]) -> None:
        """The total work by kind, none of it done."""
        self.total = dict(work) if isinstance(work, dict) else {"": float(work)}
        self.kind_done = dict.fromkeys(self.total, 0.0)
        self.kind_time = dict.fromkeys(self.total, 0.0)
        self.kind_resumed = dict.fromkeys(self.total, 0.0)  # done before this run: no rate

    def fraction(self) -> float:
        total = sum(self.total.values())
        done = sum(self.kind_done.values()) + sum(self.kind_resumed.values())
        return min(1.0, done / total) if total > 0 else 0.0

    def _left(self) -> float | None:
        done, spent = sum(self.kind_done.values()), sum(self.kind_time.values())
        if done <= 0 or spent <= 0:
            return None
        left = 0.0
        for k, total in self.total.items():
            rest = max(0.0, total - self.kind_done[k] - self.kind_resumed[k])
            if rest:
                kd, kt = self.kind_done[k], self.kind_time[k]
                left += rest * (kt / kd if kd > 0 and kt > 0 else spent / done)
        return left

    def estimate(self) -> tuple[float, float | None]:
        """(seconds elapsed, seconds left or None before anything finished). Between
        events the time left counts down from the last estimate."""
        now = self.clock()
        left = self.left_at_event
        if left is not None:
            left = max(0.0, left - (now - self.t_event))
        return now - self.t0, left

    def line(self) -> str:
        elapsed, left = self.estimate()
        parts = [p for p in (self.label, self.status) if p]
        head = ": ".join(parts) if parts else "progress"
        rest = "~" + duration(left) + " left" if left is not None else "time left not known yet"
        return f"{head} | {100 * self.fraction():.0f}% done | elapsed {duration(elapsed)} | {rest}"

    # ------------------------------------------------------------------ events
    def done(self, work: float, kind: str = "", status: str | None = None) -> None:
        """Record ``work`` of ``kind`` finished; the time since the last event is its cost."""
        with self._lock:
            now = self.clock()
            kind = kind if kind in self.total else next(iter(self.total))
            self.kind_time[kind] += now - self.t_event
            self.kind_done[kind] += float(work)
            self.t_event = now
            self.left_at_event = self._left()
            if status is not None:
                self.status = status
            self._dirty = self._live = True
        self._show(force=self.fraction() >= 1.0)

    def resumed(self, work: float, kind: str = "") -> None:
        """Record ``work`` of ``kind`` as done by an earlier run (a resume): it counts
        towards the share done but not towards the measured rate."""
        with self._lock:
            kind = kind if kind in self.total else next(iter(self.total))
            self.kind_resumed[kind] += float(work)
            self._dirty = True

    def set_work(self, work: float | dict[str, float]) -> None:
        """Set the total work (known once the job is planned); the time starts now."""
        with self._lock:
            self._reset(work)
            self.t_event = self.clock()
            self.left_at_event = None
            self._live = True

    def set_status(self, status: str) -> None:
        """Change the text after the label (e.g. the stage) and show it."""
        self.status = status
        self._dirty = self._live = True
        self._show(force=True)

    def note(self, message: str) -> None:
        """A message on its own line (kept above the redrawn line on a terminal)."""
        if not self.enabled:
            return
        with self._lock:
            self._clear()
            self.stream.write(message + "\n")
            self.stream.flush()
        if self.tty:
            self._show(force=True)

    def close(self) -> None:
        """Stop redrawing; leave the final line on a terminal (a newline after it)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if not self.enabled:
            return
        if self.tty or self._dirty:
            self._show(force=True)
        with self._lock:
            if self.tty and self._drawn:
                self.stream.write("\n")
                self.stream.flush()
                self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ output
    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False

    def _show(self, force: bool = False) -> None:
        if not self.enabled or not self._live:
            return
        with self._lock:
            now = self.clock()
            gap = self.redraw if self.tty else self.every
            if not force and now - self._last_line < gap:
                return
            self._last_line = now
            if self.tty:
                self.stream.write("\r\x1b[K" + self.line())
                self._drawn = True
            else:
                self.stream.write(self.line() + "\n")
                self._dirty = False
            self.stream.flush()

    def _tick(self, period: float) -> None:
        while not self._stop.wait(period):
            self._show(force=True)
