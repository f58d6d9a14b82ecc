"""benchmarks/dropout.py (E5's workload, native kernels against torch ops, run by hand for
its figures): one small width runs end to end, the native kernels and the torch ops both
ran, and the row holds the ratios it reports."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from feedback_alignment.twolayer import native

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dropout.py"


@pytest.mark.skipif(native.unavailable() is not None, reason="no native kernels here")
def test_one_width_runs_and_reports_the_ratios():
    cmd = [sys.executable, str(SCRIPT), "--quick", "--widths", "40", "--activations", "tanh"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("# ") and "avx512f" in lines[0]  # the CPU beside the figures
    out = json.loads(lines[-1])
    (row,) = out["rows"]
    assert (row["activation"], row["p"], row["K"]) == ("tanh", 40, 8)
    assert row["native_vs_torch"] > 0 and row["mask_cost"] > 0
    assert row["native_ms_per_member_step"] > 0 and row["torch_ms_per_member_step"] > 0
