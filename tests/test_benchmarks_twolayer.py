"""benchmarks/twolayer.py (the E1 workload against the authors' loop and the roofline, run
by hand for its figures): one small width runs end to end, names the CPU, and each row
holds the speed-up and the fraction of the bound it prints."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from feedback_alignment.twolayer import native

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "twolayer.py"


@pytest.mark.skipif(native.unavailable() is not None, reason="no native kernels here")
def test_one_width_runs_and_reports_the_roofline():
    cmd = [sys.executable, str(SCRIPT), "--quick", "--widths", "40", "--dtypes", "float32",
           "--activations", "relu", "tanh"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("# ") and "lscpu | grep -c avx512f = " in lines[0]
    assert "torch dispatch " in lines[0]
    out = json.loads(lines[-1])
    assert out["lscpu_avx512f_lines"] in (0, 1, None) and out["threads"] >= 1
    rows = {r["activation"]: r for r in out["rows"]}
    assert set(rows) == {"relu", "tanh"}
    for r in rows.values():
        assert r["p"] == 40 and r["kernels"].startswith("rowspace")
        assert r["speedup"] > 0 and r["native_vs_torch"] > 0
        assert r["step_flops"] == 2 * 40 * 50 * 50 * 50 and r["step_bytes"] == 2 * 50 * 40 * 50 * 4
        bound_s = max(r["step_flops"] / out["limits"]["used"]["matmul_float32_flops_per_s"],
                      r["step_bytes"] / out["limits"]["used"]["copy_bytes_per_s"])  # fmt: skip
        assert r["bound_ms"] == pytest.approx(1e3 * bound_s)
        assert r["fraction"] == pytest.approx(r["bound_ms"] / r["engine_ms"])
    assert any("tanh / relu step at p=40" in ln for ln in lines)
    assert out["e1_full_projection"]["hours"] > 0
