"""Dropout in place of weight decay (the authors' dropout runs): the ``dropout`` option.

The reference step with a mask is checked against autograd through torch.nn.Dropout's own
backward and an FA output layer; every path that runs dropout is checked against a loop of
reference steps fed the same masks (float64, 1e-12); the paths and kernels that cannot run
it refuse in one line; and the authors' alignment-based stopping rule is checked.
"""

import numpy as np
import pytest
import torch

from feedback_alignment.activations import ACTIVATIONS, paper_lr
from feedback_alignment.errors import ConfigError
from feedback_alignment.twolayer import dropout, reference
from feedback_alignment.twolayer.data import random_teacher
from feedback_alignment.twolayer.dropout import keep_mask
from feedback_alignment.twolayer.engine import Plateau, TwoLayerEnsemble
from feedback_alignment.twolayer.kernels import choose
from feedback_alignment.twolayer.monitor import paper_min_steps
from feedback_alignment.twolayer.schema import FIELDS

N, D, P, STEPS = 8, 12, 30, 20
SEEDS, LR, Q = [3, 4, 5], [0.01, 0.005, 0.01], [0.4, 0.0, 0.7]


class FAOutput(torch.autograd.Function):
    """u = H beta / sqrt p, sending the error down through b (the authors' FA layer)."""

    @staticmethod
    def forward(ctx, H, beta, b):
        ctx.save_for_backward(H, b)
        return H @ beta / H.shape[1] ** 0.5

    @staticmethod
    def backward(ctx, g):
        H, b = ctx.saved_tensors
        s = H.shape[1] ** 0.5
        return g[:, None] * b[None, :] / s, H.T @ g / s, None


@pytest.mark.parametrize("act", ["relu", "tanh", "linear"])
def test_reference_step_with_a_mask_is_autograd_through_nn_dropout(act):
    """psi(XW^T) -> nn.Dropout (its mask fixed by reseeding) -> FA output layer, MSE: the
    autograd update equals the reference step with that mask."""
    X, y = random_teacher(N, D, P, "tanh", seed=1)
    ens = TwoLayerEnsemble(D, P, seeds=[2], activation=act)
    W0, b0, fb = ens.W[0].clone(), ens.beta[0].clone(), ens.b[0].clone()
    q, eta = 0.4, 0.05
    W, beta = W0.clone().requires_grad_(), b0.clone().requires_grad_()
    drop = torch.nn.Dropout(q).train()
    torch.manual_seed(11)
    Hd = drop(ens.activation(X @ W.T))
    torch.manual_seed(11)  # the same draws on a tensor of ones: nn.Dropout's mask itself
    mask = (drop(torch.ones(N, P, dtype=torch.float64)) != 0).double()
    u = FAOutput.apply(Hd, beta, fb)
    ((u - y).square().mean()).backward()
    W_ref, beta_ref = reference.step(W0, b0, fb, X, y, psi=act, eta=eta, mask=mask, q=q)
    assert torch.allclose(W0 - eta * W.grad, W_ref, rtol=0, atol=1e-12)
    assert torch.allclose(b0 - eta * beta.grad, beta_ref, rtol=0, atol=1e-12)
    assert 0 < mask.mean() < 1


def _reference_run(ens, X, y, rules, lam=0.0):
    W, beta, b = ens.W.clone(), ens.beta.clone(), ens.b.clone()
    out = []
    for k, seed in enumerate(ens.seeds):
        Wk, bk, mses = W[k], beta[k], []
        for t in range(STEPS):
            keep = keep_mask(seed, t, Q[k], P, N)
            mask = keep.T.to(X.dtype)
            S = mask / (1 - Q[k])
            u = ens.activation(X @ Wk.T) * S @ bk / P**0.5
            mses.append(float((u - y).square().mean()))
            Wk, bk = reference.step(
                Wk, bk, b[k], X, y, psi=ens.activation, eta=LR[k], lam=lam, rule=rules[k],
                mask=mask, q=Q[k],
            )  # fmt: skip
        out.append((Wk, bk, mses))
    return out


def rel(a, b):
    return float((a - b).norm() / b.norm())


RUNS_DROPOUT = [("explicit", "torch"), ("rowspace", "torch"), ("rowspace", "native"),
                ("auto", "auto")]  # fmt: skip


