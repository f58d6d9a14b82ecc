"""Alignment metrics per rule layer, measured without disturbing training.

For a layer with forward weight W and feedback B (the B its next backward pass uses):

``cosine``            cos(vec W, vec B); ``angle_deg`` = arccos of it in degrees.
``sign_concordance``  fraction of entries with sign(B) = sign(W) (entries with W = 0
                      left out): 1 for the sign rules whatever the magnitudes, ~0.5 for a
                      random B.
``norm_ratio``        |B|_F / |W|_F.
``sign_cosine``       cos(sign W, W) = |W|_1 / (sqrt(m) |W|_F), m the number of nonzero
                      entries of W: the cosine any B = s * sign(W) attains (uSF's
                      ``cosine`` equals it at every step); a property of W alone.
``error_alignment``   the paper's hidden-error alignment: for each sample i, the cosine
                      between the signal the rule sends to the layer's input, e_i B, and
                      the one backprop would send from the same error, e_i W; averaged
                      over the batch (e = the gradient at the layer's output).
``update_cosine``     cos(the weight gradient the rule produces, the true backprop
                      gradient), both of the loss on the same batch.

A direct rule (DFA): B is D (output_size x input), and "W" is the forward map from the
layer's input to the output that D stands in for: for the output layer its W, for a
hidden layer the product of the forward weights above it (defined for chains of Linear
layers; NaN for Conv2d). Its ``error_alignment`` compares e D with the true backprop gradient at the
layer's input; the cheap per-step recording gives it for the output layer only, and
:func:`alignment` for every layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .convert import rule_layers
from .layers import RuleLayer, RuleLinear

WEIGHT_METRICS = ("cosine", "angle_deg", "sign_concordance", "norm_ratio", "sign_cosine")


def _pair_metrics(w: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    w = w.detach().reshape(-1)
    b = b.detach().reshape(-1).to(w.dtype)
    stats = torch.stack(
        [
            w @ w,
            b @ b,
            w @ b,
            (torch.sign(w) * torch.sign(b) > 0).sum().to(w.dtype),
            (w != 0).sum().to(w.dtype),
            w.abs().sum(),
        ]
    ).tolist()
    ww, bb, wb, agree, nonzero, l1 = stats
    nw, nb = math.sqrt(ww), math.sqrt(bb)
    cos = wb / (nw * nb) if nw > 0 and nb > 0 else float("nan")
    cos = max(-1.0, min(1.0, cos)) if cos == cos else cos
    return {
        "cosine": cos,
        "angle_deg": math.degrees(math.acos(cos)) if cos == cos else cos,
        "sign_concordance": agree / nonzero if nonzero else 0.0,
        "norm_ratio": nb / nw if nw > 0 else float("inf"),
        "sign_cosine": l1 / (math.sqrt(nonzero) * nw) if nonzero else float("nan"),
    }


def _dfa_reference(layers: list[tuple[str, RuleLayer]], k: int) -> torch.Tensor | None:
    """The product W_L ... W_k (output x input of layer k), or None when not defined."""
    tail = [m for _, m in layers[k:]]
    if not all(isinstance(m, RuleLinear) for m in tail):
        return None
    ref = tail[-1].weight.detach()
    for m in reversed(tail[:-1]):
        if ref.shape[1] != m.weight.shape[0]:
            return None
        ref = ref @ m.weight.detach()
    return ref


@torch.no_grad()
def weight_alignment(model: nn.Module, layers=None) -> dict[str, dict[str, float]]:
    """Weight metrics per rule layer (no forward pass; brsf: its next draw); ``layers``
    restricts them to those names."""
    all_layers = rule_layers(model)
    out = {}
    for k, (name, m) in enumerate(all_layers):
        if layers is not None and name not in layers:
            continue
        b = m.feedback_weight()
        if m.rule.direct:
            ref = _dfa_reference(all_layers, k)
            if ref is None:
                out[name] = dict.fromkeys(WEIGHT_METRICS, float("nan"))
                continue
            out[name] = _pair_metrics(ref, b.reshape(ref.shape))
        else:
            out[name] = _pair_metrics(m.weight, b)
    return out


def _per_sample_cos(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over the batch of cos(a_i, b_i); a sample with a zero vector counts as 0."""
    a = a.detach().reshape(a.shape[0], -1)
    b = b.detach().reshape(b.shape[0], -1).to(a.dtype)
    den = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    num = torch.einsum("ij,ij->i", a, b)
    cos = torch.where(den > 0, num / den.clamp_min(torch.finfo(a.dtype).tiny), 0.0)
    return float(cos.mean())


