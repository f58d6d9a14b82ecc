"""E[f1(z1) f2(z2)] for a centred bivariate normal (z1, z2), by graded Gauss-Legendre.

The infinite-width kernels of activations without a closed form (tanh, sigmoid, any
(psi, dpsi) pair) are such expectations; see :mod:`.kernels` and docs/theory.md.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ._checks import F64

_RADIUS = 12.0  # exp(-72): the Gaussian weight beyond it is negligible


def _composite(edges: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre with ``order`` points on each panel between consecutive ``edges``."""
    xi, wi = np.polynomial.legendre.leggauss(order)
    lo, hi = edges[:-1, None], edges[1:, None]
    return (lo + (hi - lo) * (xi + 1) / 2).ravel(), ((hi - lo) * wi / 2).ravel()


@functools.cache
def _quad_nodes(order: int, levels: int) -> tuple[torch.Tensor, ...]:
    """Angular rule on [0, 1] and radial rule for F(r) r exp(-r^2/2) on [0, _RADIUS].

    Both are composite Gauss-Legendre graded geometrically (``levels`` halvings) towards
    the places where steep activations vary fastest: the ends of each angular piece (where
    an argument changes sign) and r = 0. A steep psi (large |x|) varies on the scale
    1/(|x| r) there, which the grading resolves.
    """
    half = 0.5 * 2.0 ** -np.arange(levels, -1, -1.0)  # 2^-(levels+1) .. 1/2
    ang_edges = np.concatenate([[0.0], half, 1 - half[::-1][1:], [1.0]])
    ang_x, ang_w = _composite(ang_edges, order)
    rad_edges = np.concatenate([[0.0], _RADIUS * 2.0 ** -np.arange(2 * levels, -1, -1.0)])
    r, rw = _composite(rad_edges, order)
    rw = rw * r * np.exp(-r * r / 2)
    return tuple(torch.as_tensor(a, dtype=F64) for a in (ang_x, ang_w, r, rw))


def bivariate_expectation(f1, f2, s1, s2, cos_t, order: int, levels: int, chunk: int = 1 << 22):
    """E[f1(z1) f2(z2)] for (z1, z2) centred normal, sd s1, s2, correlation cos_t (flat tensors).

    Polar coordinates (g1, g2) = r (cos a, sin a) with z1 = s1 r cos a and
    z2 = s2 r cos(a - t): both arguments change sign only at the four angles
    pi/2, pi/2 + t, 3pi/2, 3pi/2 + t, whatever r is, so splitting the angle there leaves
    smooth pieces even for kinked (relu) or steep (tanh at large |x|) activations.
    Gauss-Legendre in the angle on each piece, graded Gauss-Legendre in the radius.
    """
    ax, aw, r, rw = _quad_nodes(order, levels)
    t = torch.arccos(cos_t.clamp(-1, 1))  # (P,)
    starts = torch.stack([0 * t, t, 0 * t + math.pi, math.pi + t], -1) + math.pi / 2  # (P, 4)
    lens = torch.stack([t, math.pi - t, t, math.pi - t], -1)
    ang = (starts[..., None] + lens[..., None] * ax).flatten(-2)  # (P, 4m)
    angw = (lens[..., None] * aw).flatten(-2) / (2 * math.pi)
    P = s1.shape[0]
    out = torch.empty(P, dtype=F64)
    step = max(1, chunk // (ang.shape[-1] * r.shape[0]))
    for i in range(0, P, step):
        sl = slice(i, i + step)
        a = ang[sl]
        c1 = (s1[sl, None] * torch.cos(a))[..., None] * r  # (P, A, R)
        c2 = (s2[sl, None] * torch.cos(a - t[sl, None]))[..., None] * r
        vals = f1(c1) * f2(c2)
        out[sl] = torch.einsum("par,pa,r->p", vals, angw[sl], rw)
    return out
