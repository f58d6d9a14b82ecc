"""Element-wise work of a dense step, plain or compiled by ``torch.compile``.

Once the products are cheap (the row-space path) the step's time goes to element-wise
passes over (k, p, n) arrays: psi(Z), its reductions against beta and e, psi'(Z) and the
update M. :class:`Kernels` does them either eagerly (several passes, no set-up cost) or as
two compiled kernels that each read Z once; on the row-space path the second also
applies A <- keep A - M in the same pass. Results differ only
by float rounding (the order of summation in the reductions). Compilation costs seconds
per shape, so it pays for long runs; any failure to compile falls back to the plain
version with a warning.
"""

from __future__ import annotations

import math
import warnings

import torch

from ..activations import Activation


def _forward(fn):
    def forward(Z, beta):
        """u = beta^T psi(Z) (the 1/sqrt p is applied by the caller)."""
        return (fn(Z) * beta.unsqueeze(-1)).sum(1)

    return forward


def _backward(fn, deriv):
    def backward(Z, ce, fb_lr):
        """psi(Z) ce (k, p) and M = fb_lr * psi'(Z) * ce (k, p, n)."""
        direction = (fn(Z) * ce.unsqueeze(1)).sum(-1)
        M = deriv(Z) * fb_lr.unsqueeze(-1) * ce.unsqueeze(1)
        return direction, M

    return backward


def _backward_update(fn, deriv):
    def backward_update(Z, ce, fb_lr, A, keep, M):
        """psi(Z) ce (k, p); M = fb_lr * psi'(Z) * ce into M and A <- keep A - M, in place
        (row-space path: one pass reads Z and A, writes A and M)."""
        direction = (fn(Z) * ce.unsqueeze(1)).sum(-1)
        m = deriv(Z) * fb_lr.unsqueeze(-1) * ce.unsqueeze(1)
        # a select with equal branches changes no value, but makes the update depend on
        # its row's reduction: Inductor then emits one loop over rows of Z (each read once,
        # the second use from L1) instead of two passes, a faster step (docs/performance.md)
        m = torch.where(direction.unsqueeze(-1) == 0, m, m)
        M.copy_(m)
        A.mul_(keep[:, None, None]).sub_(M)
        return direction

    return backward_update


class Kernels:
    """u from Z, then (beta direction, M) from Z, for one activation; ``compiled``: by
    the torch.compile kernels (``kernels="compiled"``), else by eager torch ops."""

    _cache: dict = {}

    def __init__(self, act: Activation, compiled: bool):
        self.act = act
        self.compiled = False
        if compiled:
            key = act.compile_pair  # (psi, psi') written the way the compiler likes
            if key not in Kernels._cache:
                fn, deriv = key
                Kernels._cache[key] = (
                    torch.compile(_forward(fn), dynamic=False),
                    torch.compile(_backward(fn, deriv), dynamic=False),
                    torch.compile(_backward_update(fn, deriv), dynamic=False),
                )
            self._fwd, self._bwd, self._bwd_update = Kernels._cache[key]
            self.compiled = True

    def _fallback(self, exc: Exception) -> None:
        warnings.warn(
            f"torch.compile failed for activation {self.act.name!r} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "using the plain element-wise path",
            RuntimeWarning,
            stacklevel=3,
        )
        self.compiled = False

    def outputs(self, Z: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, dict]:
        p = Z.shape[1]
        if self.compiled:
            try:
                return self._fwd(Z, beta) / math.sqrt(p), {"Z": Z}
            except Exception as exc:  # noqa: BLE001 -- any compiler failure: fall back
                self._fallback(exc)
        H = self.act(Z)
        return torch.bmm(beta.unsqueeze(1), H).squeeze(1) / math.sqrt(p), {"Z": Z, "H": H}

    def backward(self, cache: dict, ce: torch.Tensor, fb_lr: torch.Tensor):
        """(psi(Z) ce, M); consumes the cache's buffers."""
        Z = cache["Z"]
        if "H" not in cache and self.compiled:
            try:
                return self._bwd(Z, ce, fb_lr)
            except Exception as exc:  # noqa: BLE001
                self._fallback(exc)
        if "H" not in cache:  # compiled forward, then a fallback: psi(Z) is still to compute
            cache["H"] = self.act(Z)
        H = cache["H"]
        direction = torch.bmm(H, ce.unsqueeze(-1)).squeeze(-1)
        if self.act.relu_like:
            M = H.sign_()  # psi'(Z) = 1[Z > 0] = sign(relu(Z)), in H's buffer
        else:
            M = cache["D"] if "D" in cache else self.act.deriv(Z)
        M.mul_(fb_lr.unsqueeze(-1)).mul_(ce.unsqueeze(1))
        return direction, M

    def backward_update(self, cache: dict, ce, fb_lr, A, keep, M) -> torch.Tensor | None:
        """Compiled only: psi(Z) ce, with M written to ``M`` and A <- keep A - M applied
        in the same pass over Z; returns None when not compiled (the caller then uses
        :meth:`backward` and applies M itself)."""
        if not self.compiled or "H" in cache:
            return None
        if keep is None:
            keep = torch.ones(A.shape[0], dtype=A.dtype, device=A.device)
        try:
            return self._bwd_update(cache["Z"], ce, fb_lr, A, keep, M)
        except Exception as exc:  # noqa: BLE001
            self._fallback(exc)
            return None
