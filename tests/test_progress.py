"""Progress on stderr: the time-left estimate against hand-computed values (fake clock),
terminal vs file output (fake TTY), and the three long commands wired to it."""

from __future__ import annotations

import io

import pytest

from feedback_alignment import progress as P
from feedback_alignment.cli import main
from feedback_alignment.progress import Progress


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def _meter(work, tty, **kw):
    clock, out = Clock(), Stream(tty)
    kw.setdefault("enabled", True)
    return Progress(work, stream=out, clock=clock, tick=None, **kw), clock, out


def test_wanted_follows_the_flag_then_the_terminal():
    assert P.wanted(True, Stream(False)) and not P.wanted(False, Stream(True))
    assert P.wanted(None, Stream(True)) and not P.wanted(None, Stream(False))
    assert not P.wanted(None, object())  # no isatty at all


def test_duration():
    got = [P.duration(s) for s in (0, 42.4, 185, 7620, -3)]
    assert got == ["0s", "42s", "3m05s", "2h07m", "0s"]


def test_time_left_is_work_left_over_the_measured_rate():
    m, clock, _ = _meter(100.0, tty=False)
    assert m.estimate() == (0.0, None)
    clock.t += 10
    m.done(25)  # 25 units in 10 s: 75 left take 30 s
    assert m.estimate() == (10.0, 30.0)
    clock.t += 12  # between events the estimate counts down
    assert m.estimate() == (22.0, 18.0)
    clock.t += 8
    m.done(25)  # 50 in 30 s: 50 left take 30 s
    assert m.estimate() == (30.0, 30.0)
    assert m.fraction() == 0.5


def test_each_kind_of_work_gets_its_own_rate():
    m, clock, _ = _meter({"twolayer": 100.0, "deep": 300.0}, tty=False)
    clock.t += 10
    m.done(100, "twolayer")  # 10 units/s; deep not measured yet: the overall rate stands in
    assert m.estimate()[1] == pytest.approx(30.0)
    clock.t += 60
    m.done(100, "deep")  # deep runs at 100 units per 60 s: 200 left take 120 s
    assert m.estimate()[1] == pytest.approx(120.0)


def test_file_output_is_whole_lines_at_most_every_interval():
    m, clock, out = _meter(10.0, tty=False, label="job", every=30.0)
    for _ in range(9):
        clock.t += 5
        m.done(1, status="x")
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 2  # at 5 s and at 35 s, not one per event
    assert lines[0] == "job: x | 10% done | elapsed 5s | ~45s left"
    m.note("stage done")
    clock.t += 5
    m.done(1)  # the last piece always shows
    m.close()
    lines = out.getvalue().splitlines()
    assert lines[-2:] == ["stage done", "job: x | 100% done | elapsed 50s | ~0s left"]
    m.close()  # nothing new: no repeated line
    assert out.getvalue().splitlines() == lines


def test_terminal_output_redraws_one_line_and_ends_it():
    m, clock, out = _meter(4.0, tty=True, enabled=None, label="job")
    assert m.enabled and m.tty
    clock.t += 1
    m.done(1)
    assert out.getvalue() == "\r\x1b[Kjob | 25% done | elapsed 1s | ~3s left"
    m.note("hello")
    assert out.getvalue().endswith("\r\x1b[Khello\n\r\x1b[Kjob | 25% done | elapsed 1s | ~3s left")
    m.close()
    assert out.getvalue().endswith("\n") and out.getvalue().count("\n") == 2


def test_not_a_terminal_and_not_forced_writes_nothing():
    m, clock, out = _meter(4.0, tty=False, enabled=None)
    clock.t += 1
    m.done(4)
    m.note("x")
    m.close()
    assert out.getvalue() == ""


def test_tick_thread_redraws_and_stops():
    out = Stream(True)
    m = Progress(1.0, stream=out, enabled=True, tick=0.01)
    import time

    time.sleep(0.1)
    m.close()
    assert out.getvalue().count("\r") >= 3 and m._thread is None


def test_reproduce_work_is_known_for_every_task_of_every_profile():
    from feedback_alignment.reproduce import e1, e2, e3
    from feedback_alignment.reproduce.profiles import PROFILES, get_profile
    from feedback_alignment.reproduce.work import plan_work

    mods = {"E1": e1, "E2": e2, "E3": e3}
    for name in PROFILES:
        prof = get_profile(name)
        costs, totals = plan_work(list(mods), lambda e, prof=prof: mods[e].tasks(prof, 0))
        assert set(totals) == {"twolayer", "deep"}
        assert all(c > 0 for cs in costs.values() for c in cs)
    # the plateau rule's minimum grows as sqrt(p): cost ~ p^1.5 at equal repetitions
    from feedback_alignment.reproduce.work import task_work

    kw = {"activation": "relu", "reps": 2, "min_base": 5000}
    ratio = task_work("E1", {**kw, "p": 800}) / task_work("E1", {**kw, "p": 200})
    assert ratio == pytest.approx(4 * 10101 / 5050)  # p x the authors' minimum steps


def _smoke_e2(tmp_path, monkeypatch, tty, *flags):
    err = Stream(tty)
    monkeypatch.setattr("sys.stderr", err)
    out = tmp_path / ("tty" if tty else "pipe") / "_".join(flags or ("default",))
    args = ["reproduce", "E2", "--profile", "smoke", "--out", str(out), "--executor", "inline"]
    assert main([*args, *flags]) == 0
    return err.getvalue()


