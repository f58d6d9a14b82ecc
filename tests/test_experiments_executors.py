"""Executors: the same 20-run grid through the local process pool, a real Dask
LocalCluster on 127.0.0.1 (by scheduler address) and in-process gives identical numbers;
the deep trainer runs through a sweep; a failure while running exits 1; fa sweep and
fa reproduce read one executor grammar (from_text), --workers and --scheduler included."""

import re
import subprocess
import sys
import textwrap

import pytest

from _badinput import fa, refused, tiny_spec
from feedback_alignment.experiments import Store, run_study

GRID20 = {
    "study": {"name": "grid20", "repetitions": 5, "seed": 11},
    "fixed": {
        "n": 10,
        "d": 20,
        "steps": 200,
        "record_every": 50,
        "activation": "tanh",
        "metrics": ["mse", "alignment", "w_change"],
    },
    "grid": {"p": [16, 32], "lam": [0.0, 0.05]},
}


def _numbers(path):
    with Store(path, create=False) as st:
        out = {}
        for r in st.runs():
            assert r["status"] == "done"
            series = tuple(
                st.series(r["run_id"], m)[1].tobytes() for m in st.run_metrics(r["run_id"])
            )
            out[r["run_id"]] = (r["seed"], r["final.mse"], r["final.alignment"], series)
        return out


@pytest.fixture(scope="module")
def loopback_cluster():
    distributed = pytest.importorskip("distributed")
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
    try:
        yield cluster
    finally:
        cluster.close()


def test_local_pool_and_dask_give_identical_results(tmp_path, loopback_cluster):
    addr = loopback_cluster.scheduler_address
    assert addr.startswith("tcp://127.0.0.1:")
    local = run_study(GRID20, tmp_path / "local.sqlite", executor="local", workers=2)
    dask = run_study(GRID20, tmp_path / "dask.sqlite", executor="dask", scheduler=addr)
    inline = run_study(GRID20, tmp_path / "inline.sqlite", executor="inline")
    assert local.ok and dask.ok and inline.ok and local.ran == dask.ran == 20
    a = _numbers(tmp_path / "local.sqlite")
    assert len(a) == 20
    assert a == _numbers(tmp_path / "dask.sqlite")
    assert a == _numbers(tmp_path / "inline.sqlite")
    with Store(tmp_path / "dask.sqlite", create=False) as st:
        rows = st.runs()
        assert {r["executor"] for r in rows} == {"dask"}
        assert len({r["worker"] for r in rows}) >= 1


def test_dask_without_scheduler_starts_a_loopback_cluster(tmp_path):
    pytest.importorskip("distributed")
    from feedback_alignment.experiments import Dask

    spec = dict(GRID20, grid={"p": [16], "lam": [0.0]}, study={"name": "d", "repetitions": 2})
    ex = Dask(workers=1)
    try:
        rep = run_study(spec, tmp_path / "d.sqlite", executor=ex)
        # everything it listens on is loopback: scheduler, its HTTP endpoint, the workers
        assert ex.cluster.scheduler.address.startswith("tcp://127.0.0.1:")
        assert ex.cluster.scheduler.http_server.address == "127.0.0.1"
        assert all(a.startswith("tcp://127.0.0.1:") for a in ex.client.scheduler_info()["workers"])
    finally:
        ex.close()
    assert rep.ok and rep.done == 2
    rep = run_study(spec, tmp_path / "i.sqlite", executor="inline")
    assert _numbers(tmp_path / "d.sqlite") == _numbers(tmp_path / "i.sqlite")


def test_unreachable_scheduler_is_bad_input_and_writes_nothing(tmp_path):
    pytest.importorskip("distributed")
    from feedback_alignment.errors import ConfigError
    from feedback_alignment.experiments import Dask

    with pytest.raises(ConfigError, match="no Dask scheduler answered at 'tcp://127.0.0.1:9'"):
        run_study(GRID20, tmp_path / "x.sqlite", executor=Dask("tcp://127.0.0.1:9", timeout=2))
    assert not (tmp_path / "x.sqlite").exists()


