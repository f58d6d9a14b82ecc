"""Helpers for the bad-input catalogue (tests/test_bad_input_*.py).

``snapshot(root)`` maps every path under ``root`` to its bytes (directories and symlinks
marked), so a test can assert that a refused command left every file it set up
byte-identical; ``fa(capsys, *argv)`` runs the CLI in-process and returns
``(exit status, stderr lines)``.
"""

from __future__ import annotations

import os
from pathlib import Path

from feedback_alignment.cli import main

# a tiny `fa train` config (scikit-learn's bundled digits, 3 steps) for the config cases
CONFIG = """
seed = 1
[data]
source = "digits"
train_limit = 200
test_limit = 100
[model]
hidden = [8]
[train]
batch_size = 50
steps = 3
eval_every = 0
"""


def tiny_spec(root: Path, name: str = "tiny") -> Path:
    """``root/spec.toml``: conftest's TINY_SPEC as a spec file (study ``name``)."""
    import json

    from conftest import TINY_SPEC

    lines = [f'[study]\nname = "{name}"\nrepetitions = 2\nseed = 3\n[fixed]']
    lines += [f"{k} = {json.dumps(v)}" for k, v in TINY_SPEC["fixed"].items()]
    lines += ["[grid]"] + [f"{k} = {json.dumps(v)}" for k, v in TINY_SPEC["grid"].items()]
    path = root / "spec.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def snapshot(root) -> dict[str, object]:
    root = Path(root)
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("symlink", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", oct(p.stat().st_mode))
            else:
                out[rel] = (p.read_bytes(), oct(p.stat().st_mode))
    return out


def fa(capsys, *argv) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, [line for line in err.splitlines() if line.strip()]


def refused(capsys, root, *argv, match: str, rc: int = 2) -> str:
    """Run ``fa *argv``; assert exit ``rc``, one stderr line containing ``match``, and
    every file under ``root`` unchanged. Returns the line."""
    before = snapshot(root)
    code, lines = fa(capsys, *argv)
    assert code == rc, (code, lines)
    assert len(lines) == 1, lines
    assert match in lines[0], lines[0]
    after = snapshot(root)
    changed = sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k))
    assert after == before, f"changed: {changed}"
    return lines[0]


# ---------------------------------------------------------------- special files (issue 23)
def snapshot_nodes(root) -> dict[str, object]:
    """As :func:`snapshot`, safe with FIFOs, devices and sockets in the tree (recorded by
    kind, device number and mode, never opened: reading a FIFO would block)."""
    import stat

    root = Path(root)
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(st.st_mode))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = (p.read_bytes(), oct(st.st_mode))
            else:
                out[rel] = ("node", oct(st.st_mode), st.st_rdev, st.st_ino)
    return out


def refused_nodes(capsys, root, *argv, match: str, rc: int = 2) -> str:
    """:func:`refused` for a tree that holds special files (see :func:`snapshot_nodes`)."""
    global snapshot
    plain, snapshot = snapshot, snapshot_nodes  # refused() looks it up when it runs
    try:
        return refused(capsys, root, *argv, match=match, rc=rc)
    finally:
        snapshot = plain
