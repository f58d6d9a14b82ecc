"""benchmarks/e4_full.py (E4 at the authors' full length, run by hand for its figures):
a few steps on MNIST, resumed by chunks, give the numbers of one uninterrupted call, and a
directory of another seed is refused in one line."""

import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "e4_full.py"


def run(out, *args):
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--steps", "4", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_chunks_resume_to_the_uninterrupted_numbers(tmp_path):
    assert run(tmp_path / "a", "--chunk", "2").returncode == 0
    whole = run(tmp_path / "b", "--chunk", "4")
    assert whole.returncode == 0, whole.stderr[-2000:]
    a, b = np.load(tmp_path / "a" / "series.npz"), np.load(tmp_path / "b" / "series.npz")
    assert sorted(a.files) == sorted(b.files) and "fc2_alignment" in a.files
    for k in a.files:
        assert np.array_equal(a[k], b[k]), k
    assert a["step"].tolist() == [0, 1, 2, 3, 4]  # the state at the end is measured too
    assert (tmp_path / "b" / "summary.json").is_file()
    again = run(tmp_path / "b", "--chunk", "4")  # finished: nothing to do, same numbers
    assert again.returncode == 0 and "resuming at step 4 of 4" in again.stdout


def test_a_directory_of_another_seed_is_refused(tmp_path):
    assert run(tmp_path, "--chunk", "2").returncode == 0
    other = run(tmp_path, "--chunk", "2", "--seed", "1")
    assert other.returncode == 2
    assert other.stdout.strip().splitlines() == [
        f"e4_full: {tmp_path} holds seed 0, steps 4; give another --out"
    ]