def test_deep_trainer_sweep(tmp_path):
    spec = {
        "study": {"name": "deep", "system": "deep", "repetitions": 1, "seed": 5},
        "fixed": {
            "data": {"source": "digits", "train_limit": 120, "test_limit": 60},
            "model": {"hidden": [16]},
            "train": {"steps": 6, "batch_size": 30, "eval_every": 3},
            "metrics": {"record_every": 3},
        },
        "grid": {"rule.name": ["fa", "bp"]},
    }
    rep = run_study(spec, tmp_path / "deep.sqlite", executor="inline")
    assert rep.ok and rep.done == 2, rep.failures
    with Store(tmp_path / "deep.sqlite", create=False) as st:
        rows = st.runs()
        assert {r["rule.name"] for r in rows} == {"fa", "bp"}
        r = rows[0]
        assert 0 <= r["final.final_test_accuracy"] <= 1 and r["stop_step"] == 6
        steps, loss = st.series(r["run_id"], "loss")
        assert steps.tolist() == [1, 2, 3, 4, 5, 6] and loss.shape == (6,)
        assert st.series(r["run_id"], "test_accuracy")[0].tolist() == [0, 3, 6]
    # seeded: the same spec gives the same numbers
    run_study(spec, tmp_path / "again.sqlite", executor="inline")
    with Store(tmp_path / "again.sqlite", create=False) as st2:
        assert [x["final.loss"] for x in st2.runs()] == [x["final.loss"] for x in rows]


def test_failure_while_running_exits_1(tmp_path):
    """A run that raises inside training is recorded as failed and `fa sweep` exits 1."""
    (tmp_path / "s.toml").write_text(
        textwrap.dedent(
            """
            [study]
            name = "fails"
            system = "deep"
            [fixed]
            data.source = "idx"
            data.path = "no-such-directory"
            train.steps = 1
            """
        )
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "feedback_alignment.cli",
            "sweep",
            "s.toml",
            "--store",
            "f.sqlite",
            "--executor",
            "inline",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 1, res.stderr
    assert "1 failed" in res.stderr and "failed: " in res.stderr
    with Store(tmp_path / "f.sqlite", create=False) as st:
        (row,) = st.runs()
        assert row["status"] == "failed" and "no-such-directory" in row["reason"]


def test_map_returns_task_order_on_inline_and_local_pool():
    """``fa reproduce``'s use: (fn, kwargs) tasks, results in task order whichever finishes
    first, ``on_done`` once per task, and each task on the executor's torch threads."""
    import torch

    from feedback_alignment.executors import Inline, LocalPool

    tasks = [(dict, {"i": i}) for i in range(5)] + [(torch.get_num_threads, {})]
    for ex in (Inline(threads=1), LocalPool(2, threads=1)):
        seen: list = []
        out = ex.map(tasks, lambda i, done, total, seen=seen: seen.append((i, done, total)))
        assert out == [{"i": i} for i in range(5)] + [1], ex.name
        assert sorted(i for i, _, _ in seen) == list(range(6))
        assert [(d, t) for _, d, t in seen] == [(d, 6) for d in range(1, 7)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("local:0", "executor 'local:0' is not accepted; accepted: local:N with N an integer"),
        ("inline:x", "accepted: inline:T with T an integer >= 1"),
        (
            "gpu",
            "--executor 'gpu' is not accepted; accepted: inline[:T], local[:N], dask[:ADDRESS]",
        ),
        ("local:²", "--executor 'local:²' is not accepted; accepted: local:N with N an integer"),
    ],
)
def test_executor_words_are_checked(text, message):
    from feedback_alignment.errors import ConfigError
    from feedback_alignment.executors import from_text

    with pytest.raises(ConfigError, match=re.escape(message)):
        from_text(text)


def test_the_distributed_cancel_bug_record_is_dropped_and_no_other():
    """distributed 2026.8's sync() logs a NameError traceback (through tornado) when Ctrl-C
    lands before its future exists; the Dask executor drops that one record only."""
    import logging

    from feedback_alignment.executors import _not_distributed_cancel_bug

    def record_of(source: str, filename: str) -> logging.LogRecord:
        scope: dict = {}
        exec(compile(source, filename, "exec"), scope)
        try:
            scope["cancel"]()
        except NameError:
            info = sys.exc_info()
        return logging.LogRecord("tornado.application", logging.ERROR, "", 0, "x", (), info)

    bug = record_of("def cancel():\n    future.cancel()\n", "/venv/distributed/utils.py")
    assert not _not_distributed_cancel_bug(bug)
    ours = record_of("def cancel():\n    future.cancel()\n", "/src/feedback_alignment/x.py")
    other = record_of("def cancel():\n    missing.cancel()\n", "/venv/distributed/utils.py")
    plain = logging.LogRecord("tornado.application", logging.ERROR, "", 0, "x", (), None)
    assert all(_not_distributed_cancel_bug(r) for r in (ours, other, plain))


