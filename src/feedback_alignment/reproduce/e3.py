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
    rows, wrows = [], []
    for i, lam in enumerate(E3_LAMS):
        for t in range(steps + 1):
            a = acc.get(t)
            rows.append(
                {
                    "lam": float(lam),
                    "rep": rep,
                    "step": t,
                    "alignment": float(align[t, i]),
                    "test_accuracy": "" if a is None else float(a[i]),
                }
            )
            wrows.append(
                {"lam": float(lam), "rep": rep, "step": t, "weight_alignment": float(walign[t, i])}
            )
    return {
        "rows": rows,
        "weight_rows": wrows,
        "seconds": seconds,
        "n_test": int(xte.shape[0]),
        "n_train": int(n),
        "dataset": ds.name,
    }


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


def collect(results: list[dict]) -> dict:
    return {
        "rows": [row for r in results for row in r["rows"]],
        "weight_rows": [row for r in results for row in r["weight_rows"]],
        "compute_seconds": sum(r["seconds"] for r in results),
        "n_test": results[0]["n_test"] if results else 0,
        "n_train": results[0]["n_train"] if results else 0,
        "dataset": results[0]["dataset"] if results else "",
    }
