"""Trainer, config, E3 network and run_from_config; one epoch of real Fashion-MNIST."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from feedback_alignment.deep import convert, rule_layers
from feedback_alignment.deep.config import load_config, parse_config
from feedback_alignment.deep.data import digits, fashion_mnist
from feedback_alignment.deep.models import Scale, build_model, e3_network, mlp, small_cnn
from feedback_alignment.deep.trainer import Trainer, run_from_config
from feedback_alignment.errors import ConfigError, DivergenceError

ALL_RULES = ["bp", "fa", "usf", "frsf", "brsf", "kp", "wm", "dfa"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fashion():
    return fashion_mnist()


@pytest.mark.parametrize("rule", ALL_RULES)
def test_one_epoch_of_fashion_mnist_beats_chance(fashion, rule):
    net = mlp([784, 128, 64, 10], seed=0)
    model = convert(net, rule, seed=0, input_shape=(1, 28, 28) if rule == "dfa" else None)
    x = fashion.prepare(fashion.x_test[:500])
    assert torch.equal(model(x), net(x))  # convert leaves the forward outputs unchanged
    tr = Trainer(model, fashion, optimizer="adam", lr=1e-3, batch_size=128, epochs=1, eval_every=0)
    hist = tr.fit()
    assert tr.step == math.ceil(60000 / 128)
    assert hist["eval_step"] == [0, tr.step]
    assert hist["test_accuracy"][0] < 0.2  # untrained: about chance
    assert hist["test_accuracy"][-1] > 0.75  # chance is 0.10


def test_e3_network_matches_the_paper():
    net = e3_network(seed=3)
    assert [n for n, _ in net.named_children()] == ["flatten", "hidden", "relu", "out", "scale"]
    assert net.hidden.weight.shape == (1000, 784) and net.hidden.bias is None
    assert net.out.weight.shape == (10, 1000) and net.out.bias is None
    assert isinstance(net.scale, Scale) and net.scale.factor == pytest.approx(1 / math.sqrt(1000))
    for w in (net.hidden.weight.detach(), net.out.weight.detach()):
        assert abs(float(w.mean())) < 0.02 and abs(float(w.std()) - 1.0) < 0.02
    x = torch.randn(3, 1, 28, 28)
    h = torch.relu(x.flatten(1) @ net.hidden.weight.T)
    assert torch.allclose(net(x), h @ net.out.weight.T / math.sqrt(1000), rtol=1e-5, atol=1e-5)
    model = convert(net, "fa", scale=1.0)
    assert abs(float(model.out.feedback.std()) - 1.0) < 0.05
    assert torch.equal(e3_network(seed=3).out.weight, net.out.weight)


def test_e3_config_records_the_paper_metrics_per_step():
    cfg = {
        "data": {"source": "mnist", "train_limit": 1200, "test_limit": 500},
        "model": {"name": "e3", "hidden": 200},
        "rule": {"name": "fa"},
        "train": {
            "lr": 0.01,
            "batch_size": 600,
            "steps": 4,
            "eval_every": 2,
            "weight_decay": {"out": 0.3},
        },
        "metrics": {"record_every": 1, "layers": ["out"]},
    }
    seen = []
    r = run_from_config(cfg, callbacks=[lambda tr, row: seen.append(row)])
    assert r["record_step"] == [1, 2, 3, 4] and r["eval_step"] == [0, 2, 4]
    assert len(r["error_alignment/out"]) == 4 and len(r["cosine/out"]) == 4
    assert "cosine/hidden" not in r
    assert [row["step"] for row in seen] == [1, 2, 3, 4]
    assert seen[0]["cosine/out"] == r["cosine/out"][0]
    assert r["config"]["rule"]["scale"] is None  # e3 draws B ~ N(0, 1) by default
    # same config, same numbers
    again = run_from_config(cfg)
    assert again["error_alignment/out"] == r["error_alignment/out"]
    assert again["test_accuracy"] == r["test_accuracy"]


def test_weight_decay_per_layer_is_applied_to_that_layer_only():
    ds = digits().limit(64, 16)
    net = convert(build_model("e3", hidden=20, inputs=64, classes=10), "kp", scale=1.0)
    w0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    tr = Trainer(net, ds, lr=0.1, batch_size=64, steps=1, weight_decay={"out": 0.5}, eval_every=0)
    x, y = Trainer(net, ds, batch_size=64)._next_batch()  # same seed: the same first batch
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    grads = {n: p.grad.detach().clone() for n, p in net.named_parameters()}
    tr.train_step()
    for n, p in net.named_parameters():
        lam = 0.5 if n.startswith("out.") else 0.0
        expect = w0[n] - 0.1 * (grads[n] + lam * w0[n])
        assert torch.allclose(p.detach(), expect, atol=1e-6), n
    # KP: B received W's update and W's decay
    assert torch.allclose(
        net.out.feedback - net.out.weight, (w0["out.feedback"] - w0["out.weight"]) * 0.95, atol=1e-6
    )
    with pytest.raises(ConfigError) as exc:
        Trainer(net, ds, weight_decay={"beta": 0.1})
    assert "'beta'" in str(exc.value) and "out" in str(exc.value)


def test_schedules_adam_and_determinism():
    ds = digits()
    lrs = {}
    for schedule in ("constant", "step", "cosine", "exponential"):
        model = convert(mlp([64, 32, 10]), "fa")
        tr = Trainer(
            model,
            ds,
            optimizer="adam",
            lr=0.01,
            batch_size=64,
            steps=10,
            schedule=schedule,
            milestones=(5,),
            gamma=0.5,
            eval_every=0,
        )
        lrs[schedule] = tr.fit()["lr"]
    assert lrs["constant"] == [0.01] * 10
    assert lrs["step"] == [0.01] * 5 + [0.005] * 5
    assert lrs["cosine"][0] == 0.01 and lrs["cosine"][5] == pytest.approx(0.005)
    assert lrs["exponential"][5] == pytest.approx(0.01 * 0.5**0.5)
    cfg = {
        "data": {"source": "digits"},
        "model": {"hidden": [16]},
        "rule": {"name": "brsf"},
        "train": {
            "batch_size": 100,
            "steps": 15,
            "eval_every": 5,
            "optimizer": "adamw",
            "lr": 0.01,
        },
    }
    a, b = run_from_config(cfg), run_from_config(cfg)
    assert a["loss"] == b["loss"] and a["test_accuracy"] == b["test_accuracy"]
    cfg["seed"] = 1
    assert run_from_config(cfg)["loss"] != a["loss"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_checkpoint_resume_gives_the_same_run(tmp_path, dtype):
    ds = digits()

    def make():
        return Trainer(
            convert(mlp([64, 24, 10], seed=2), "wm"),
            ds,
            lr=0.05,
            batch_size=100,
            steps=30,
            eval_every=10,
            dtype=dtype,
            checkpoint_dir=tmp_path,
            checkpoint_every=12,
        )

    full = make()
    full.fit()
    files = sorted(p.name for p in tmp_path.iterdir())
    # the checkpoints and their manifest (the SHA-256 that makes them provably the trainer's)
    assert files == [
        ".fa-checkpoints.json",
        "step-0000012.pt",
        "step-0000024.pt",
        "step-0000030.pt",
    ]
    part = make()
    part.load_checkpoint(tmp_path / "step-0000012.pt")
    part.fit()
    assert part.history["loss"] == full.history["loss"]
    for (n, a), b in zip(
        full.model.state_dict().items(), part.model.state_dict().values(), strict=True
    ):
        if not n.endswith("_extra_state"):
            assert torch.equal(a, b), n
    assert part.model[1].weight.dtype == getattr(torch, dtype)


def test_measurement_and_mirror_during_training():
    ds = digits()
    model = convert(mlp([64, 32, 10]), "wm", options={"lr": 0.1, "decay": 0.1})
    tr = Trainer(
        model, ds, lr=0.05, batch_size=64, steps=40, eval_every=0, record_every=5, measure_every=20
    )
    h = tr.fit()
    assert h["record_step"] == list(range(5, 41, 5)) and h["measure_step"] == [20, 40]
    assert h["cosine/fc2"][-1] > 0.9 > abs(h["cosine/fc2"][0]) + 0.3
    assert len(h["measure/update_cosine/fc1"]) == 2
    assert h["measure/update_cosine/fc1"][-1] > 0.8
    assert math.isnan(h["measure/error_alignment/fc1"][0])


def test_divergence_is_reported_with_the_step():
    model = convert(mlp([64, 32, 10]), "fa")
    tr = Trainer(model, digits(), lr=1e38, batch_size=64, steps=50, eval_every=0)
    with pytest.raises(DivergenceError) as exc:
        tr.fit()
    msg = str(exc.value)
    assert "at step" in msg and "learning rate" in msg and "'fa'" in msg and "\n" not in msg


def test_config_errors_are_one_line(tmp_path):
    for bad, needle in [
        ({"trian": {}}, "unknown config key 'trian'"),
        ({"train": {"lr": 0.1, "learning_rate": 1}}, "train.learning_rate"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"batch_size": 1.5}}, "train.batch_size"),
        ({"model": {"bias": 1}}, "model.bias"),
        ({"data": []}, "[data]"),
    ]:
        with pytest.raises(ConfigError) as exc:
            parse_config(bad)
        assert needle in str(exc.value) and "\n" not in str(exc.value)
    for cfg, needle in [
        ({"rule": {"name": "xyz"}}, "rule"),
        ({"model": {"name": "resnet"}}, "model"),
        ({"train": {"optimizer": "lbfgs"}}, "optimizer"),
        ({"data": {"source": "idx"}}, "data.path"),
        ({"metrics": {"layers": ["nope"]}}, "record_layers"),
    ]:
        with pytest.raises(ConfigError) as exc:
            run_from_config(cfg)
        assert needle in str(exc.value) and "\n" not in str(exc.value)
    p = tmp_path / "c.toml"
    p.write_text("[train]\nlr = = 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert "not valid TOML" in str(exc.value)
    p.write_text('seed = 3\n[rule]\nname = "kp"\n')
    assert load_config(p)["rule"]["name"] == "kp" and load_config(p)["seed"] == 3


def test_cnn_trains_with_dfa_and_reports_layers():
    ds = digits()
    net = small_cnn(in_channels=1, classes=10, image=8, width=4)
    model = convert(net, "dfa", input_shape=(1, 8, 8))
    assert [n for n, _ in rule_layers(model)] == ["conv1", "conv2", "fc"]
    tr = Trainer(model, ds, optimizer="adam", lr=0.01, batch_size=64, epochs=3, eval_every=0)
    assert tr.fit()["test_accuracy"][-1] > 0.5
