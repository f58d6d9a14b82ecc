"""The E3 and E4 networks and the backprop baseline, trained side by side over the lambdas.

Each study's step is checked in float64 to 1e-12 against a plain autograd implementation of
the authors' layers written here, independent of the library: an FA layer as an
autograd.Function (grad_input = grad_output @ B, grad_weight = grad_output^T x), lambda W
added to the gradients of the layers they regularise, an SGD step.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from feedback_alignment.deep.convert import rule_layers
from feedback_alignment.deep.lambdas import (
    BP_BASELINE,
    E3,
    E4,
    batch_at,
    paper_network,
    replicate,
    train_lambdas,
)
from feedback_alignment.errors import ConfigError

D_IN, H, C, N, BATCH, LR = 20, 16, 5, 48, 12, 0.05
LAMS = (0.0, 0.1, 0.3)


class FALinear(torch.autograd.Function):
    """y = x W^T; backward: grad_x = g B, grad_W = g^T x; keeps g (the layer's error)."""

    @staticmethod
    def forward(ctx, x, W, B, store, name):
        ctx.save_for_backward(x, B)
        ctx.store, ctx.name = store, name
        return x @ W.T

    @staticmethod
    def backward(ctx, g):
        x, B = ctx.saved_tensors
        ctx.store[ctx.name] = g
        return g @ B, g.T @ x, None, None, None


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (N,), generator=g)
    return x, y, x[:20], y[:20]


def _weights(net):
    return {
        n: (m.weight.detach().clone(), m.feedback_weight().clone()) for n, m in rule_layers(net)
    }


def _study(base, **kw):
    from dataclasses import replace

    return replace(base, lams=LAMS, lr=LR, batch=BATCH, eval_every=1, **kw)


def _oracle_fa(weights, names, scale, decay, x, y, lam):
    """The authors' FA network, one SGD step: new weights, loss, and each layer's error."""
    store = {}
    Ws = {n: weights[n][0].clone().requires_grad_() for n in names}
    h = x
    for i, n in enumerate(names):
        h = FALinear.apply(h, Ws[n], weights[n][1], store, n)
        if i < len(names) - 1:
            h = torch.relu(h)
    loss = F.nll_loss(F.log_softmax(h * scale, -1), y)
    loss.backward()
    new = {}
    for n in names:
        g = Ws[n].grad + (lam * Ws[n].detach() if n in decay else 0)
        new[n] = Ws[n].detach() - LR * g
    return new, float(loss.detach()), store


def _check_fa(name, names, scale, decay, per_sample):
    data = _data()
    study = _study({"e3": E3, "e4": E4}[name])
    net = paper_network(name, hidden=H, inputs=D_IN, classes=C, seed=3, dtype=torch.float64)
    nets = replicate(net, 3)
    w0 = [_weights(m) for m in nets]
    for w in w0[1:]:  # one initialisation and one feedback for every lambda
        assert all(torch.equal(w[n][0], w0[0][n][0]) and torch.equal(w[n][1], w0[0][n][1])
                   for n in names)  # fmt: skip
    out = train_lambdas(nets, data, study, order_seed=9, stop=1)
    idx = batch_at(0, 9, N, BATCH)
    x, y = data[0][idx], data[1][idx]
    for k, lam in enumerate(LAMS):
        new, loss, store = _oracle_fa(w0[k], names, scale, decay, x, y, lam)
        got = _weights(nets[k])
        for n in names:
            assert torch.allclose(got[n][0], new[n], rtol=0, atol=1e-12)
            assert torch.equal(got[n][1], w0[k][n][1])  # B never moves
        assert abs(out["loss"][0, k] - loss) < 1e-12
        for n in study.record_layers:
            e, (W, B) = store[n], w0[k][n]
            a, b = e @ B, e @ W
            if per_sample:
                want = float((F.cosine_similarity(a, b, dim=1)).mean())
            else:
                want = float((a * b).sum() / (a.norm() * b.norm()))
            assert abs(out["alignment"][n][0, k] - want) < 1e-12
            wa = float((B * W).sum() / (B.norm() * W.norm()))
            assert abs(out["weight_alignment"][n][0, k] - wa) < 1e-12
    return nets, w0


def test_one_e3_step_is_the_authors_fa_step_for_every_lambda():
    _check_fa("e3", ["hidden", "out"], 1 / math.sqrt(H), {"out"}, per_sample=True)


def test_one_e4_step_is_the_authors_fa_step_for_every_lambda():
    nets, w0 = _check_fa("e4", ["fc1", "fc2", "fc3"], 1 / H, {"fc2", "fc3"}, per_sample=False)
    # lambda acted only on layers 2 and 3: layer 1 moved alike for every lambda
    w1 = [_weights(m)["fc1"][0] for m in nets]
    assert torch.equal(w1[0], w1[1]) and torch.equal(w1[1], w1[2])
    w3 = [_weights(m)["fc3"][0] for m in nets]
    assert not torch.allclose(w3[0], w3[2])


