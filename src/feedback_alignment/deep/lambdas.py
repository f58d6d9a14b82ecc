"""Copies of one network trained side by side, one per weight-decay lambda (E3, E4).

The authors compare lambdas on copies of ONE initial network (its weights and its fixed
feedback matrices copied into each), fed the same minibatches in the same order; lambda
enters the way their layers add it, ``grad(W) += lambda W`` on the layers they regularise
(E3: the output layer; E4: layers 2 and 3), or, for their two-layer backprop baseline, as
the loss term ``lambda |W|^2`` (gradient 2 lambda W). :func:`train_lambdas` runs the steps
[start, stop) of such a study and returns what it recorded, so a caller can checkpoint the
networks between calls and resume: the minibatch order of epoch k is a function of
(``order_seed``, k) alone, and plain SGD has no other state.

Each step, for each lambda: the network's forward pass on the batch, log-softmax + NLL
(``F.cross_entropy``, the batch mean), its rule's backward pass (FA layers send the error
down through B; :mod:`.layers`), then ``W <- W - lr (grad + lambda W)``. Recorded at every
step t on the batch, before its update: the loss, and for each recorded layer l the
error-signal alignment between e_l B_l and e_l W_l (e_l the gradient at layer l's output;
``per_sample``: the mean over the batch of the per-sample cosines, as the paper's E3;
``frobenius``: one cosine over the whole batch, as the authors' E4 code) and the weight
alignment cos(B_l, W_l); test accuracy every ``eval_every`` steps.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check, choice, need
from .convert import convert, rule_layers
from .metrics import ErrorRecorder, _per_sample_cos
from .models import E3_HIDDEN, bp_baseline_network, e3_network, e4_network

PENALTIES = ("grad", "loss")  # grad W += lam W (the authors' FA layers), or loss + lam |W|^2
ALIGNMENTS = ("per_sample", "frobenius")
PAPER_LAMS = (0.0, 0.1, 0.3)  # the lambdas of E3, E4 and the backprop baseline


@dataclass(frozen=True)
class LambdaStudy:
    """How a set of copies is trained: the lambdas, where they act and what is recorded."""

    lams: tuple[float, ...] = PAPER_LAMS
    decay_layers: tuple[str, ...] = ("out",)  # the layers lambda regularises
    record_layers: tuple[str, ...] = ("out",)  # the layers whose alignment is recorded
    penalty: str = "grad"
    alignment: str = "per_sample"
    lr: float = 1e-2
    batch: int = 600
    eval_every: int = 100
    eval_batch: int = 2000

    def __post_init__(self):
        choice("penalty", self.penalty, PENALTIES)
        choice("alignment", self.alignment, ALIGNMENTS)
        check(len(self.lams) >= 1, "lams must hold at least one lambda")
        for lam in self.lams:
            need(isinstance(lam, int | float) and lam >= 0, "lambda", lam, "a number >= 0")
        need(self.lr > 0, "lr", self.lr, "a number > 0")
        for k in ("batch", "eval_every", "eval_batch"):
            v = getattr(self, k)
            need(isinstance(v, int) and v >= 1, k, v, "an integer >= 1")


# The authors' set-ups (docs/rules.md): the network, its rule, and how it is trained.
E3 = LambdaStudy(decay_layers=("out",), record_layers=("out",), alignment="per_sample")
E4 = LambdaStudy(decay_layers=("fc2", "fc3"), record_layers=("fc2", "fc3"), alignment="frobenius")
BP_BASELINE = LambdaStudy(
    decay_layers=("out",), record_layers=("out",), penalty="loss", alignment="per_sample"
)
STUDIES = {"e3": E3, "e4": E4, "bp_baseline": BP_BASELINE}


def paper_network(
    name: str, rule: str = "fa", *, hidden: int = E3_HIDDEN, inputs: int = 784,
    classes: int = 10, seed: int = 0, feedback_seed: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:  # fmt: skip
    """The network of study ``name`` (``e3``, ``e4``, ``bp_baseline``), converted to
    ``rule`` (``fa``: every layer an FA layer with its own fixed N(0, 1) feedback; ``bp``:
    the backprop baseline of the same network), in ``dtype``."""
    choice("study", name, STUDIES)
    build = {"e3": e3_network, "e4": e4_network, "bp_baseline": bp_baseline_network}[name]
    net = build(hidden=hidden, inputs=inputs, classes=classes, seed=seed).to(dtype)
    fs = seed if feedback_seed is None else feedback_seed
    net = convert(net, rule, scale=1.0, seed=fs)
    return net.to(dtype)


def replicate(net: nn.Module, count: int) -> list[nn.Module]:
    """``count`` independent copies of ``net``: weights and feedback equal, as the authors
    copy one network's state into each lambda's."""
    return [copy.deepcopy(net) for _ in range(count)]


def epoch_order(order_seed: int, epoch: int, n: int) -> torch.Tensor:
    """The minibatch order of epoch ``epoch``: a permutation of n, a function of
    (order_seed, epoch) alone (so a study resumes anywhere without replaying)."""
    state = np.random.SeedSequence([int(order_seed), int(epoch)]).generate_state(1)
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(state[0])))


def batch_at(t: int, order_seed: int, n: int, batch: int) -> torch.Tensor:
    """The sample indices of step t's minibatch (epochs of n // batch steps, shuffled)."""
    per_epoch = max(1, n // batch)
    j = t % per_epoch
    return epoch_order(order_seed, t // per_epoch, n)[j * batch : (j + 1) * batch]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else 0.0


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 2000) -> float:
    """The fraction of (x, y) that ``net`` classifies right."""
    correct = 0
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            correct += int((net(x[s : s + chunk]).argmax(-1) == y[s : s + chunk]).sum())
    return correct / x.shape[0]


def _step(net, x, y, lam, study: LambdaStudy, move: bool = True) -> tuple[float, dict, dict]:
    """One SGD step of one copy (none unless ``move``): (loss, error-signal alignment,
    weight alignment) per recorded layer, measured on this batch before the update."""
    layers = dict(rule_layers(net))
    params = [p for p in net.parameters() if p.requires_grad]
    decayed = {id(layers[n].weight) for n in study.decay_layers}
    weights = {
        n: (layers[n].weight.detach(), layers[n].feedback_weight()) for n in study.record_layers
    }
    with ErrorRecorder(net, study.record_layers) as rec:
        loss = F.cross_entropy(net(x), y)
        total = loss
        if study.penalty == "loss" and lam:
            total = loss + lam * sum(layers[n].weight.square().sum() for n in study.decay_layers)
        grads = torch.autograd.grad(total, params)
    align = {}
    for n in study.record_layers:
        sent, sent_bp = rec.records[n]["sent"], rec.records[n]["sent_bp"]
        align[n] = (
            _per_sample_cos(sent, sent_bp)
            if study.alignment == "per_sample"
            else _cos(sent, sent_bp)
        )
    walign = {n: _cos(B, W) for n, (W, B) in weights.items()}
    if move:
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if study.penalty == "grad" and lam and id(p) in decayed:
                    g = g + lam * p  # the authors' layers: grad(W) += lambda W
                p.sub_(study.lr * g)
    return float(loss.detach()), align, walign


def train_lambdas(
    nets: list[nn.Module],
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    study: LambdaStudy,
    *,
    order_seed: int,
    start: int = 0,
    stop: int,
    record_end: bool = False,
) -> dict:
    """Train ``nets`` (one per ``study.lams``, e.g. from :func:`replicate`) for the steps
    t = start, ..., stop - 1, in place; return what was recorded.

    ``data`` = (x_train, y_train, x_test, y_test), inputs prepared (normalised, flat or
    image-shaped as the networks take them). Recorded at each step t of the range, on its
    batch before its update: ``loss`` (T, L), ``alignment[layer]`` and
    ``weight_alignment[layer]`` (T, L); ``test_accuracy`` (E, L) at ``eval_steps``, the
    steps of the range that are multiples of ``study.eval_every``. ``record_end``: also
    record the state reached at ``stop`` (its batch's alignment and the test accuracy,
    with no update), for the last range of a study.
    """
    x_train, y_train, x_test, y_test = data
    L = len(study.lams)
    check(len(nets) == L, f"{L} lambdas need {L} networks, got {len(nets)}")
    ok = isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop
    need(ok, "step range [start, stop)", [start, stop], "integers with 0 <= start <= stop")
    got = dict(rule_layers(nets[0]))
    for name in dict.fromkeys((*study.decay_layers, *study.record_layers)):
        check(name in got, f"layer {name!r} is not a rule layer of the network: {sorted(got)}")
    n = x_train.shape[0]
    batch = min(study.batch, n)
    last = stop + 1 if record_end else stop
    rows: dict = {"loss": [], "alignment": [], "weight_alignment": []}
    steps, eval_steps, acc = [], [], []
    t0 = time.perf_counter()
    for t in range(start, last):
        if t % study.eval_every == 0 or (record_end and t == stop):
            eval_steps.append(t)
            acc.append([accuracy(net, x_test, y_test, study.eval_batch) for net in nets])
        idx = batch_at(t, order_seed, n, batch)
        x, y = x_train[idx], y_train[idx]
        move = t < stop  # record_end: the state at stop is measured, not moved
        out = [
            _step(net, x, y, lam, study, move) for net, lam in zip(nets, study.lams, strict=True)
        ]
        steps.append(t)
        rows["loss"].append([o[0] for o in out])
        rows["alignment"].append([o[1] for o in out])
        rows["weight_alignment"].append([o[2] for o in out])
        if not all(np.isfinite(o[0]) for o in out):
            bad = [lam for o, lam in zip(out, study.lams, strict=True) if not np.isfinite(o[0])]
            raise FloatingPointError(
                f"the loss of lambda = {bad} became non-finite at step {t}; likely cause: "
                f"the step size lr = {study.lr:g} is too large for this network"
            )
    return {
        "lams": list(study.lams),
        "step": np.asarray(steps, dtype=np.int64),
        "loss": np.asarray(rows["loss"], dtype=np.float64).reshape(-1, L),
        "alignment": _by_layer(rows["alignment"], study.record_layers, L),
        "weight_alignment": _by_layer(rows["weight_alignment"], study.record_layers, L),
        "eval_step": np.asarray(eval_steps, dtype=np.int64),
        "test_accuracy": np.asarray(acc, dtype=np.float64).reshape(-1, L),
        "seconds": time.perf_counter() - t0,
    }


def _by_layer(rows: list[list[dict]], layers, L) -> dict[str, np.ndarray]:
    return {
        n: np.asarray([[r[k][n] for k in range(L)] for r in rows], dtype=np.float64).reshape(-1, L)
        for n in layers
    }
