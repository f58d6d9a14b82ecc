"""The MNIST experiments' packs (E3, E4, their backprop baselines) on the deep rule family:
what they store, and that a pack stopped after a checkpoint resumes to the numbers of an
uninterrupted run (float64, byte-identical)."""

import numpy as np
import pytest
import torch

from feedback_alignment.reproduce import e3, lambda_packs

SMALL = {"source": "digits", "train": 300, "test": 100, "hidden": 24, "batch": 50,
         "eval_every": 50, "lr": 1e-2, "dtype": "float64"}  # fmt: skip


class FileCheckpoint:
    """A stand-in for reproduce.checkpoints.Checkpoint: one file, written whole, loaded
    with weights_only=True; ``due`` every ``every`` calls; ``stop_after`` saves it raises
    (a kill right after a save)."""

    def __init__(self, path, every=1, stop_after=None):
        self.path, self.every, self.stop_after = path, every, stop_after
        self.calls = self.saves = 0

    def load(self):
        return torch.load(self.path, weights_only=True) if self.path.is_file() else None

    def due(self):
        self.calls += 1
        return self.calls % self.every == 0

    def save(self, state):
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)
        self.saves += 1
        if self.stop_after is not None and self.saves >= self.stop_after:
            raise KeyboardInterrupt("killed after a save")

    def clear(self):
        self.path.unlink(missing_ok=True)


def _bytes(res):
    return [
        {k: (s.tobytes(), v.tobytes()) for k, (s, v) in m["series"].items()} for m in res["members"]
    ]


@pytest.mark.parametrize("stop_after", [1, 2])
def test_a_stopped_e3_pack_resumes_to_the_uninterrupted_numbers(tmp_path, one_thread, stop_after):
    kw = {**SMALL, "rep": 0, "base_seed": 5, "steps": 2 * lambda_packs.CHUNK + 30}
    whole = e3.run_rep(**kw)
    ck = FileCheckpoint(tmp_path / "ck.pt", stop_after=stop_after)
    with pytest.raises(KeyboardInterrupt):
        e3.run_rep(**kw, checkpoint=ck)
    saved = torch.load(ck.path, weights_only=True)
    assert saved["done"] == stop_after * lambda_packs.CHUNK
    again = FileCheckpoint(tmp_path / "ck.pt")
    resumed = e3.run_rep(**kw, checkpoint=again)
    assert _bytes(resumed) == _bytes(whole)
    assert again.saves == 2 - stop_after  # it went on from the save, not from step 0
    # no checkpoint object at all: the same numbers
    assert _bytes(e3.run_rep(**kw, checkpoint=None)) == _bytes(whole)


def test_an_e3_pack_stores_three_lambdas_sharing_one_start(one_thread):
    res = e3.run_rep(**SMALL, rep=0, base_seed=1, steps=120)
    ms = res["members"]
    assert len(ms) == len(e3.E3_LAMS) and all(m["stop_step"] == 120 for m in ms)
    steps, _ = ms[0]["series"]["alignment"]
    assert steps.tolist() == list(range(121))
    esteps, acc = ms[0]["series"]["test_accuracy"]
    assert esteps.tolist() == [0, 50, 100, 120]
    assert all(0 <= a <= 1 for a in acc)
    # one initialisation and one feedback: equal weight alignment at step 0 for every lambda
    w0 = [m["series"]["weight_alignment"][1][0] for m in ms]
    assert w0[0] == w0[1] == w0[2]
    # lambda on the output layer moves its weights apart from lambda = 0's
    assert ms[0]["series"]["weight_alignment"][1][-1] != ms[2]["series"]["weight_alignment"][1][-1]
    assert np.isfinite(res["seconds"]) and res["seconds"] > 0
