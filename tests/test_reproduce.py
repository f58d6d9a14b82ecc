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
    for rel in ("E1/alignment", "E2/loss", "E3/metrics"):
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


def test_smoke_report_and_verdicts(smoke):
    out, summary = smoke
    verdicts = {v["claim"]: v for v in summary["verdicts"]}
    assert set(verdicts) == {"1a", "1b", "1c", "2a", "2b", "2c", "2d", "3a", "3b"}
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
    assert "Reduced relative to the paper" in md and "Wall times" in md and "torch" in md
    # self-contained: figures embedded, no external references
    assert html.count("data:image/png;base64,") == 4  # E1, E2, E2 conservation, E3
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
)


def _csvs(d):
    return {f: (d / f).read_bytes() for f in CSVS if (d / f).exists()}


def test_inline_gives_the_pools_bytes_and_another_seed_is_refused(smoke, tmp_path, capsys):
    out, _ = smoke
    again = tmp_path / "again"
    # the fixture ran in the local process pool (one thread per pack); this run is inline
    reproduce("E1", profile="smoke", out=again, seed=3, executor="inline")
    assert (again / "E1/alignment.csv").read_bytes() == (out / "E1/alignment.csv").read_bytes()
    assert not (again / "E2").exists()
    # another seed into the same directory: one line saying what it holds, nothing touched
    before = _snapshot(again)
    rc = main(["reproduce", "E1", "--profile", "smoke", "--seed", "4", "--out", str(again)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "holds profile smoke, seed 3" in err and "asked: profile smoke, seed 4" in err
    assert "start afresh" in err
    rc = main(["reproduce", "E1", "--profile", "quick", "--seed", "3", "--out", str(again)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "asked: profile quick, seed 3" in err
    assert _snapshot(again) == before


def _snapshot(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "E4", "--profile", "smoke"], "unknown experiment 'E4'"),
        (["reproduce", "all", "--profile", "tiny"], "unknown profile 'tiny'"),
        (["reproduce", "all", "--profile", "smoke", "--seed", "-1"], "--seed"),
        (["reproduce", "all", "--profile", "smoke", "--executor", "gpu"], "unknown executor"),
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
    e3 = len(E3_LAMS) * prof.e3.reps
    assert n == e1 + 3 * 4 * prof.e2.reps + 2 * 2 + e3
    (out / ".report.md.notes.tmp").write_text("a user's file that looks like a temp file")
    csvs = _csvs(out)
    (out / "E2" / "loss.csv").unlink()  # rebuilt from the store
    # another experiment of the same profile and seed: nothing recomputed, nothing deleted
    summary = reproduce("E3", profile="smoke", out=out, seed=3, executor="inline")
    assert _csvs(out) == csvs
    assert summary["experiments"] == ["E1", "E2", "E3"]  # the report covers what is stored
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
