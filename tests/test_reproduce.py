"""fa reproduce: the smoke profile end to end (files, columns, verdicts, determinism) and
refusals of bad input that touch nothing."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest

from feedback_alignment.cli import main
from feedback_alignment.errors import ConfigError
from feedback_alignment.reproduce import reproduce
from feedback_alignment.reproduce.profiles import (
    DROPOUTS,
    E3_LAMS,
    LAMS,
    PROFILES,
    get_profile,
)
from feedback_alignment.reproduce.verdicts import (
    FAILS,
    HOLDS,
    INFO_AGREES,
    INFO_DEVIATES,
    NOT_SHOWN,
)

VERDICTS = {HOLDS, NOT_SHOWN, FAILS}


def _read(path):
    with open(path, newline="") as f:
        r = csv.reader(f)
        header = next(r)
        return header, list(r)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    summary = reproduce("all", profile="smoke", out=out, seed=3)
    return out, summary


def test_smoke_files_and_columns(smoke):
    out, summary = smoke
    for rel in ("E1/alignment", "E2/loss", "E3/metrics", "E4/metrics", "E5/alignment"):
        for ext in ("png", "pdf"):
            f = out / f"{rel}.{ext}"
            assert f.is_file() and f.stat().st_size > 5000, f
        assert (out / f"{rel}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{rel}.pdf").read_bytes()[:5] == b"%PDF-"
    prof = get_profile("smoke")
    h, rows = _read(out / "E1/alignment.csv")
    assert h == ["activation", "lam", "p", "rep", "alignment", "steps"]
    # every activation x lambda x width x rep, once
    expected = {
        (a, float(lam), p, r)
        for a in LAMS
        for lam in LAMS[a]
        for p in prof.e1.widths
        for r in range(prof.e1.reps)
    }
    got = [(a, float(lam), int(p), int(r)) for a, lam, p, r, _, _ in rows]
    assert sorted(got) == sorted(expected)
    # the run-length rule: at least its minimum; past it, a stop just after a check
    assert all(-1 <= float(r[4]) <= 1 for r in rows)
    for r in rows:
        steps, least = int(r[5]), prof.e1.plateau_min(int(r[2]))
        assert steps == least or (steps > least and steps % prof.e1.check_every == 0), r

    h, rows = _read(out / "E2/loss.csv")
    assert h == ["activation", "lam", "rep", "step", "mse"]
    steps = sorted({int(r[3]) for r in rows})
    assert steps[0] == 0 and steps[-1] == prof.e2.steps
    assert len(rows) == 3 * 4 * prof.e2.reps * len(steps)
    assert all(float(r[4]) > 0 and math.isfinite(float(r[4])) for r in rows)

    h, rows = _read(out / "E3/metrics.csv")
    assert h == ["lam", "rep", "step", "alignment", "test_accuracy"]
    assert len(rows) == len(E3_LAMS) * prof.e3.reps * (prof.e3.steps + 1)
    evaluated = {int(r[2]) for r in rows if r[4] != ""}
    assert evaluated == set(range(0, prof.e3.steps + 1, prof.e3.eval_every)) | {prof.e3.steps}
    assert all(0 <= float(r[4]) <= 1 for r in rows if r[4] != "")
    assert all(-1 <= float(r[3]) <= 1 for r in rows)

    # E4: both layers' alignments every step, test accuracy every eval_every steps
    h, rows = _read(out / "E4/metrics.csv")
    assert h == ["lam", "rep", "step", "fc2_alignment", "fc2_weight_alignment",
                 "fc3_alignment", "fc3_weight_alignment", "test_accuracy"]  # fmt: skip
    assert len(rows) == len(E3_LAMS) * prof.e4.reps * (prof.e4.steps + 1)
    assert all(-1 <= float(v) <= 1 for r in rows for v in r[3:7])
    evaluated = {int(r[2]) for r in rows if r[7] != ""}
    assert evaluated == set(range(0, prof.e4.steps + 1, prof.e4.eval_every)) | {prof.e4.steps}
    # the backprop baselines: test accuracy of every lambda at E3's / E4's evaluation steps
    for exp, s in (("E3", prof.e3), ("E4", prof.e4)):
        h, rows = _read(out / f"{exp}/backprop.csv")
        assert h == ["lam", "rep", "step", "test_accuracy"]
        assert len(rows) == len(s.bp_lams) * s.bp_reps * len(evaluated)
        assert all(0 <= float(r[3]) <= 1 for r in rows)
    h, rows = _read(out / "E5/alignment.csv")
    assert h == ["activation", "dropout", "p", "rep", "alignment", "steps"]
    expected = {
        (a, q, p, r)
        for a in DROPOUTS
        for q in DROPOUTS[a]
        for p in prof.e5.widths
        for r in range(prof.e5.reps)
    }
    assert sorted((a, float(q), int(p), int(r)) for a, q, p, r, _, _ in rows) == sorted(expected)
    for r in rows:  # the stop rule: its minimum at least, the cap at most
        least = prof.e5.stop_rule(r[0], int(r[2])).min_steps
        assert least <= int(r[5]) <= prof.e5.max_steps and -1 <= float(r[4]) <= 1, r


def test_smoke_report_and_verdicts(smoke):
    out, summary = smoke
    verdicts = {v["claim"]: v for v in summary["verdicts"]}
    assert set(verdicts) == {"1a", "1b", "1c", "2a", "2b", "2c", "2d", "3a", "3b", "4a", "4b"} | {
        "5a",
        "5b",
        "5c",
        "5d",
    }
    for c, v in verdicts.items():
        allowed = {INFO_AGREES, INFO_DEVIATES} if c == "1b" else VERDICTS
        assert v["verdict"] in allowed
        assert v["evidence"] and v["criterion"]
    # smoke checks the plumbing, not the science (its run-length rule is scaled down):
    # every verdict's outcomes are forced by synthetic rows in test_verdicts.py
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for v in verdicts.values():
        assert f"Claim {v['claim']}: {v['verdict']}" in md
        assert v["evidence"][0].split(":")[0] in md
    assert "transcription slip" in md and "10e-4" in md
    # the comparison with the published values: headline, table, summary.json
    pub = summary["e1_published"]
    assert pub["headline"] in md and pub["cells"] == 12  # smoke's p = 200 cells
    assert "E1 beside the published values" in md and "paper: mean ± s.d. (50 reps)" in md
    assert md.count("| 200 |") == 12 and pub["capped"] == 0
    assert "E3 beside the paper's final values" in md and "91.6 %" in md
    assert "E4 beside the authors' run" in md and "85.43 %" in md and "0.869" in md
    assert "Reduced relative to the paper" in md and "Wall times" in md and "torch" in md
    assert "lscpu | grep -c avx512f = " in md and "torch dispatch " in md  # the CPU, named
    assert "native kernels: " in md
    assert "E5: dropout instead of weight decay" in md and "E5 runs capped at 300 steps" in md
    # self-contained: figures embedded, no external references
    assert html.count("data:image/png;base64,") == 6  # E1, E2, E2 conservation, E3, E4, E5
    # no link out: the images are embedded (their base64 text can hold "http" by chance)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert 'src="E' not in text and "http" not in text.split("<body>")[1].split("Files")[0]
    manifest = json.loads((out / ".fa-reproduce.json").read_text())
    assert "E1/alignment.csv" in manifest["files"] and "report.html" in manifest["files"]


CSVS = (
    "E1/alignment.csv",
    "E2/loss.csv",
    "E2/prediction.csv",
    "E2/kernels.csv",
    "E2/conservation.csv",
    "E3/metrics.csv",
    "E3/weight_alignment.csv",
    "E3/backprop.csv",
    "E4/metrics.csv",
    "E4/backprop.csv",
    "E5/alignment.csv",
)


def _csvs(d):
    return {f: (d / f).read_bytes() for f in CSVS if (d / f).exists()}


def test_inline_gives_the_pools_bytes_and_another_seed_is_refused(smoke, tmp_path, capsys):
    out, _ = smoke
    again = tmp_path / "again"
    # the fixture ran in the local process pool (one thread per pack); this run is inline
    # (the SIGKILL test below runs every experiment inline)
    reproduce("E3", profile="smoke", out=again, seed=3, executor="inline")
    assert _csvs(again) == {f: b for f, b in _csvs(out).items() if f.startswith("E3/")}
    assert not (again / "E2").exists() and not (again / "E1").exists()
    # another seed into the same directory: one line saying what it holds, nothing touched
    before = _snapshot(again)
    rc = main(["reproduce", "E3", "--profile", "smoke", "--seed", "4", "--out", str(again)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "holds profile smoke, seed 3" in err and "asked: profile smoke, seed 4" in err
    assert "start afresh" in err
    rc = main(["reproduce", "E3", "--profile", "quick", "--seed", "3", "--out", str(again)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "asked: profile quick, seed 3" in err
    assert _snapshot(again) == before


def _snapshot(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "E9", "--profile", "smoke"], 'experiment = "E9" is not accepted'),
        (["reproduce", "all", "--profile", "tiny"], 'profile = "tiny" is not accepted'),
        (["reproduce", "all", "--profile", "smoke", "--seed", "-1"], "--seed"),
        (
            ["reproduce", "all", "--profile", "smoke", "--executor", "gpu"],
            "--executor 'gpu' is not accepted; accepted: inline[:T], local[:N], dask[:ADDRESS]",
        ),
    ],
)
def test_bad_input_exit_2(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    rc = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_foreign_directory_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "E1").mkdir()
    (out / "E1" / "alignment.csv").write_text("not ours")
    before = _snapshot(out)
    rc = main(["reproduce", "E1", "--profile", "smoke", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "not written by 'fa reproduce'" in err
    assert _snapshot(out) == before
    # a file path is refused too
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["reproduce", "E1", "--profile", "smoke", "--out", str(f)]) == 2
    assert f.read_text() == "x"


def test_previous_reproduction_plus_foreign_file_is_refused(smoke, tmp_path, capsys):
    import shutil

    out = tmp_path / "prev"
    shutil.copytree(smoke[0], out)
    (out / "E2" / "my_analysis.py").write_text("print(1)")
    before = _snapshot(out)
    with pytest.raises(ConfigError, match="does not prove"):
        reproduce("E1", profile="smoke", out=out, seed=3)
    assert _snapshot(out) == before


def test_profiles_say_what_they_reduce():
    assert PROFILES["full"].reductions() == []
    for name in ("smoke", "quick", "standard"):
        red = PROFILES[name].reductions()
        assert red and any("E1" in r for r in red) and any("E3" in r for r in red)
    full = PROFILES["full"]
    assert full.e1.widths == (200, 400, 800, 1600, 3200, 6400, 12800)
    assert (full.e1.reps, full.e2.p, full.e2.steps, full.e3.steps) == (50, 3200, 5000, 30000)


def test_interrupted_run_directory_is_recognised(tmp_path):
    from feedback_alignment.outputs import sha256
    from feedback_alignment.reproduce.cli import MANIFEST, planned
    from feedback_alignment.reproduce.outdir import identity, inspect

    ident = identity("smoke", 0)
    out = tmp_path / "interrupted"
    (out / "E1").mkdir(parents=True)
    (out / "E1" / "alignment.csv").write_text("partial")
    (out / "E1" / ".alignment.png.x1y2.tmp").write_bytes(b"partial")
    # killed inside the manifest's own atomic write (seen in CI's SIGKILL test)
    (out / f".{MANIFEST}.d7zc5ocz.tmp").write_bytes(b'{"tool": "fa rep')
    # killed after report.md landed but before the manifest moved it from pending to hashes
    (out / "report.md").write_text("new")
    hashes = {"E1/alignment.csv": sha256(out / "E1" / "alignment.csv")}
    manifest = {
        "tool": "fa reproduce",
        "identity": ident,
        "complete": False,
        "planned": planned(["E1"]),
        "hashes": hashes,
        "pending": {"report.md": sha256(out / "report.md")},
    }
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert "E1/alignment.csv" in inspect(out, ident)
    (out / "E1" / "other.txt").write_text("foreign")
    with pytest.raises(ConfigError, match="other.txt"):
        inspect(out, ident)
    (out / "E1" / "other.txt").unlink()
    (out / "report.md").write_text("changed since")  # neither hash: not proven
    with pytest.raises(ConfigError, match="report.md"):
        inspect(out, ident)
    (out / "report.md").unlink()
    # a manifest of an earlier version (no identity) is refused in one line
    del manifest["identity"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="earlier version .* start afresh"):
        inspect(out, ident)


def test_the_store_is_the_source_and_other_experiments_add(smoke, tmp_path):
    """The fixture's directory holds every run; a rerun, another experiment and
    --report-only compute nothing, delete nothing and rebuild the same bytes."""
    import shutil

    from feedback_alignment.experiments import Store

    out = tmp_path / "copy"
    shutil.copytree(smoke[0], out)
    with Store(out / "store.sqlite", create=False) as st:
        n = sum(st.counts().values())
        assert st.counts() == {"done": n}
        assert st.meta()["profile"] == "smoke" and st.meta()["seed"] == "3"
    prof = get_profile("smoke")
    e1 = len(LAMS) * 4 * len(prof.e1.widths) * prof.e1.reps
    e3 = len(E3_LAMS) * prof.e3.reps + len(prof.e3.bp_lams) * prof.e3.bp_reps  # FA, backprop
    e4 = len(E3_LAMS) * prof.e4.reps + len(prof.e4.bp_lams) * prof.e4.bp_reps
    e5 = 4 * 4 * len(prof.e5.widths) * prof.e5.reps
    assert n == e1 + 3 * 4 * prof.e2.reps + 2 * 2 + e3 + e4 + e5
    (out / ".report.md.notes.tmp").write_text("a user's file that looks like a temp file")
    csvs = _csvs(out)
    (out / "E2" / "loss.csv").unlink()  # rebuilt from the store
    # another experiment of the same profile and seed: nothing recomputed, nothing deleted
    summary = reproduce("E3", profile="smoke", out=out, seed=3, executor="inline")
    assert _csvs(out) == csvs
    assert summary["experiments"] == ["E1", "E2", "E3", "E4", "E5"]  # the report covers the store
    assert (out / ".report.md.notes.tmp").exists()
    with Store(out / "store.sqlite", create=False) as st:
        assert sum(st.counts().values()) == n
    # --report-only: profile and seed are the directory's
    assert main(["reproduce", "all", "--out", str(out), "--report-only"]) == 0
    assert _csvs(out) == csvs
    assert (out / ".report.md.notes.tmp").exists()


def test_report_only_needs_a_reproduction(tmp_path, capsys):
    rc = main(["reproduce", "all", "--out", str(tmp_path / "none"), "--report-only"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "holds no reproduction" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "none").exists()


def test_help_and_readme_state_the_same_times(capsys):
    from pathlib import Path

    from feedback_alignment.reproduce.profiles import CPU_TIMES

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, t in CPU_TIMES.items():
        assert f"| `{name}` |" in readme and readme.split(f"| `{name}` |")[1].split("\n")[
            0
        ].endswith(f"| {t} |"), name
        assert t in text, name
    assert f"quick profile, {CPU_TIMES['quick']} on 2 cores" in readme


def _stored_packs(store) -> int:
    import sqlite3

    if not store.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT COUNT(DISTINCT pack_id) FROM runs").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_sigkill_in_every_experiment_and_in_the_report_then_resume(smoke, tmp_path):
    """SIGKILL the smoke reproduction (inline: packs one after another) with one pack in
    flight in E1, in E2, in E2's conservation runs, E5 or E3, and while the report is written;
    the same command then finishes, and every CSV is byte-identical to the uninterrupted
    run's (the fixture, in the local pool), the verdicts and E1's table equal."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from feedback_alignment.experiments import Store

    out = tmp_path / "killed"
    store = out / "store.sqlite"
    cmd = [sys.executable, "-m", "feedback_alignment.cli", "reproduce", "all"]
    cmd += ["--profile", "smoke", "--seed", "3", "--out", str(out), "--executor", "inline"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = 0
    # stored packs before each kill (inline order: largest first, E1, E2, E2c, E3, E3bp, E4,
    # E4bp, E5 mixed); the last waits for all 23 and kills while figures and report are written
    for at in (1, 4, 10, 14, 18, 23):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None and _stored_packs(store) < at:
            time.sleep(0.02)
        if at == 23:
            time.sleep(1.0)  # into the figures
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    assert killed >= 3
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _csvs(out) == _csvs(smoke[0]) and len(_csvs(out)) == len(CSVS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdicts"] == smoke[1]["verdicts"]
    assert summary["e1_published"]["table"] == smoke[1]["e1_published"]["table"]
    with Store(store, create=False) as st:  # every run stored once, each at its first write
        runs = st.runs()
    assert len({r["run_id"] for r in runs}) == len(runs) and {r["attempts"] for r in runs} == {1}


def test_a_dask_cluster_of_separate_processes_survives_a_lost_worker(smoke, tmp_path):
    """A `dask scheduler` and two `dask worker` processes started on their own; one
    worker is SIGKILLed while packs are in flight: the run completes, every run is stored
    once, and the CSVs are the local pool's bytes."""
    pytest.importorskip("distributed")
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from feedback_alignment.experiments import Store

    dask = str(Path(sys.executable).parent / "dask")
    sched_file = tmp_path / "scheduler.json"
    common = ["--no-dashboard", "--scheduler-file", str(sched_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    procs = [
        subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", *common], **quiet
        )
    ]
    try:
        t0 = time.monotonic()
        while not sched_file.exists() and time.monotonic() - t0 < 60:
            time.sleep(0.2)
        worker = [dask, "worker", "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1", *common]
        procs += [subprocess.Popen(worker, **quiet) for _ in range(2)]
        address = json.loads(sched_file.read_text())["address"]
        out = tmp_path / "dask"
        cmd = [sys.executable, "-m", "feedback_alignment.cli", "reproduce", "all", "--profile"]
        cmd += ["smoke", "--seed", "3", "--out", str(out), "--executor", f"dask:{address}"]
        run = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while run.poll() is None and _stored_packs(out / "store.sqlite") < 2:
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)  # a worker lost with a pack in flight
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0, err[-2000:]
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
            p.wait(30)
    assert _csvs(out) == _csvs(smoke[0]) and len(_csvs(out)) == len(CSVS)
    with Store(out / "store.sqlite", create=False) as st:
        runs = st.runs()
    assert len({r["run_id"] for r in runs}) == len(runs) and {r["attempts"] for r in runs} == {1}
    assert {r["executor"] for r in runs} == {"dask"}


def test_dask_local_cluster_and_an_unreachable_scheduler(smoke, tmp_path, capsys):
    pytest.importorskip("distributed")
    out = tmp_path / "local-cluster"
    reproduce("E3", profile="smoke", out=out, seed=3, executor="dask")
    assert _csvs(out) == {f: b for f, b in _csvs(smoke[0]).items() if f.startswith("E3/")}
    nowhere = tmp_path / "nowhere"
    rc = main(
        ["reproduce", "E3", "--profile", "smoke", "--out", str(nowhere), "--executor"]
        + ["dask:tcp://127.0.0.1:9"]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no Dask scheduler answered" in err
    assert not nowhere.exists()


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["reproduce", "all", "--profile", "smoke", "--out", str(out), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("fa reproduce --profile smoke --seed 0: 23 packs, ")
    packs = ("  E1: 6 packs", "  E2: 5 packs", "  E3: 2 packs", "  E4: 2 packs", "  E5: 8 packs")
    for what in (*packs, "peak memory"):
        assert what in text, what
    assert "this machine (" in text and "128 workers like these: " in text
    assert not out.exists()


def test_full_packs_fit_a_worker_and_run_identities_ignore_the_packing():
    from feedback_alignment.experiments.planner import AUTO_MAX_BYTES, AUTO_MAX_MEMBERS
    from feedback_alignment.reproduce.pipeline import plan
    from feedback_alignment.reproduce.profiles import EXPERIMENTS

    full = plan(EXPERIMENTS, get_profile("full"), 0)
    two = [pk for pk in full if pk.work_kind == "twolayer"]
    assert all(len(pk.members) <= AUTO_MAX_MEMBERS for pk in two)
    assert max(pk.bytes for pk in full if pk.kind == "E1") <= AUTO_MAX_BYTES
    e1 = [m for pk in full if pk.kind == "E1" for m in pk.members]
    assert len(e1) == len({m.run_id for m in e1}) == 50 * 4 * 3 * 7
    # a run's identity (and so its seeds' key) names its repetition, not its pack-mates
    for m in e1[:50]:
        assert "reps" not in m.config and isinstance(m.config["rep"], int)
    e5 = [pk for pk in full if pk.kind == "E5"]
    assert all(len(pk.members) <= AUTO_MAX_MEMBERS for pk in e5)
    assert max(pk.bytes for pk in e5) <= AUTO_MAX_BYTES
    assert len({m.run_id for pk in e5 for m in pk.members}) == 50 * 4 * 4 * 4
    alone = plan(["E1"], get_profile("full"), 0)
    assert {m.run_id for pk in alone for m in pk.members} == {m.run_id for m in e1}


def test_sigkill_mid_pack_resumes_from_the_packs_checkpoint(smoke, tmp_path):
    """A checkpoint every 0.05 s of compute; SIGKILL as soon as one is on disk (a pack in
    flight, mid-fit); the same command resumes that pack from its checkpoint (and says so) and
    E1's CSV is byte-identical to the uninterrupted run's; no checkpoint is left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "feedback_alignment.cli", "reproduce", "E1", "--progress"]
    cmd += ["--profile", "smoke", "--seed", "3", "--out", str(out), "--executor", "inline"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FA_CHECKPOINT_SECONDS": "0.05"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckdir = out / "checkpoints"
    while proc.poll() is None and not (ckdir.is_dir() and any(ckdir.glob("*.pt"))):
        time.sleep(0.01)
    # the first checkpoint comes 0.05 s into the first pack's fit, which takes seconds:
    # killed mid-fit, with the pack's runs not stored
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    left = list(ckdir.glob("*.pt"))
    assert len(left) == 1  # the pack in flight: not in the store, its checkpoint on disk
    assert left[0].stem not in {r["pack_id"] for r in _stored_runs(out / "store.sqlite")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(rf"pack {left[0].stem} resumed from its checkpoint at step [1-9]", done.stderr)
    assert (out / "E1" / "alignment.csv").read_bytes() == (
        smoke[0] / "E1" / "alignment.csv"
    ).read_bytes()
    assert not list(ckdir.glob("*"))  # cleared once the packs' runs were stored


def _stored_runs(store) -> list[dict]:
    from feedback_alignment.experiments import Store

    if not store.exists():
        return []
    with Store(store, create=False) as st:
        return st.runs()


def test_a_stored_e5_run_is_a_direct_fit_with_the_authors_settings(smoke):
    """One E5 run of the smoke reproduction (ReLU, p = 100, q = 0.6, rep 1) equals a fit
    written here from the authors' settings: the teacher and network from the run's seeds,
    lambda = 0, lr 1e-3, dropout 0.6, the alignment rule at smoke's scale (N = 5000 / 25:
    at least rint(200 sqrt(100) // 14) = 142 steps, checked every 40, tol 1e-4, cap 300)."""
    from feedback_alignment.reproduce.profiles import seed_for
    from feedback_alignment.twolayer.data import random_teacher
    from feedback_alignment.twolayer.engine import Plateau, TwoLayerEnsemble

    out, _ = smoke
    _, rows = _read(out / "E5/alignment.csv")
    (row,) = [r for r in rows if (r[0], float(r[1]), int(r[2]), int(r[3])) == ("relu", 0.6, 100, 1)]
    key = (3, 5, 1, 100, 1)  # seed 3, E5, ReLU (E5's second activation), p, rep
    X, y = random_teacher(50, 150, 100, "relu", seed=seed_for(*key, 1))
    ens = TwoLayerEnsemble(150, 100, seeds=[seed_for(*key, 0)], activation="relu")
    rule = Plateau(142, 40, 1e-4, 300, "authors", "alignment")
    h = ens.fit(X, y, lr=1e-3, lam=0.0, dropout=0.6, stop=rule, metrics=("alignment",))
    assert int(row[5]) == int(h.stop_step[0])
    assert abs(float(row[4]) - float(h.final["alignment"][0])) < 1e-10
    assert float(row[4]) != float(rows[[r[:4] for r in rows].index(["relu", "0.0", "100", "1"])][4])
