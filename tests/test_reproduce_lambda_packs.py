"""The MNIST experiments' packs (E3, E4, their backprop baselines) on the deep rule family:
what they store, and that a pack stopped after a checkpoint resumes to the numbers of an
uninterrupted run (float64, byte-identical)."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


def test_e4_and_the_baselines_store_what_their_figures_draw(one_thread):
    from feedback_alignment.reproduce import baselines, e4

    kw = {**SMALL, "rep": 0, "base_seed": 2, "steps": 60}
    fa = e4.run_rep(**kw)["members"]
    assert sorted(fa[0]["series"]) == sorted([*e4.METRICS, "test_accuracy"])
    assert fa[0]["series"]["fc2_alignment"][0].tolist() == list(range(61))
    bp4 = baselines.run_rep("E4", lams=[0.0, 0.1, 0.3], **kw)["members"]
    bp3 = baselines.run_rep("E3", lams=[0.0, 0.1, 0.3], **kw)["members"]
    for m in (*bp4, *bp3):
        assert sorted(m["series"]) == ["loss", "test_accuracy"]
        assert m["series"]["test_accuracy"][0].tolist() == [0, 50, 60]
    # E4's backprop baseline starts from the FA run's weights: equal test accuracy at step 0,
    # then backprop moves it differently
    a_fa = fa[1]["series"]["test_accuracy"][1]
    a_bp = bp4[1]["series"]["test_accuracy"][1]
    assert a_fa[0] == a_bp[0] and not np.array_equal(a_fa, a_bp)


def test_a_baseline_lambda_does_not_depend_on_the_others_in_its_pack(one_thread):
    """A profile may run the baseline at fewer lambdas (quick: lambda = 0 alone); the runs
    it keeps are the very runs of the authors' three-lambda pack."""
    from feedback_alignment.reproduce import baselines

    kw = {**SMALL, "rep": 0, "base_seed": 2, "steps": 60}
    for exp in ("E3", "E4"):
        three = baselines.run_rep(exp, lams=[0.0, 0.1, 0.3], **kw)["members"]
        (alone,) = baselines.run_rep(exp, lams=[0.0], **kw)["members"]
        for name in ("test_accuracy", "loss"):
            for a, b in zip(alone["series"][name], three[0]["series"][name], strict=True):
                assert np.array_equal(a, b), (exp, name)


def test_one_e4_backprop_step_is_autograd_with_lambda_on_layers_2_and_3():
    """The E4 baseline's step against a plain autograd step of the same network (float64,
    1e-12): no feedback, lambda W added to the gradients of fc2 and fc3 only."""
    from feedback_alignment.deep.lambdas import E4, batch_at, paper_network, replicate
    from feedback_alignment.deep.lambdas import train_lambdas as train

    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 12, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (40,), generator=g)
    study = replace(E4, lr=0.05, batch=10, eval_every=1)
    net = paper_network("e4", "bp", hidden=8, inputs=12, classes=4, seed=1, dtype=torch.float64)
    nets = replicate(net, 3)
    p0 = [{k: v.detach().clone() for k, v in m.named_parameters()} for m in nets]
    assert sorted(p0[0]) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    train(nets, (x, y, x, y), study, order_seed=3, stop=1)
    idx = batch_at(0, 3, 40, 10)
    for k, lam in enumerate(study.lams):
        P = {n: v.clone().requires_grad_() for n, v in p0[k].items()}
        h = torch.relu(x[idx] @ P["fc1.weight"].T)
        h = torch.relu(h @ P["fc2.weight"].T)
        F.nll_loss(F.log_softmax(h @ P["fc3.weight"].T / 8, -1), y[idx]).backward()
        got = dict(nets[k].named_parameters())
        for n, v in P.items():
            decay = lam * v.detach() if n != "fc1.weight" else 0
            want = v.detach() - 0.05 * (v.grad + decay)
            assert torch.allclose(got[n].detach(), want, rtol=0, atol=1e-12), (n, lam)


def test_the_pipelines_checkpoint_carries_an_e4_pack_across_a_kill(
    tmp_path, one_thread, monkeypatch
):
    """The real reproduce.checkpoints.Checkpoint (header, hash, weights_only load) between
    an E4 pack killed right after its first save and the same pack started again: the
    numbers of an uninterrupted run, byte for byte, and the file is cleared afterwards."""
    from feedback_alignment.reproduce import e4
    from feedback_alignment.reproduce.checkpoints import Checkpoint

    class KilledAfterSave(Checkpoint):
        def save(self, state):
            super().save(state)
            raise KeyboardInterrupt("killed after a save")

    kw = {**SMALL, "rep": 0, "base_seed": 4, "steps": lambda_packs.CHUNK + 20}
    whole = e4.run_rep(**kw)
    ident = {"profile": "test", "seed": 4, "version": "0"}
    with pytest.raises(KeyboardInterrupt):
        e4.run_rep(**kw, checkpoint=KilledAfterSave(tmp_path, ident, "e4pack", every=0.0))
    ck = Checkpoint(tmp_path, ident, "e4pack", every=0.0)
    assert ck.path.is_file() and ck.load()["done"] == lambda_packs.CHUNK
    starts = []
    real = lambda_packs.train_lambdas

    def spy(*a, **k):
        starts.append(k["start"])
        return real(*a, **k)

    monkeypatch.setattr(lambda_packs, "train_lambdas", spy)
    resumed = e4.run_rep(**kw, checkpoint=Checkpoint(tmp_path, ident, "e4pack", every=1e9))
    assert starts[0] == lambda_packs.CHUNK  # it went on from the save, not from step 0
    assert _bytes(resumed) == _bytes(whole)
    ck.clear()
    assert not ck.path.exists()


def test_a_pack_of_no_steps_records_the_initial_state(one_thread):
    res = e3.run_rep(**{**SMALL, "rep": 0, "base_seed": 1, "steps": 0})
    for m in res["members"]:
        assert m["stop_step"] == 0
        assert m["series"]["alignment"][0].tolist() == [0]
        assert m["series"]["test_accuracy"][0].tolist() == [0]
