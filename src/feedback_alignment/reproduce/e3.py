"""E3: the paper's MNIST network trained by feedback alignment with lambda on the last layer.

784 -> hidden ReLU (no biases) -> 10, output times 1/sqrt(hidden), softmax cross-entropy,
W, beta and the 10 x hidden feedback matrix B all N(0, 1), SGD lr 1e-2, batch 600. The
lambdas of one repetition share the initialisation (``deep.models.e3_network``), B and the
batch order, and are trained side by side as one batched computation (update equations
written out, no autograd):

    z = x W^T,  h = relu(z),  logits = h beta^T / sqrt(H),  e = (softmax - onehot) / batch
    beta <- beta - lr (e^T h / sqrt(H) + lam beta)
    W    <- W - lr [((e B) / sqrt(H)) * relu'(z)]^T x            (feedback alignment: B, not beta)

Recorded at every step on the training batch before its update: the hidden-error alignment
mean_i cos(e_i B, e_i beta) and the weight cosine cos(B, beta); test accuracy every
``eval_every`` steps (and at the start and the end). Data: ``deep.data.load_dataset``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..deep.data import load_dataset
from ..deep.models import e3_network
from .profiles import E3_LAMS, Profile, seed_for

COLUMNS = ("lam", "rep", "step", "alignment", "test_accuracy")
# the paper's end point after 30,000 steps: {lambda: (hidden-error alignment, test accuracy %)}
PAPER_FINAL = {0.0: (0.07, 88.5), 0.1: (0.55, 91.6), 0.3: (0.66, 90.6)}
WEIGHT_COLUMNS = ("lam", "rep", "step", "weight_alignment")
_EXP = 3


def _cos_rows(a, b):
    import torch

    num = (a * b).sum(-1)
    den = a.norm(dim=-1) * b.norm(dim=-1)
    return num / torch.where(den > 0, den, torch.ones_like(den))


def run_rep(
    rep: int,
    base_seed: int,
    source: str,
    train: int | None,
    test: int | None,
    hidden: int,
    batch: int,
    steps: int,
    eval_every: int,
    lr: float,
    dtype: str,
) -> dict:
    import torch

    dt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    ds = load_dataset(source)
    if train or test:
        ds = ds.limit(train, test)
    xtr = ds.prepare(ds.x_train, dt).flatten(1)
    ytr = ds.y_train
    xte = ds.prepare(ds.x_test, dt).flatten(1)
    yte = ds.y_test
    n, inputs = xtr.shape
    classes = ds.classes
    lams = torch.tensor(E3_LAMS, dtype=dt)
    L = len(E3_LAMS)
    net = e3_network(hidden, inputs, classes, seed=seed_for(base_seed, _EXP, rep, 0))
    W = net.hidden.weight.detach().to(dt).unsqueeze(0).repeat(L, 1, 1).contiguous()
    beta = net.out.weight.detach().to(dt).unsqueeze(0).repeat(L, 1, 1).contiguous()
    g = torch.Generator().manual_seed(seed_for(base_seed, _EXP, rep, 1))
    B = torch.randn(classes, hidden, generator=g, dtype=torch.float64).to(dt)
    order_gen = torch.Generator().manual_seed(seed_for(base_seed, _EXP, rep, 2))
    batch = min(batch, n)
    per_epoch = n // batch
    scale = 1.0 / math.sqrt(hidden)
    eye = torch.eye(classes, dtype=dt)

    def test_accuracy() -> np.ndarray:
        correct = torch.zeros(L, dtype=torch.long)
        for s in range(0, xte.shape[0], 2000):
            xb = xte[s : s + 2000]
            logits = torch.relu(torch.matmul(xb, W.transpose(1, 2))) @ beta.transpose(1, 2)
            correct += (logits.argmax(-1) == yte[s : s + 2000]).sum(-1)
        return (correct.to(torch.float64) / xte.shape[0]).numpy()

    align = np.empty((steps + 1, L))
    walign = np.empty((steps + 1, L))
    acc: dict[int, np.ndarray] = {}
    perm = None
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in range(steps + 1):
            if t % eval_every == 0 or t == steps:
                acc[t] = test_accuracy()
            j = t % per_epoch
            if j == 0:
                perm = torch.randperm(n, generator=order_gen)
            idx = perm[j * batch : (j + 1) * batch]
            xb, yb = xtr[idx], ytr[idx]
            z = torch.matmul(xb, W.transpose(1, 2))  # (L, b, H)
            h = torch.relu(z)
            logits = (h @ beta.transpose(1, 2)) * scale  # (L, b, C)
            e = (torch.softmax(logits, -1) - eye[yb]) / xb.shape[0]
            eB = e @ B  # (L, b, H)
            ebeta = e @ beta
            align[t] = _cos_rows(eB, ebeta).mean(-1).double().numpy()
            walign[t] = _cos_rows(B.flatten().expand(L, -1), beta.flatten(1)).double().numpy()
            if t == steps:
                break
            grad_beta = (e.transpose(1, 2) @ h) * scale
            delta = eB * scale * (z > 0)
            grad_W = delta.transpose(1, 2) @ xb
            beta -= lr * (grad_beta + lams[:, None, None] * beta)
            W -= lr * grad_W
            if not bool(torch.isfinite(beta).all()):
                raise FloatingPointError(f"E3 rep {rep} diverged at step {t}")
    seconds = time.perf_counter() - t0
    all_steps = np.arange(steps + 1, dtype=np.int64)
    evals = np.asarray(sorted(acc), dtype=np.int64)
    members = [
        {
            "status": "done",
            "reason": "",
            "stop_step": steps,
            "path": "",
            "config": {"dataset": ds.name},
            "finals": {"n_test": float(xte.shape[0]), "n_train": float(n)},
            "series": {
                "alignment": (all_steps, align[:, i].copy()),
                "weight_alignment": (all_steps, walign[:, i].copy()),
                "test_accuracy": (evals, np.asarray([acc[t][i] for t in evals.tolist()])),
            },
        }
        for i in range(L)
    ]
    return {"members": members, "seconds": seconds}


def member_keys(kw: dict) -> list[dict]:
    """The runs of one task (one repetition), in the order :func:`run_rep` returns them."""
    return [{"lam": float(lam), "rep": kw["rep"]} for lam in E3_LAMS]


def tasks(profile: Profile, seed: int) -> list:
    s = profile.e3
    return [
        (
            run_rep,
            {
                "rep": r,
                "base_seed": seed,
                "source": s.source,
                "train": s.train,
                "test": s.test,
                "hidden": s.hidden,
                "batch": s.batch,
                "steps": s.steps,
                "eval_every": s.eval_every,
                "lr": s.lr,
                "dtype": profile.dtype,
            },
        )
        for r in range(s.reps)
    ]


def from_store(runs: list[dict], series) -> dict:
    """E3's rows from its stored runs; ``series(run_id, metric)`` reads a stored series."""
    runs = sorted(runs, key=lambda r: (r["rep"], E3_LAMS.index(r["lam"])))
    rows, wrows = [], []
    for r in runs:
        member = {"lam": float(r["lam"]), "rep": int(r["rep"])}
        steps, align = series(r["run_id"], "alignment")
        _, walign = series(r["run_id"], "weight_alignment")
        esteps, acc = series(r["run_id"], "test_accuracy")
        at = dict(zip(esteps.tolist(), acc.tolist(), strict=True))
        for t, a, w in zip(steps.tolist(), align.tolist(), walign.tolist(), strict=True):
            rows.append({**member, "step": t, "alignment": a, "test_accuracy": at.get(t, "")})
            wrows.append({**member, "step": t, "weight_alignment": w})
    first = runs[0] if runs else {}
    return {
        "rows": rows,
        "weight_rows": wrows,
        "member_steps": sum(int(r["stop_step"]) for r in runs),
        "n_test": int(first.get("final.n_test", 0)),
        "n_train": int(first.get("final.n_train", 0)),
        "dataset": first.get("dataset", ""),
        "diverged": [],
    }
