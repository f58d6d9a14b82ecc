"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids OpenMP spin contention on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY_SPEC = {
    "study": {"name": "tiny", "repetitions": 2, "seed": 3},
    "fixed": {"n": 6, "d": 5, "steps": 20, "record_every": 10, "activation": "relu"},
    "grid": {"p": [4, 8], "lam": [0.0, 0.2]},
}


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """A small finished study store (for the bad-input catalogue); copy before use."""
    from feedback_alignment.experiments import run_study

    path = tmp_path_factory.mktemp("tiny") / "s.sqlite"
    assert run_study(TINY_SPEC, path, executor="inline").ok
    return path


@pytest.fixture
def store_copy(tiny_store, tmp_path):
    """(directory, store path): a private copy of ``tiny_store`` in ``tmp_path``."""
    import shutil

    dst = tmp_path / "s.sqlite"
    shutil.copyfile(tiny_store, dst)
    return tmp_path, dst
