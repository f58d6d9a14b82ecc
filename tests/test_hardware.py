"""The CPU naming every benchmark figure and report carries (feedback_alignment.hardware)."""

import pytest
import torch

from feedback_alignment import hardware

CORE = ["model name\t: Some CPU @ 2.0GHz\n", "flags\t\t: fpu sse2 avx avx2 fma\n"]
X86 = ["processor\t: 0\n", *CORE, "processor\t: 1\n", *CORE]
ARM = ["processor\t: 0\n", "Features\t: fp asimd evtstrm\n"]


@pytest.mark.parametrize(
    ("lines", "flags", "vector", "model"),
    [
        (X86, {"fpu", "sse2", "avx", "avx2", "fma"}, "avx2 fma avx", "Some CPU @ 2.0GHz"),
        (ARM, {"fp", "asimd", "evtstrm"}, "asimd", None),
        (None, None, "", None),
    ],
)
def test_flags_model_and_line_from_cpuinfo(monkeypatch, lines, flags, vector, model):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: lines)
    monkeypatch.setattr(hardware, "lscpu_avx512f_lines", lambda: 0)
    assert hardware.cpu_flags() == flags
    d = hardware.describe()
    assert d["cpu_flags"] == vector
    if model is not None:
        assert d["cpu_model"] == model
        assert hardware.cpu_id() == "".join(sorted(CORE))  # each distinct line once, sorted
    assert d["torch_dispatch"] == torch.backends.cpu.get_cpu_capability()
    line = hardware.line(d)
    assert line.startswith(d["cpu_model"] + " (")
    assert "lscpu | grep -c avx512f = 0" in line
    assert f"flags {vector or 'none read'};" in line
    assert f"torch {torch.__version__}, {torch.get_num_threads()} threads" in line


def test_lscpu_count_is_one_where_avx512f_is_named(monkeypatch):
    class Res:
        stdout = "Model name: X\nFlags: fpu avx2 avx512f avx512bw\n"

    monkeypatch.setattr(hardware.shutil, "which", lambda _: "/usr/bin/lscpu")
    monkeypatch.setattr(hardware.subprocess, "run", lambda *a, **k: Res())
    assert hardware.lscpu_avx512f_lines() == 1
    Res.stdout = "Model name: X\nFlags: fpu avx2\n"
    assert hardware.lscpu_avx512f_lines() == 0
    monkeypatch.setattr(hardware.shutil, "which", lambda _: None)
    assert hardware.lscpu_avx512f_lines() is None