class ErrorRecorder:
    """Context manager: the backward passes inside it record each layer's signals.

    After a backward pass, :meth:`error_alignment` gives the paper's hidden-error
    alignment per layer (mean over the batch of cos(e B, e W)); layers whose input gets no
    gradient (the first layer) and hidden DFA layers are left out. Costs one extra
    ``e @ W`` per layer; nothing else about the step changes.
    """

    def __init__(self, model: nn.Module, layers=None):
        self.layers = [(n, m) for n, m in rule_layers(model) if layers is None or n in layers]

    def __enter__(self):
        self.records = {}
        for name, m in self.layers:
            m._record = self.records[name] = {}
        return self

    def __exit__(self, *exc):
        for _, m in self.layers:
            m._record = None
        return False

    def error_alignment(self) -> dict[str, float]:
        """Per layer, from the last backward pass inside the ``with`` block."""
        out = {}
        for name, rec in getattr(self, "records", {}).items():
            if "sent" in rec and "sent_bp" in rec:
                out[name] = _per_sample_cos(rec["sent"], rec["sent_bp"])
        return out


def alignment(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn=F.cross_entropy,
    *,
    rule_grads: dict[str, torch.Tensor] | None = None,
) -> dict[str, dict[str, float]]:
    """Every metric per rule layer on the batch (x, y); leaves the model as it was.

    Runs the rule's forward/backward (unless ``rule_grads``, name -> weight gradient of
    this batch, are given) and a backprop pass on the same batch, both with
    ``torch.autograd.grad`` so no ``.grad`` is touched; buffers (brsf's draw counter,
    batch-norm statistics) and the random-number state are restored afterwards.
    """
    layers = rule_layers(model)
    weights = [m.weight for _, m in layers]
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        rng = torch.get_rng_state()
        inputs: dict[str, torch.Tensor] = {}
        hooks = [
            m.register_forward_pre_hook(lambda mod, inp, n=n: inputs.__setitem__(n, inp[0]))
            for n, m in layers
        ]
        try:
            with ErrorRecorder(model) as rec:
                loss = loss_fn(model(x), y)
                sent_of = [n for n, _ in layers if inputs[n].requires_grad]
                got = torch.autograd.grad(
                    loss, weights + [inputs[n] for n in sent_of], allow_unused=True
                )
                local = rec.error_alignment()
                sent = {n: rec.records[n].get("sent") for n, _ in layers}
            rg = {n: got[i] for i, (n, _) in enumerate(layers)}
            if rule_grads is not None:
                rg = rule_grads
            torch.set_rng_state(rng)
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
            for _, m in layers:
                m._exact = True
            inputs.clear()
            loss_bp = loss_fn(model(x), y)
            sent_of = [n for n, _ in layers if inputs[n].requires_grad]
            true = torch.autograd.grad(loss_bp, weights + [inputs[n] for n in sent_of])
        finally:
            for h in hooks:
                h.remove()
            for _, m in layers:
                m._exact = False
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
    true_w = dict(zip([n for n, _ in layers], true[: len(layers)], strict=True))
    true_in = dict(zip(sent_of, true[len(layers) :], strict=True))
    out = weight_alignment(model)
    for name, m in layers:
        row = out[name]
        g, t = rg[name], true_w[name]
        row["update_cosine"] = (
            float(F.cosine_similarity(g.reshape(1, -1).double(), t.reshape(1, -1).double()))
            if g is not None
            else float("nan")
        )
        if m.rule.direct:
            s = sent.get(name)
            row["error_alignment"] = (
                _per_sample_cos(s, true_in[name])
                if s is not None and name in true_in
                else float("nan")
            )
        else:
            row["error_alignment"] = local.get(name, float("nan"))
    return out