def test_get_executor_reads_the_words_and_its_keywords_alike():
    """get_executor (public) is from_text: a name with workers= / scheduler=, or a word;
    both ways give the same executor, and two different counts or addresses are refused."""
    from feedback_alignment.errors import ConfigError
    from feedback_alignment.executors import Dask, Inline, LocalPool
    from feedback_alignment.experiments import get_executor

    assert isinstance(get_executor(), LocalPool) and get_executor().name == "local"
    assert get_executor("local", workers=3).workers == get_executor("local:3").workers == 3
    assert get_executor("local:3", workers=3).workers == 3  # the same count twice
    assert get_executor("inline:2").threads == 2 and isinstance(get_executor("inline"), Inline)
    addr = "tcp://127.0.0.1:8786"
    for ex in (get_executor("dask", scheduler=addr), get_executor(f"dask:{addr}")):
        assert isinstance(ex, Dask) and ex.scheduler == addr
    assert get_executor("dask", workers=2).scheduler is None
    refusals = [
        (("local:2",), {"workers": 3}, "--executor 'local:2' and --workers 3 give two"),
        (("dask:tcp://a:1",), {"scheduler": "tcp://b:2"}, "and --scheduler 'tcp://b:2' name two"),
        (("local",), {"scheduler": addr}, f"--scheduler '{addr}' needs --executor dask"),
        (("inline",), {"workers": 0}, "--workers 0 is not accepted; accepted: an integer >= 1"),
    ]
    for args, kwargs, message in refusals:
        with pytest.raises(ConfigError, match=re.escape(message)):
            get_executor(*args, **kwargs)


def test_sweep_takes_the_executor_words_of_reproduce(tmp_path, capsys):
    """fa sweep --executor inline / local:2 run (reproduce's words), with the same numbers,
    and the store records the executor's name."""
    spec = tiny_spec(tmp_path)
    numbers = []
    for word, name in (("inline", "inline"), ("local:2", "local")):
        store = tmp_path / f"{name}.sqlite"
        rc, lines = fa(capsys, "sweep", spec, "--store", store, "--executor", word)
        assert rc == 0, lines
        with Store(store, create=False) as st:
            assert {r["executor"] for r in st.runs()} == {name}
        numbers.append(_numbers(store))
    assert len(numbers[0]) == 8 and numbers[0] == numbers[1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--executor", "local:0"],
            "--executor 'local:0' is not accepted; accepted: local:N with N an integer >= 1",
        ),
        (
            ["--executor", "nonsense"],
            "--executor 'nonsense' is not accepted; accepted: inline[:T], local[:N], "
            "dask[:ADDRESS]",
        ),
        (
            ["--executor", "local:2", "--workers", "3"],
            "--executor 'local:2' and --workers 3 give two process counts; accepted: one of them",
        ),
        (
            ["--executor", "dask:tcp://127.0.0.1:1", "--scheduler", "tcp://127.0.0.1:2"],
            "--executor 'dask:tcp://127.0.0.1:1' and --scheduler 'tcp://127.0.0.1:2' name two "
            "schedulers",
        ),
        (
            ["--executor", "inline:1", "--scheduler", "tcp://127.0.0.1:2"],
            "--scheduler 'tcp://127.0.0.1:2' needs --executor dask; got --executor inline:1",
        ),
        (["--workers", "0"], "--workers 0 is not accepted; accepted: an integer >= 1"),
        (["--executor", "nonsense", "--dry-run"], "--executor 'nonsense' is not accepted"),
        (
            ["--executor", "inline", "--workers", "2"],
            "--workers 2 with --executor 'inline': inline runs in this process; accepted: "
            "--workers with local or dask",
        ),
        (
            ["--executor", "inline:2"],
            "--executor 'inline:2': a sweep's packs run on the spec's study.threads (1), not "
            "on T; accepted: --executor inline, with threads = T in [study]",
        ),
    ],
)
def test_sweep_refuses_bad_executor_words_writing_nothing(tmp_path, capsys, argv, message):
    spec, store = tiny_spec(tmp_path), tmp_path / "s.sqlite"
    line = refused(capsys, tmp_path, "sweep", spec, "--store", store, *argv, match=message)
    assert line.startswith("fa sweep: error: ")
    assert not (tmp_path / "s.sqlite").exists()
