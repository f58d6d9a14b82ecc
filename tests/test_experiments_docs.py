"""docs/sweeps.md runs as written: its TOML specs, its `fa` commands and its Python."""

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path

from feedback_alignment.cli import main
from feedback_alignment.experiments import Store, load_spec

DOC = Path(__file__).resolve().parents[1] / "docs" / "sweeps.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def test_doc_examples_run(tmp_path, monkeypatch):
    tomls, shells, pythons = _blocks("toml"), _blocks("bash"), _blocks("python")
    assert len(tomls) == 2 and len(shells) == 1 and len(pythons) == 2
    (tmp_path / "study.toml").write_text(tomls[0])
    (tmp_path / "deep.toml").write_text(tomls[1])
    monkeypatch.chdir(tmp_path)
    for line in shells[0].strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == "fa"
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv[1:])  # the `fa` entry point, in this process (faster)
        assert code == 0, (line, err.getvalue())
        if "--dry-run" in argv:
            assert "1400 runs" in out.getvalue()  # the paper profile, as the doc says
    for name in ("runs.csv", "runs.parquet", "series.csv", "alignment.png", "alignment.pdf"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert not (tmp_path / "paper.sqlite").exists()  # a dry run writes nothing
    with Store(tmp_path / "study.sqlite", create=False) as st:
        assert st.counts() == {"done": 36}  # as the doc says
    for code in pythons:
        exec(compile(code, str(DOC), "exec"), {})
    assert (tmp_path / "al.pdf").exists() and (tmp_path / "loss.png").exists()
    # the deep example is a valid spec; run it
    assert len(load_spec(tmp_path / "deep.toml").runs()) == 8
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "feedback_alignment.cli",
            "sweep",
            "deep.toml",
            "--store",
            "deep.sqlite",
            "--executor",
            "inline",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    with Store(tmp_path / "deep.sqlite", create=False) as st:
        assert st.counts() == {"done": 8}


def test_doc_error_examples_are_real(tmp_path):
    """The validation messages quoted in the doc are what fa sweep prints."""
    quoted = [ln for ln in _blocks("text")[0].splitlines() if ln.startswith("fa sweep: error:")]
    cases = ["[grid]\np = []\n", "[fixed]\nwidth = 3\n", "[fixed]\nlr = -0.1\n"]
    for text, line in zip(cases, quoted, strict=True):
        (tmp_path / "bad.toml").write_text(text)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["sweep", str(tmp_path / "bad.toml"), "--store", "x.sqlite"]) == 2
        prefix = line.split(" ...")[0]
        assert err.getvalue().startswith(prefix), (err.getvalue(), prefix)


def test_two_layer_fields_table_is_generated_from_the_schema():
    """docs/sweeps.md's table of two-layer fields is markdown_table() of the schema, to the
    letter; after changing a field, paste ``markdown_table()`` below the marker."""
    from feedback_alignment.twolayer.schema import FIELDS, markdown_table

    marker = "<!-- generated: feedback_alignment.twolayer.schema.markdown_table() -->\n"
    text = DOC.read_text()
    assert text.count(marker) == 1
    table = text.split(marker)[1].split("\n\n")[0] + "\n"
    assert table == markdown_table()
    assert all(f"| `{name}` |" in table for name in FIELDS)
