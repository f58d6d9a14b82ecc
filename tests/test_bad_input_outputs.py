"""Bad-input catalogue, issue 23: outputs are regular files or new paths, nothing else.

A device, FIFO, socket or symbolic link (dangling or not) as an output is refused with one
line, ``--force`` or not; a directory that is not empty and not provably the command's own
is refused (quickly: at its first foreign entry); new files get the umask's mode and
``--force`` keeps an existing file's mode; names the file system refuses, full disks and
SIGTERM are one line each. Every case checks its line, its exit status and that the
directory around it is byte-identical afterwards (``_badinput.refused_nodes``)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _badinput import CONFIG, fa, refused_nodes, snapshot_nodes, tiny_spec
from test_experiments_kill import _count

pytestmark = pytest.mark.usefixtures("one_thread")


def _chardev(path: Path) -> Path:
    """A character device node (the numbers of /dev/null) under the test's directory."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"mknod needs root here ({exc.strerror})")
    return path


def _fifo(path: Path) -> Path:
    try:
        os.mkfifo(path)
    except OSError as exc:  # pragma: no cover - a file system without FIFOs
        pytest.skip(f"mkfifo: {exc.strerror}")
    return path


@pytest.fixture
def sock(tmp_path):
    s = socket.socket(socket.AF_UNIX)
    path = tmp_path / "a.png"
    try:
        s.bind(str(path))
    except OSError as exc:  # pragma: no cover
        pytest.skip(f"unix socket: {exc.strerror}")
    yield path
    s.close()


# ---------------------------------------------------------------- special files as --out
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_results_out_is_a_device(store_copy, capsys, force):
    """The issue's case: --force used to replace the device node with a 0600 CSV."""
    root, store = store_copy
    dev = _chardev(root / "dev")
    refused_nodes(
        capsys, root, "results", store, "--out", dev, *force, match="is a character device"
    )
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


def test_train_out_is_a_device(tmp_path, capsys):
    dev = _chardev(tmp_path / "dev")
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    refused_nodes(
        capsys, tmp_path, "train", cfg, "--out", dev, "--force", match="is a character device"
    )


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_results_out_is_a_fifo(store_copy, capsys, force):
    root, store = store_copy
    fifo = _fifo(root / "fifo")
    refused_nodes(capsys, root, "results", store, "--out", fifo, *force, match="is a FIFO")


def test_plot_out_is_a_socket(store_copy, capsys, sock):
    root, store = store_copy  # the same tmp_path as the socket's
    refused_nodes(capsys, root, "plot", store, "--out", sock, "--force", match="is a socket")


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_results_out_is_a_symlink(store_copy, capsys, force):
    root, store = store_copy
    (root / "mine.csv").write_text("keep\n")
    (root / "link.csv").symlink_to(root / "mine.csv")
    refused_nodes(
        capsys,
        root,
        "results",
        store,
        "--out",
        root / "link.csv",
        *force,
        match="is a symbolic link",
    )


def test_results_out_is_a_dangling_symlink(store_copy, capsys):
    """It used to end in FileExistsError; now one line naming the link and its target."""
    root, store = store_copy
    (root / "link.csv").symlink_to(root / "nowhere.csv")
    line = refused_nodes(
        capsys, root, "results", store, "--out", root / "link.csv", "--force", match="dangling"
    )
    assert "nowhere.csv" in line