@pytest.mark.parametrize("path, kernels", RUNS_DROPOUT)
@pytest.mark.parametrize("act", ["relu", "tanh", "linear", "sigmoid"])
def test_every_path_that_runs_dropout_follows_the_reference_with_the_same_masks(path, kernels, act):
    """Every path and kernel that takes dropout, against reference steps fed the masks of
    dropout.keep_mask (which the native kernels draw in their own loops)."""
    X, y = random_teacher(N, D, P, "tanh", seed=7)
    ens = TwoLayerEnsemble(D, P, seeds=SEEDS, activation=act)
    rules = ["fa", "bp", "fa"]
    expected = _reference_run(ens, X, y, rules, lam=0.01)
    h = ens.fit(X, y, rule=rules, lr=LR, lam=0.01, dropout=Q, steps=STEPS, record_every=1,
                metrics=("mse", "alignment"), path=path, chunk_members=2,
                kernels=kernels)  # fmt: skip
    assert h.path == ("rowspace" if path == "auto" else path)
    assert h.kernels == kernels or (kernels == "auto" and h.kernels in ("torch", "native"))
    for k, (Wk, bk, mses) in enumerate(expected):
        assert rel(ens.W[k], Wk) < 1e-12 and rel(ens.beta[k], bk) < 1e-12
        got, want = (
            torch.as_tensor(h.metrics["mse"][:-1, k]),
            torch.tensor(mses, dtype=torch.float64),
        )
        assert rel(got, want) < 1e-12


def test_masks_are_per_member_and_reproducible_alone_or_in_any_ensemble():
    X, y = random_teacher(N, D, P, "relu", seed=7)
    big = TwoLayerEnsemble(D, P, seeds=SEEDS, activation="relu")
    big.fit(X, y, lr=1e-2, dropout=Q, steps=30, chunk_members=1)
    alone = TwoLayerEnsemble(D, P, seeds=[SEEDS[2]], activation="relu")
    alone.fit(X, y, lr=1e-2, dropout=Q[2], steps=10)
    alone.fit(X, y, lr=1e-2, dropout=Q[2], steps=20)  # the mask stream goes on across fits
    # the same masks: equal up to the rounding of a fit resumed from a new base W
    assert rel(alone.W[0], big.W[2]) < 1e-12 and rel(alone.beta[0], big.beta[2]) < 1e-12
    assert not torch.allclose(big.beta[0], big.beta[2])
    f32 = TwoLayerEnsemble(D, P, seeds=SEEDS, activation="relu", dtype="float32")
    f32.fit(X, y, lr=1e-2, dropout=Q, steps=30)
    assert rel(f32.beta.double(), big.beta) < 1e-4  # same masks in float32


def test_dropout_zero_is_the_plain_step_and_dropout_changes_the_run():
    X, y = random_teacher(N, D, P, "relu", seed=7)
    a, b, c = (TwoLayerEnsemble(D, P, seeds=[1], activation="relu") for _ in range(3))
    a.fit(X, y, lr=1e-2, steps=20, path="explicit")
    b.fit(X, y, lr=1e-2, steps=20, dropout=0.0, path="explicit")
    c.fit(X, y, lr=1e-2, steps=20, dropout=0.5, path="explicit")
    assert torch.equal(a.W, b.W) and not torch.allclose(a.W, c.W)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"path": "linear_fa"}, "path 'linear_fa' cannot run dropout"),
        ({"kernels": "compiled"}, "kernels='compiled' cannot run dropout"),
        ({"dropout": 1.0}, "dropout = 1.0 is not accepted; accepted: a number >= 0 and < 1"),
        ({"dropout": -0.1}, "dropout = -0.1 is not accepted; accepted: a number >= 0 and < 1"),
        ({"dropout": [0.1, 0.2]}, r"1 such numbers, one per member \(got shape \(2,\)\)"),
    ],
)
def test_paths_and_kernels_without_a_mask_refuse_in_one_line(kwargs, match):
    X, y = random_teacher(N, D, P, "linear", seed=7)
    ens = TwoLayerEnsemble(D, P, seeds=[1], activation="linear")
    with pytest.raises(ConfigError, match=match) as err:
        ens.fit(X, y, steps=2, **({"dropout": 0.3} | kwargs))
    assert "\n" not in str(err.value)


def test_auto_avoids_the_linear_fa_path_and_the_compiled_kernels():
    X, y = random_teacher(N, D, P, "linear", seed=7)
    h = TwoLayerEnsemble(D, P, seeds=[1], activation="linear").fit(X, y, steps=2, dropout=0.1)
    assert h.path == "rowspace" and h.kernels in ("torch", "native")
    act = ACTIVATIONS["linear"]
    long_run = 1e12  # element-steps, past the point where "auto" compiles
    assert choose("auto", "explicit", act, X, 1, P, True, long_run)[0] == "compiled"
    assert choose("auto", "explicit", act, X, 1, P, True, long_run, masked=True)[0] == "torch"
    h = TwoLayerEnsemble(D, P, seeds=[1], activation="linear").fit(X, y, steps=2)
    assert h.path == "linear_fa"


