"""benchmarks/gpu.py where torch has no CUDA device: one clear line, at once."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would run")
def test_without_a_gpu_it_says_so_in_one_line_and_exits():
    res = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 and res.stderr.strip() == ""
    assert lines[0].startswith("no CUDA GPU available to torch ")
    assert "nothing was run" in lines[0]


def test_the_no_gpu_check_names_the_torch_build(monkeypatch):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch.__version__ in gpu.no_gpu_reason()
    assert gpu.main([]) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert gpu.no_gpu_reason() is None
