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
compiled kernels take none: those refuse dropout, ``"auto"`` avoids them. The native
kernels draw the masks themselves, in their one pass over the state.

The masks are counter-based, so that every path draws the same ones where it uses them
(the native kernels inside their loops, the torch ops here): member k has a 64-bit key from
its seed (``member_key``), step t the key mix64(key + (t + 1) gamma) (``step_key``), and
unit r of sample i is kept iff its 32-bit word, word (r & 1) of
mix64(step key + (i ceil(p/2) + r // 2 + 1) gamma), is >= round(q 2^32) (``keep_bits``,
``threshold``): SplitMix64's output function over a counter, one 64-bit draw per two
units. A function of (seed, t) alone, so the same numbers on every device and path, alone
or in any ensemble, in any chunking, and after a resume; P(keep) is 1 - q to 2^-33.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# the generator stream of the masks, apart from the member's initialisation stream
DROPOUT_STREAM = 0xD0
MAX_DROPOUT = 1.0  # q must be < 1: q = 1 drops every unit
GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (2^64 / golden ratio, odd)
_M64 = (1 << 64) - 1
_WORD = 1 << 32


def mix64(z: int) -> int:
    """SplitMix64's output function (Stafford's mix 13) of a 64-bit integer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _mix64_array(z: np.ndarray) -> np.ndarray:
    """:func:`mix64` element-wise on uint64 (which wraps as the 64-bit products must)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def member_key(seed: int) -> int:
    """The 64-bit key of the masks of the member with ``seed`` (its own stream, apart from
    its initialisation's)."""
    state = np.random.SeedSequence([int(seed), DROPOUT_STREAM]).generate_state(1, np.uint64)
    return int(state[0])


def step_key(key: int, t: int) -> int:
    """The key of step ``t`` (t updates applied so far) of the member with ``key``."""
    return mix64((key + (int(t) + 1) * GAMMA) & _M64)


def threshold(q: float) -> int:
    """The 32-bit words >= this are kept: round(q 2^32), P(keep) = 1 - q to 2^-33."""
    return min(round(float(q) * _WORD), _WORD - 1)


def keep_bits(key: int, p: int, n: int) -> np.ndarray:
    """The 32-bit words of a step's masks, (p, n) uint32 (unit r, sample i): word (r & 1)
    of mix64(key + (i ceil(p/2) + r // 2 + 1) gamma)."""
    r = np.arange(p, dtype=np.uint64)[:, None]
    i = np.arange(n, dtype=np.uint64)[None, :]
    pair = i * np.uint64((p + 1) // 2) + (r >> np.uint64(1)) + np.uint64(1)
    w = _mix64_array(np.uint64(key) + pair * np.uint64(GAMMA))
    return ((w >> ((r & np.uint64(1)) << np.uint64(5))) & np.uint64(_WORD - 1)).astype(np.uint32)


def _keep(key: int, thr: int, p: int, n: int) -> torch.Tensor:
    """The 0/1 float64 keep mask (p, n) of the step with ``key``, threshold ``thr``."""
    return torch.from_numpy(keep_bits(key, p, n) >= np.uint32(thr)).double()


def keep_mask(seed: int, t: int, q: float, p: int, n: int) -> torch.Tensor:
    """The 0/1 float64 keep mask (p, n) of the member with ``seed`` at step ``t``: each
    element kept with probability 1 - q, as ``nn.Dropout`` keeps it."""
    return _keep(step_key(member_key(seed), t), threshold(q), p, n)


class Dropout:
    """The masks of a fit: per member its probability q and key; ``t`` the step whose masks
    are drawn (the engine sets it); :meth:`outputs` and :meth:`backward` are the dropped
    element-wise work of a step (eager torch ops), :meth:`native_args` what the native
    kernels draw the same masks from."""

    def __init__(self, act, q: np.ndarray, seeds: list[int]):
        self.act, self.q, self.seeds, self.t = act, q, seeds, 0
        # per member, fixed for the fit: its key, threshold and scale 1 / (1 - q) (float64;
        # the torch ops and the native kernels both take it from here)
        self.keys = np.array([member_key(s) for s in seeds], dtype=np.uint64)
        self._keys = torch.from_numpy(self.keys.view(np.int64))  # the bits, for the kernels
        thr = np.array([threshold(v) for v in q], dtype=np.uint64)
        self._thr = torch.from_numpy(thr.view(np.int64))  # the bits, as the kernels read them
        self.scale = torch.tensor([1 / (1 - float(v)) for v in q], dtype=torch.float64)
        self._scales: dict[torch.dtype, torch.Tensor] = {}

    def scaled_masks(self, sl: slice, p: int, n: int, like: torch.Tensor) -> torch.Tensor:
        """m / (1 - q) for members ``sl``, (k, p, n) (unit r, sample i), in ``like``'s dtype."""
        out = []
        for k in range(sl.start, sl.stop):
            if self.q[k] == 0:
                out.append(torch.ones(p, n, dtype=torch.float64))
            else:
                key = step_key(int(self.keys[k]), self.t)
                out.append(_keep(key, int(self._thr[k]), p, n) * self.scale[k])
        return torch.stack(out).to(dtype=like.dtype, device=like.device)

    def native_args(self, sl: slice, dtype: torch.dtype) -> tuple:
        """(the members' keys and thresholds (int64 tensors holding the uint64 bits), the
        step t, the scales 1 / (1 - q) in ``dtype``) of members ``sl``: what the native
        kernels draw step t's masks from (and step t + 1's for the update's next output;
        each step key by :func:`step_key`, in the kernels)."""
        if dtype not in self._scales:
            self._scales[dtype] = self.scale.to(dtype)
        return self._keys[sl], self.t, self._thr[sl], self._scales[dtype][sl]

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