def test_demo_out_is_a_symlink_to_a_directory(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    (tmp_path / "d").symlink_to(tmp_path / "real")
    refused_nodes(
        capsys,
        tmp_path,
        "demo",
        "--out",
        tmp_path / "d",
        "--steps",
        "1",
        "--reps",
        "1",
        match="is a symbolic link",
    )


def test_reproduce_out_is_a_fifo(tmp_path, capsys):
    fifo = _fifo(tmp_path / "r")
    refused_nodes(
        capsys,
        tmp_path,
        "reproduce",
        "E2",
        "--profile",
        "smoke",
        "--out",
        fifo,
        match="is a FIFO",
    )


# ---------------------------------------------------------------- --store and inputs
def test_sweep_store_is_a_symlink_or_a_fifo(tmp_path, capsys):
    spec = tiny_spec(tmp_path)
    (tmp_path / "real.sqlite").write_bytes(b"")
    (tmp_path / "link.sqlite").symlink_to(tmp_path / "real.sqlite")
    refused_nodes(
        capsys,
        tmp_path,
        "sweep",
        spec,
        "--store",
        tmp_path / "link.sqlite",
        "--executor",
        "inline",
        match="is a symbolic link",
    )
    (tmp_path / "dangling.sqlite").symlink_to(tmp_path / "nowhere.sqlite")
    refused_nodes(
        capsys,
        tmp_path,
        "sweep",
        spec,
        "--store",
        tmp_path / "dangling.sqlite",
        "--executor",
        "inline",
        match="is a symbolic link",
    )
    fifo = _fifo(tmp_path / "fifo.sqlite")
    refused_nodes(
        capsys,
        tmp_path,
        "sweep",
        spec,
        "--store",
        fifo,
        "--executor",
        "inline",
        match="is a FIFO",
    )


def test_sweep_store_wal_beside_it_is_a_symlink(tmp_path, capsys):
    spec = tiny_spec(tmp_path)
    (tmp_path / "s.sqlite-wal").symlink_to(tmp_path / "elsewhere")
    refused_nodes(
        capsys,
        tmp_path,
        "sweep",
        spec,
        "--store",
        tmp_path / "s.sqlite",
        "--executor",
        "inline",
        match="s.sqlite-wal' is a symbolic link",
    )


def test_a_fifo_or_device_as_store_or_spec_says_what_it_is(tmp_path, capsys):
    """They used to be reported as 'does not exist' (and a FIFO opened would block)."""
    fifo = _fifo(tmp_path / "fifo")
    refused_nodes(capsys, tmp_path, "results", fifo, match="store")
    refused_nodes(capsys, tmp_path, "results", fifo, match="is a FIFO")
    refused_nodes(
        capsys, tmp_path, "sweep", fifo, "--store", tmp_path / "s.sqlite", match="is a FIFO"
    )
    refused_nodes(capsys, tmp_path, "train", fifo, match="config")
    dev = _chardev(tmp_path / "dev")
    refused_nodes(
        capsys, tmp_path, "plot", dev, "--out", tmp_path / "a.png", match="is a character device"
    )
    refused_nodes(
        capsys,
        tmp_path,
        "sweep",
        dev,
        "--store",
        tmp_path / "s.sqlite",
        match="is a character device",
    )


# ---------------------------------------------------------------- modes
def test_new_files_get_the_umask_mode_and_force_keeps_the_mode(store_copy, capsys):
    root, store = store_copy
    old = os.umask(0o027)
    try:
        rc, _ = fa(capsys, "results", store, "--out", root / "new.csv")
        assert rc == 0
        assert stat.S_IMODE(os.stat(root / "new.csv").st_mode) == 0o640  # 0666 & ~027
        (root / "mine.csv").write_text("x\n")
        os.chmod(root / "mine.csv", 0o604)
        rc, _ = fa(capsys, "results", store, "--out", root / "mine.csv", "--force")
        assert rc == 0
        assert stat.S_IMODE(os.stat(root / "mine.csv").st_mode) == 0o604
        assert (root / "mine.csv").read_text().startswith("run_id,")
    finally:
        os.umask(old)


# ---------------------------------------------------------------- directories
def test_demo_out_of_unrelated_files_is_refused(tmp_path, capsys):
    """README says fa demo refuses a directory of unrelated files; it used to accept it."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("mine\n")
    for force in ([], ["--force"]):
        refused_nodes(
            capsys,
            tmp_path,
            "demo",
            "--out",
            d,
            "--steps",
            "1",
            "--reps",
            "1",
            *force,
            match="not written by 'fa demo'",
        )


def test_demo_reuses_its_own_directory_with_force(tmp_path, capsys):
    d = tmp_path / "d"
    rc, _ = fa(capsys, "demo", "--out", d, "--steps", "1", "--reps", "1")
    assert rc == 0 and (d / "summary.json").is_file() and (d / ".fa-demo.json").is_file()
    assert stat.S_IMODE(os.stat(d / "summary.json").st_mode) == 0o666 & ~_umask()
    refused_nodes(
        capsys,
        tmp_path,
        "demo",
        "--out",
        d,
        "--steps",
        "1",
        "--reps",
        "1",
        match="exists; accepted: a new path, or --force",
    )
    rc, _ = fa(capsys, "demo", "--out", d, "--steps", "1", "--reps", "1", "--force")
    assert rc == 0
    (d / "summary.json").write_text("{}")  # changed since: no longer provably the demo's
    refused_nodes(
        capsys,
        tmp_path,
        "demo",
        "--out",
        d,
        "--steps",
        "1",
        "--reps",
        "1",
        "--force",
        match="does not prove",
    )


def _umask() -> int:
    m = os.umask(0o022)
    os.umask(m)
    return m


def test_checkpoint_dir_of_the_users_files_is_refused(tmp_path, capsys):
    """The issue's case: a directory holding step-0000003.pt was overwritten."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "step-0000003.pt").write_bytes(b"my own checkpoint")
    refused_nodes(
        capsys,
        tmp_path,
        "train",
        cfg,
        "--set",
        f"train.checkpoint_dir='{ck}'",
        "--set",
        "train.checkpoint_every=1",
        match="not written by 'fa train'",
    )
    assert (ck / "step-0000003.pt").read_bytes() == b"my own checkpoint"


def test_checkpoint_dir_dangling_symlink_is_refused_before_training(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    (tmp_path / "ck").symlink_to(tmp_path / "gone")
    refused_nodes(
        capsys,
        tmp_path,
        "train",
        cfg,
        "--set",
        f"train.checkpoint_dir='{tmp_path / 'ck'}'",
        match="is a symbolic link",
    )


def test_checkpoint_dir_is_reused_when_it_is_the_trainers_own(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    ck = tmp_path / "ck"
    args = (
        "train",
        cfg,
        "--set",
        f"train.checkpoint_dir='{ck}'",
        "--set",
        "train.checkpoint_every=1",
    )
    assert fa(capsys, *args)[0] == 0
    names = sorted(p.name for p in ck.iterdir())
    assert names == [".fa-checkpoints.json"] + [f"step-000000{i}.pt" for i in (1, 2, 3)]
    assert fa(capsys, *args)[0] == 0  # its own checkpoints, proven by hash: rewritten
    (ck / "step-0000002.pt").write_bytes(b"changed")
    refused_nodes(capsys, tmp_path, *args, match="does not prove")


def test_reproduce_out_root_is_refused_at_once(capsys):
    """`--out /` used to walk the whole file system into a PermissionError traceback."""
    t0 = time.perf_counter()
    rc, lines = fa(capsys, "reproduce", "E2", "--profile", "smoke", "--out", "/")
    assert rc == 2 and len(lines) == 1, lines
    assert "not written by 'fa reproduce'" in lines[0] or "not writable" in lines[0]
    assert time.perf_counter() - t0 < 5


def test_a_big_foreign_directory_is_refused_without_walking_it(tmp_path, capsys, monkeypatch):
    """`--out $HOME` used to hash and list every file before refusing: now the first
    foreign entry ends the look (no file is hashed, few directories are read)."""
    from feedback_alignment import outputs

    d = tmp_path / "home"
    for i in range(30):
        (d / f"sub{i:02d}").mkdir(parents=True)
        for j in range(30):
            (d / f"sub{i:02d}" / f"f{j}").write_text("x")
    before = snapshot_nodes(tmp_path)
    reads = []
    real = os.scandir
    with monkeypatch.context() as m:
        m.setattr(outputs.os, "scandir", lambda p: (reads.append(p), real(p))[1])
        m.setattr(outputs, "sha256", lambda p: pytest.fail(f"hashed {p}"))
        rc, lines = fa(capsys, "reproduce", "E2", "--profile", "smoke", "--out", d)
    assert rc == 2 and len(lines) == 1 and "not written by 'fa reproduce'" in lines[0], lines
    assert len(reads) <= 2, reads
    assert snapshot_nodes(tmp_path) == before


# ---------------------------------------------------------------- names, full disks
def test_a_name_the_file_system_refuses(store_copy, capsys):
    root, store = store_copy
    limit = os.pathconf(root, "PC_NAME_MAX")
    refused_nodes(
        capsys,
        root,
        "results",
        store,
        "--out",
        root / ("x" * (limit + 1)),
        match="file system",
    )
    # fits, but not with the temporary name beside it: refused before any work too
    refused_nodes(
        capsys,
        root,
        "results",
        store,
        "--out",
        root / ("y" * (limit - 3)),
        match="longer than this file system takes",
    )


def test_a_full_disk_on_a_file_is_one_line_and_leaves_nothing(store_copy, capsys, monkeypatch):
    root, store = store_copy
    import pathlib

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    line = refused_nodes(
        capsys,
        root,
        "results",
        store,
        "--out",
        root / "x.csv",
        match="No space left on device",
        rc=1,
    )
    assert "x.csv" in line


def _fa_cmd(*argv) -> list[str]:
    return [sys.executable, "-m", "feedback_alignment.cli", *map(str, argv)]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_full_disk_on_stdout_is_one_line(store_copy):
    root, store = store_copy
    before = snapshot_nodes(root)
    with open("/dev/full", "w") as full:
        res = subprocess.run(
            _fa_cmd("results", store),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1, res.stderr
    assert lines == ["fa results: error: cannot write to standard output: No space left on device"]
    assert snapshot_nodes(root) == before


def test_a_closed_pipe_on_stdout_is_quiet(store_copy):
    root, store = store_copy
    proc = subprocess.Popen(
        _fa_cmd("results", store, "--table", "series"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    assert proc.wait(timeout=120) in (0, 141)
    assert b"Traceback" not in proc.stderr.read()


# ---------------------------------------------------------------- SIGTERM
SLOW_SPEC = """
[study]
name = "term"
repetitions = 3
seed = 21
pack = 1
[fixed]
n = 10
d = 20
steps = 2000
record_every = 100
activation = "tanh"
metrics = ["mse", "alignment"]
[grid]
p = [16, 32]
lam = [0.0, 0.05]
"""


def test_sigterm_behaves_like_ctrl_c(tmp_path):
    """SIGTERM to the driver: one line, exit 143, every stored run whole, no leaked
    semaphore warning (it used to exit 143 silently with one)."""
    (tmp_path / "spec.toml").write_text(SLOW_SPEC)
    proc = subprocess.Popen(
        _fa_cmd("sweep", "spec.toml", "--store", "s.sqlite", "--workers", "2", "--no-progress"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.time() + 90
    while _count(tmp_path / "s.sqlite") < 1 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    time.sleep(1)  # the resource tracker speaks after the driver is gone
    err = proc.stderr.read().decode()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted, run the same command again" in lines[0], err
    assert "leaked" not in err and "Traceback" not in err, err
    from feedback_alignment.experiments import Store

    with Store(tmp_path / "s.sqlite", create=False) as st:
        runs = st.runs()
        assert 1 <= len(runs) < 12
        for r in runs:
            assert st.series(r["run_id"], "mse")[0].size == 21
    assert not list(tmp_path.glob(".*.tmp"))


# ---------------------------------------------------------------- checked up front
def test_a_bad_fa_native_is_refused_before_anything(tmp_path, capsys, monkeypatch):
    """`fa reproduce` used to write its manifest first; `fa sweep` recorded every run as
    failed."""
    monkeypatch.setenv("FA_NATIVE", "yes")
    spec = tiny_spec(tmp_path)
    refused_nodes(
        capsys,
        tmp_path,
        "reproduce",
        "E2",
        "--profile",
        "smoke",
        "--out",
        tmp_path / "r",
        match='FA_NATIVE = "yes" is not accepted; accepted: 0, 1 or auto',
    )
    refused_nodes(
        capsys,
        tmp_path,
        "sweep",
        spec,
        "--store",
        tmp_path / "s.sqlite",
        "--executor",
        "inline",
        match='FA_NATIVE = "yes" is not accepted; accepted: 0, 1 or auto',
    )
    refused_nodes(capsys, tmp_path, "demo", "--steps", "1", "--reps", "1", match="FA_NATIVE = ")


def test_a_study_name_with_control_characters_is_printed_escaped(tmp_path, capsys):
    spec = tiny_spec(tmp_path, name="evil\\u001b[2Jname")
    capsys.readouterr()
    from feedback_alignment.cli import main

    rc = main(["sweep", str(spec), "--store", str(tmp_path / "s.sqlite"), "--dry-run"])
    out = capsys.readouterr()
    if rc == 2:  # the spec's own checks refuse the name: also fine, one line
        assert "\x1b" not in out.err
        return
    assert rc == 0
    assert "\x1b" not in out.out and "evil\\x1b[2Jname" in out.out


def test_a_write_killed_inside_its_manifest_leaves_a_reusable_directory(tmp_path):
    """previous_output: a leftover temporary file of the manifest's own atomic write (a
    kill inside it) is the command's, as those of its listed files are; a look-alike of
    no name it writes is still foreign."""
    from feedback_alignment.errors import ConfigError
    from feedback_alignment.outputs import previous_output, sha256, write_manifest

    (tmp_path / "a.csv").write_text("1,2\n")
    write_manifest(tmp_path, ".m.json", "tool", {"a.csv": sha256(tmp_path / "a.csv")})
    (tmp_path / "..m.json.ab12cd34.tmp").write_text('{"tool": "to')
    (tmp_path / ".a.csv.ef56gh78.tmp").write_text("1,")
    got = previous_output(tmp_path, ".m.json", "tool")
    assert got == {"a.csv": sha256(tmp_path / "a.csv"), "..m.json.ab12cd34.tmp": "",
                   ".a.csv.ef56gh78.tmp": ""}  # fmt: skip
    (tmp_path / ".other.x.tmp").write_text("not ours")
    with pytest.raises(ConfigError, match="other.x.tmp"):
        previous_output(tmp_path, ".m.json", "tool")