def test_paper_dropout_constants():
    declared = {n: a.dropout_lr for n, a in ACTIVATIONS.items() if a.dropout_lr is not None}
    assert declared == {"linear": 1e-2, "relu": 1e-3, "tanh": 1e-1, "sigmoid": 1e-1}
    assert paper_lr("relu", dropout=True) == 1e-3 and paper_lr("relu") == 1e-2
    assert FIELDS["dropout"].validate(0.4) == 0.4
    with pytest.raises(ConfigError, match="dropout = 1.0 is not accepted"):
        FIELDS["dropout"].validate(1.0)
    assert FIELDS["lr"].validate("paper_dropout") == "paper_dropout"
    r = Plateau.paper_dropout(200, "relu")
    assert (r.min_steps, r.check_every, r.tol, r.checks, r.quantity) == (
        5050, 1000, 1e-4, "authors", "alignment",
    )  # fmt: skip
    r = Plateau.paper_dropout(3200, "linear")
    assert (r.min_steps, r.check_every) == (paper_min_steps(3200, 10000), 2000)
    assert r.min_steps == int(np.rint(10000 * np.sqrt(3200) // 14))


def _authors_alignment_loop(series, min_steps, every, tol):
    """The authors' loop, watching the alignment series: steps taken before it stops."""
    t, prev, settled = 0, 0.0, False
    while t < min_steps or not settled:
        if t % every == every - 1:
            settled |= abs(series[t] - prev) < tol
            prev = series[t]
        t += 1
    return t


def test_the_alignment_plateau_stops_where_the_authors_loop_stops():
    """A small run: each member's stop step equals the authors' loop over its own recorded
    alignment (every step recorded), and it is not the MSE that decided."""
    X, y = random_teacher(10, 20, 40, "tanh", seed=3)
    rule = Plateau(200, 50, 2e-3, 5000, "authors", "alignment")
    ens = TwoLayerEnsemble(20, 40, seeds=[0, 1, 2], activation="tanh")
    h = ens.fit(X, y, lr=0.1, dropout=[0.0, 0.5, 0.7], stop=rule, record_every=1,
                metrics=("alignment", "mse"))  # fmt: skip
    for k in range(3):
        stop = _authors_alignment_loop(h.metrics["alignment"][:, k], 200, 50, 2e-3)
        assert h.stop_step[k] == stop < 5000
    assert len(set(h.stop_step.tolist())) == 3 and h.stop_step.min() > 200


def test_a_sweep_runs_dropout_per_member_with_the_papers_step_and_rule(tmp_path):
    """dropout is a per-member field of a sweep: the spec resolves lr "paper_dropout", the
    runner packs both probabilities into one ensemble, and each stored run equals a direct
    fit of its seeds."""
    from feedback_alignment.experiments import parse_spec, run_study
    from feedback_alignment.experiments.store import Store
    from feedback_alignment.twolayer.data import random_teacher as teacher

    spec = {
        "study": {"name": "drop", "repetitions": 1, "seed": 2},
        "fixed": {"n": 6, "d": 10, "p": 16, "activation": "relu", "task": "teacher",
                  "lr": "paper_dropout", "steps": 40},
        "grid": {"dropout": [0.0, 0.5]},
    }  # fmt: skip
    runs = parse_spec(spec).runs()
    assert [r.config["lr"] for r in runs] == [1e-3, 1e-3]
    rep = run_study(spec, tmp_path / "s.sqlite", executor="inline")
    assert rep.ok and rep.done == 2
    with Store(tmp_path / "s.sqlite", create=False) as st:
        stored = {r["dropout"]: st.series(r["run_id"], "alignment")[1][-1] for r in st.runs()}
    for r in runs:
        X, y = teacher(6, 10, 16, "relu", seed=r.data_seed)
        ens = TwoLayerEnsemble(10, 16, seeds=[r.net_seed], activation="relu")
        h = ens.fit(X, y, lr=1e-3, dropout=r.config["dropout"], steps=40, metrics=("alignment",))
        assert abs(stored[r.config["dropout"]] - h.final["alignment"][0]) < 1e-12
    assert stored[0.0] != stored[0.5]


def test_dropout_without_kept_weights_follows_the_same_run():
    """keep_weights=False (Z and beta only) moves Z by the same masked updates."""
    X, y = random_teacher(N, D, P, "tanh", seed=7)
    a, b = (TwoLayerEnsemble(D, P, seeds=SEEDS, activation="relu") for _ in range(2))
    ha = a.fit(X, y, lr=LR, dropout=Q, steps=STEPS, path="rowspace", metrics=("mse", "alignment"))
    hb = b.fit(X, y, lr=LR, dropout=Q, steps=STEPS, path="rowspace", keep_weights=False,
               metrics=("mse", "alignment"))  # fmt: skip
    assert rel(b.beta, a.beta) < 1e-12
    assert np.allclose(hb.final["mse"], ha.final["mse"], rtol=1e-12, atol=0)


def test_an_after_min_plateau_can_watch_the_alignment_too():
    X, y = random_teacher(10, 20, 40, "tanh", seed=3)
    rule = Plateau(100, 50, 2e-3, 3000, "after_min", "alignment")
    ens = TwoLayerEnsemble(20, 40, seeds=[0, 1], activation="tanh")
    h = ens.fit(X, y, lr=0.1, dropout=0.5, stop=rule, record_every=1, metrics=("alignment",))
    for k in range(2):
        a, t = h.metrics["alignment"][:, k], 150
        while abs(a[t] - a[t - 50]) >= 2e-3:
            t += 50
        assert h.stop_step[k] == t < 3000


def test_the_mask_generator_is_splitmix64_over_a_counter():
    """mix64 over key + i gamma is SplitMix64 (its published first outputs from seed 0), and
    keep_bits is word (r & 1) of the (i ceil(p/2) + r // 2 + 1)-th output, element by
    element in plain Python integers."""
    outputs = [dropout.mix64((i * dropout.GAMMA) % 2**64) for i in (1, 2, 3)]
    assert outputs == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    key = dropout.step_key(dropout.member_key(5), 3)
    p, n = 7, 4
    bits = dropout.keep_bits(key, p, n)
    for r in range(p):
        for i in range(n):
            w = dropout.mix64((key + (i * ((p + 1) // 2) + r // 2 + 1) * dropout.GAMMA) % 2**64)
            assert int(bits[r, i]) == (w >> (32 * (r & 1))) & 0xFFFFFFFF


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9])
def test_masks_keep_one_minus_q_independently(q):
    """Over 3 steps of a (1001, 50) mask: the kept fraction within 5 standard errors of
    1 - q, and no correlation beyond 5 / sqrt(N) between neighbouring units (two words of
    one draw), neighbouring samples, consecutive steps and two members."""
    p, n = 1001, 50
    m = [keep_mask(seed, t, q, p, n).numpy() for seed in (1, 2) for t in (0, 1, 2)]
    flat = np.stack(m[:3])
    se = np.sqrt(q * (1 - q) / flat.size)
    assert abs(flat.mean() - (1 - q)) < 5 * se

    def corr(a, b):
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    bound = 5 / np.sqrt(p * n)
    assert abs(corr(m[0][:-1:2], m[0][1::2])) < bound * np.sqrt(2)  # unit pairs (r, r+1)
    assert abs(corr(m[0][:, :-1], m[0][:, 1:])) < bound * 1.1  # samples i, i+1
    assert abs(corr(m[0], m[1])) < bound and abs(corr(m[1], m[2])) < bound  # steps
    assert abs(corr(m[0], m[3])) < bound  # members (seeds 1 and 2), same step


def test_native_dropout_records_every_metric_as_the_torch_ops_do():
    """The native kernels keep no psi(Z) or psi'(Z): a metric that needs them (the update's
    and beta's step norms, the update alignment) forms them from the same masks, lazily;
    every recorded metric equals the torch ops' (float64, 1e-10)."""
    from feedback_alignment.twolayer.engine import METRICS

    X, y = random_teacher(N, D, P, "tanh", seed=7)
    Xs, ys = torch.stack([X, X * 0.9, X * 1.1]), torch.stack([y, y, y])
    hist = {}
    for kernels in ("torch", "native"):
        ens = TwoLayerEnsemble(D, P, seeds=SEEDS, activation="tanh")
        hist[kernels] = ens.fit(Xs, ys, rule=["fa", "bp", "fa"], lr=LR, lam=0.01, dropout=Q,
                                steps=STEPS, record_every=3, metrics=METRICS,
                                path="rowspace", kernels=kernels)  # fmt: skip
    assert hist["native"].kernels == "native"
    assert set(hist["native"].metrics) == set(METRICS)
    for m in METRICS:
        a, b = hist["native"].metrics[m], hist["torch"].metrics[m]
        assert np.allclose(a, b, rtol=1e-10, atol=1e-12, equal_nan=True), m  # step 0: 0 / 0