def test_one_backprop_baseline_step_is_autograd_with_the_loss_penalty():
    data = _data()
    study = _study(BP_BASELINE)
    net = paper_network("bp_baseline", "bp", hidden=H, inputs=D_IN, classes=C, seed=3,
                        dtype=torch.float64)  # fmt: skip
    nets = replicate(net, 3)
    p0 = [{k: v.detach().clone() for k, v in m.named_parameters()} for m in nets]
    assert "hidden.bias" in p0[0] and "out.bias" in p0[0]  # nn.Linear with biases
    out = train_lambdas(nets, data, study, order_seed=4, stop=1)
    idx = batch_at(0, 4, N, BATCH)
    x, y = data[0][idx], data[1][idx]
    for k, lam in enumerate(LAMS):
        P = {n: v.clone().requires_grad_() for n, v in p0[k].items()}
        h = torch.relu(F.linear(x, P["hidden.weight"], P["hidden.bias"]))
        logits = F.linear(h, P["out.weight"], P["out.bias"]) / math.sqrt(H)
        nll = F.nll_loss(F.log_softmax(logits, -1), y)
        (nll + lam * P["out.weight"].square().sum()).backward()
        got = dict(nets[k].named_parameters())
        for n, v in P.items():
            assert torch.allclose(got[n].detach(), v.detach() - LR * v.grad, rtol=0, atol=1e-12)
        assert abs(out["loss"][0, k] - float(nll.detach())) < 1e-12
        assert abs(out["alignment"]["out"][0, k] - 1) < 1e-12  # backprop: B = W


def test_the_bp_baseline_uses_pytorchs_default_initialisation():
    net = paper_network("bp_baseline", "bp", hidden=H, inputs=D_IN, classes=C, seed=3)
    bound = 1 / math.sqrt(D_IN)
    w = net.hidden.weight.detach()
    assert float(w.abs().max()) <= bound and float(w.std()) < 0.7 * bound
    e4 = paper_network("e4", hidden=200, inputs=D_IN, classes=C, seed=3)
    assert abs(float(e4.fc2.weight.detach().std()) - 1) < 0.02  # N(0, 1)
    assert abs(float(e4.fc2.feedback_weight().std()) - 1) < 0.02


def test_steps_resume_exactly_and_every_lambda_sees_the_same_batches():
    data = _data()
    study = _study(E4)
    net = paper_network("e4", hidden=H, inputs=D_IN, classes=C, seed=1, dtype=torch.float64)
    whole, parts = replicate(net, 3), replicate(net, 3)
    a = train_lambdas(whole, data, study, order_seed=2, stop=9, record_end=True)
    b1 = train_lambdas(parts, data, study, order_seed=2, start=0, stop=4)
    b2 = train_lambdas(parts, data, study, order_seed=2, start=4, stop=9, record_end=True)
    for m, n in zip(whole, parts, strict=True):
        for p, q in zip(m.parameters(), n.parameters(), strict=True):
            assert torch.equal(p, q)
    assert np.array_equal(a["loss"], np.concatenate([b1["loss"], b2["loss"]]))
    assert a["step"].tolist() == list(range(10)) and a["eval_step"].tolist() == list(range(10))
    # epochs of N // BATCH = 4 steps: each a permutation, reshuffled every epoch
    epoch = torch.cat([batch_at(t, 2, N, BATCH) for t in range(4)])
    assert sorted(epoch.tolist()) == list(range(N))
    assert not torch.equal(batch_at(0, 2, N, BATCH), batch_at(4, 2, N, BATCH))
    assert a["test_accuracy"].shape == (10, 3)
    assert (a["loss"][0] == a["loss"][0, 0]).all()  # one start, one batch: equal first losses


def test_bad_settings_are_refused_in_one_line():
    net = paper_network("e3", hidden=H, inputs=D_IN, classes=C)
    with pytest.raises(ConfigError, match="3 lambdas need 3 networks"):
        train_lambdas([net], _data(), E3, order_seed=0, stop=1)
    with pytest.raises(ConfigError, match="layer 'fc2' is not a rule layer"):
        train_lambdas(replicate(net, 3), _data(), E4, order_seed=0, stop=1)
    with pytest.raises(ConfigError, match="study"):
        paper_network("e5")


def test_the_deep_trainer_trains_the_e4_network_with_lambda_on_layers_2_and_3(one_thread):
    from feedback_alignment.deep.config import build, parse_config
    from feedback_alignment.deep.trainer import run_from_config

    cfg = {
        "data": {"source": "digits", "train_limit": 120, "test_limit": 60},
        "model": {"name": "e4", "hidden": 32},
        "rule": {"name": "fa"},
        "train": {"lr": 0.01, "batch_size": 60, "steps": 3, "eval_every": 3,
                  "weight_decay": {"fc2": 0.1, "fc3": 0.1}},
        "metrics": {"record_every": 1, "layers": ["fc2", "fc3"]},
    }  # fmt: skip
    _, model, _ = build(parse_config(cfg))
    assert [n for n, _ in rule_layers(model)] == ["fc1", "fc2", "fc3"]
    assert abs(float(model.fc2.feedback_weight().std()) - 1) < 0.1  # B ~ N(0, 1) by default
    assert model.fc1.bias is None and model.scale.factor == 1 / 32
    r = run_from_config(cfg)
    assert len(r["error_alignment/fc3"]) == 3 and len(r["cosine/fc2"]) == 3
