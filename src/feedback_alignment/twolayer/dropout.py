"""Inverted dropout on the hidden activations: the ``dropout`` option of ``fit``.

The authors' dropout runs (E1's setting, lambda = 0) put a ``torch.nn.Dropout(q)`` between
psi(W x) and the output layer, applied at every training step. ``nn.Dropout`` on the (n, p)
matrix of hidden activations keeps each ELEMENT (sample i, unit r) independently with
probability 1 - q and scales the kept ones by 1 / (1 - q). With m the 0/1 keep matrix and
Z = X W^T, what autograd does through the dropout layer and the FA output layer (whose
backward sends the error down through b instead of beta) is:

    forward:     H~ = psi(Z) * m / (1 - q);   u = H~ beta / sqrt p;   e = u - y
    beta's grad: (c / sqrt p) H~^T e                       (the dropped activations)
    signal at H~: (c / sqrt p) e b^T       (FA: b; backprop: beta)
    through dropout's backward:  * m / (1 - q);   through psi:  * psi'(Z)
    W's update:  (c / sqrt p) [fb * (psi'(Z) * m / (1 - q) * e)^T] X

so every first-layer update is still (something) x X and the row-space path stays exact;
only the element-wise work changes (psi(Z) and psi'(Z) both carry the scaled mask). The
linear-FA path (update rows b_r times one vector) cannot hold a per-element mask, and the
compiled and native kernels take none: those refuse dropout, ``"auto"`` avoids them.

The mask of member k at step t (t updates applied to it so far) comes from a generator
seeded by (its seed, this module's stream number, t), drawn on the CPU in float64 and cast:
a function of (seed, t) alone, so the same numbers on every device, alone or in any
ensemble, in any chunking, and after a resume; a member with q = 0 draws nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# the generator stream of the masks, apart from the member's initialisation stream
DROPOUT_STREAM = 0xD0
MAX_DROPOUT = 1.0  # q must be < 1: q = 1 drops every unit


def mask_generator(seed: int, t: int) -> torch.Generator:
    """The generator of the mask of the member with ``seed`` at step ``t`` (independent of
    its initialisation's stream and of every other step's)."""
    state = np.random.SeedSequence([int(seed), DROPOUT_STREAM, int(t)]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


def draw_keep(gen: torch.Generator, q: float, shape: tuple[int, ...]) -> torch.Tensor:
    """A 0/1 float64 keep mask: each element kept with probability 1 - q (nn.Dropout)."""
    return (torch.rand(shape, generator=gen, dtype=torch.float64) >= q).double()


class Dropout:
    """The masks of a fit: per member its probability q and seed; ``t`` the step whose masks
    are drawn (the engine sets it); :meth:`outputs` and :meth:`backward` are the dropped
    element-wise work of a step (eager torch ops)."""

    def __init__(self, act, q: np.ndarray, seeds: list[int]):
        self.act, self.q, self.seeds, self.t = act, q, seeds, 0

    def scaled_masks(self, sl: slice, p: int, n: int, like: torch.Tensor) -> torch.Tensor:
        """m / (1 - q) for members ``sl``, (k, p, n) (unit r, sample i), in ``like``'s dtype."""
        out = []
        for k in range(sl.start, sl.stop):
            q = float(self.q[k])
            if q == 0:
                out.append(torch.ones(p, n, dtype=torch.float64))
            else:
                gen = mask_generator(self.seeds[k], self.t)
                out.append(draw_keep(gen, q, (p, n)) / (1 - q))
        return torch.stack(out).to(dtype=like.dtype, device=like.device)

    def outputs(self, sl: slice, Z: torch.Tensor, beta: torch.Tensor):
        """u (k, n) of the dropped network and a cache in which H and D are psi(Z) and
        psi'(Z) times the scaled mask (so every recorded metric sees the dropped step)."""
        S = self.scaled_masks(sl, Z.shape[1], Z.shape[2], Z)
        H = self.act(Z) * S
        u = torch.bmm(beta.unsqueeze(1), H).squeeze(1) / math.sqrt(Z.shape[1])
        return u, {"Z": Z, "H": H, "D": self.act.deriv(Z) * S}

    def backward(self, cache: dict, ce: torch.Tensor, fb_lr: torch.Tensor):
        """(H~ ce, M = fb_lr * psi'(Z) * m / (1 - q) * ce)."""
        direction = torch.bmm(cache["H"], ce.unsqueeze(-1)).squeeze(-1)
        M = cache["D"] * fb_lr.unsqueeze(-1) * ce.unsqueeze(1)
        return direction, M