@pytest.mark.usefixtures("one_thread")
def test_fa_reproduce_progress_forced_into_a_file(tmp_path, monkeypatch):
    """A real (smoke) job: whole lines from its known work, no carriage returns."""
    text = _smoke_e2(tmp_path, monkeypatch, False, "--progress")
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0] == "E2: 5 packs, 0 already in the store, 5 to run (executor inline)"
    assert lines[1].startswith("fa reproduce: 0/5 packs | 0% done | elapsed ")
    assert lines[1].endswith("| time left not known yet")
    bars = [x for x in lines[1:-1] if x.startswith("fa reproduce: ")]
    assert bars == lines[1:-1]
    assert bars[-1].startswith("fa reproduce: 5/5 packs | 100% done | elapsed ")
    assert lines[-1].startswith("report: E2 from the store in ")
    # the same command again: every pack is in the store, counted as done
    text = _smoke_e2(tmp_path, monkeypatch, False, "--progress")
    lines = text.splitlines()
    assert lines[0] == "E2: 5 packs, 5 already in the store, 0 to run (executor inline)"
    assert lines[1].startswith("fa reproduce: 5/5 packs | 100% done")


def test_resumed_work_counts_as_done_but_not_towards_the_rate():
    now = [0.0]
    m = Progress({"a": 10.0}, enabled=True, stream=Stream(False), clock=lambda: now[0])
    m.resumed(5.0, "a")
    assert m.fraction() == 0.5
    now[0] = 2.0
    m.done(1.0, "a")  # 1 unit in 2 s: the 4 left take 8 s, whatever was resumed
    assert m.fraction() == 0.6 and m.estimate()[1] == pytest.approx(8.0)


@pytest.mark.parametrize(
    ("tty", "flags", "shown"),
    [
        (True, [], True),
        (False, [], False),
        (False, ["--progress"], True),
        (True, ["--quiet"], False),
    ],
)
def test_fa_reproduce_progress_flags(tmp_path, monkeypatch, tty, flags, shown):
    """The same job as above, faked: which flags and streams get the progress shown."""
    from feedback_alignment.reproduce import cli as rcli

    def fake(*a, progress, **kw):
        progress.set_work(1.0)
        progress.note("E2: running")
        progress.done(1.0)
        return {"report": "r", "verdicts": []}

    monkeypatch.setattr(rcli, "reproduce", fake)
    err = Stream(tty)
    monkeypatch.setattr("sys.stderr", err)
    assert main(["reproduce", "E2", "--out", str(tmp_path), *flags]) == 0
    assert ("E2: running" in err.getvalue()) == shown
    assert ("100% done" in err.getvalue()) == shown


def test_fa_sweep_progress_forced_into_a_file(tmp_path, monkeypatch):
    from feedback_alignment.experiments import run_study

    err = Stream(False)
    monkeypatch.setattr("sys.stderr", err)
    spec = {
        "study": {"name": "tiny", "repetitions": 2, "seed": 1, "pack": 1},
        "fixed": {"n": 8, "d": 6, "steps": 20, "activation": "tanh", "metrics": ["mse"]},
        "grid": {"p": [8, 16]},
    }
    rep = run_study(spec, tmp_path / "a.sqlite", executor="inline", progress=True)
    assert rep.ok
    text = err.getvalue()
    assert "\r" not in text
    assert text.splitlines()[-1].startswith("fa sweep tiny: 4/4 runs | 100% done | elapsed")
    # the first pack done is a p = 16 one (largest work first): 2/3 of the work is left
    assert text.splitlines()[0].startswith("fa sweep tiny: 1/4 runs | 33% done")
    # not a terminal, not forced: nothing
    err.truncate(0)
    run_study(spec, tmp_path / "b.sqlite", executor="inline")
    assert err.getvalue() == ""


TRAIN = """
seed = 2
[data]
source = "digits"
[model]
name = "mlp"
hidden = [16]
[rule]
name = "fa"
[train]
lr = 0.05
batch_size = 64
steps = 12
eval_every = 5
"""


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize(
    ("tty", "flags", "config", "shown"),
    [
        (True, [], "", "tty"),
        (False, [], "", ""),
        (False, ["--progress"], "", "lines"),
        (True, ["--quiet"], "", ""),
        (True, [], "progress = false\n", ""),
        (False, [], "progress = true\n", "lines"),
    ],
)
def test_fa_train_progress(tmp_path, monkeypatch, tty, flags, config, shown):
    cfg = tmp_path / "t.toml"
    cfg.write_text(TRAIN + config)
    err = Stream(tty)
    monkeypatch.setattr("sys.stderr", err)
    assert main(["train", str(cfg), *flags]) == 0
    text = err.getvalue()
    if not shown:
        assert text == ""
        return
    assert ("\r" in text) == (shown == "tty")
    last = text.replace("\r\x1b[K", "\n").strip().splitlines()[-1]
    assert last.startswith("train: step 12/12, loss ")
    assert ", test accuracy " in last and "| 100% done | elapsed" in last


def test_bad_input_on_a_terminal_leaves_only_the_one_line_error(tmp_path, monkeypatch):
    err = Stream(True)
    monkeypatch.setattr("sys.stderr", err)
    assert main(["reproduce", "E9", "--profile", "smoke", "--out", str(tmp_path / "o")]) == 2
    assert err.getvalue().count("\n") == 1 and "\r" not in err.getvalue()
    assert "E9" in err.getvalue()
