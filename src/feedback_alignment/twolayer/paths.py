"""Exact representations of the first layer, each with its own cost per step.

The engine's loop (``engine.py``) asks a path for the outputs u, the second-layer
gradient direction and the first-layer update; the path decides how W is held:

* :class:`ExplicitPath` holds W (K, p, d). A step costs two products, 4 K n p d flops.
* :class:`RowSpacePath` uses that, under full-batch GD on fixed inputs X, every
  first-layer update is (something) x X, so W(t) = s(t) W_b + A(t) X with A (K, p, n),
  W_b the weights when the data were bound and s(t) the product of any weight-decay
  factors. The update is A <- keep A - M with no product at all, and the pre-activations
  Z = W X^T = s W_b X^T + A (X X^T) are kept as state and moved by the same update,
  Z <- keep Z - M (X X^T): one (p, n) x (n, n) product in place, 2 K p n^2 flops.
* :class:`LinearFAPath`: with psi linear and the FA rule every update row is b_r times
  the same vector, so A(t) = b a(t)^T with a (K, n), and beta stays in span{beta(0), b,
  columns of Z_b}; a step is O(K n^2), independent of p.

All three are exact (same trajectories up to float rounding). Every metric the engine
records is computed from the path's own quantities, W is formed only by
:meth:`materialise`. Methods take a slice ``sl`` of members so the engine can walk the
ensemble in cache-sized chunks.
"""

from __future__ import annotations

import math

import torch

from ..activations import Activation
from . import native as _native
from .fused import Kernels


def _gram(X: torch.Tensor) -> torch.Tensor:
    return X @ X.transpose(-1, -2)


def _sub_product_(out: torch.Tensor, M: torch.Tensor, R: torch.Tensor) -> None:
    """out -= M R in place, out and M (k, p, m); R (m, c) shared or (k, m, c) per member."""
    if R.dim() == 2:
        k, p, _ = M.shape
        out.view(k * p, -1).addmm_(M.reshape(k * p, -1), R, alpha=-1.0)
    else:
        out.baddbmm_(M, R, alpha=-1.0)


class ExplicitPath:
    """W held as a dense (K, p, d) tensor."""

    name = "explicit"
    native = None  # the native kernels, where a path runs them (RowSpacePath)
    owns_beta = False  # True: the path holds beta itself (LinearFAPath)
    keeps_weights = True  # False: W can no longer be formed (RowSpacePath without A)
    dropout = None  # the fit's masks (.dropout.Dropout), which then run the element-wise work

    @property
    def takes_runs(self) -> bool:
        """Whether :meth:`RowSpacePath.run` can take a run of the engine's steps in one
        call: on the native kernels."""
        return self.native is not None

    def __init__(self, W: torch.Tensor, W0: torch.Tensor, act: Activation, kernels="torch"):
        """``kernels``: what runs the element-wise work, "torch" or "compiled" here (and
        "native" on the row-space path), as :func:`.kernels.choose` picked it."""
        self.W, self.W0, self.act = W, W0, act
        self.kernel_kind = kernels
        self.kernels = Kernels(act, kernels == "compiled")

    # -- data
    def bind(self, X: torch.Tensor) -> None:
        """Fix the data: (n, d) shared by all members or (K, n, d) one set per member."""
        self.X, self.shared = X, X.dim() == 2

    def _X(self, sl):
        return self.X if self.shared else self.X[sl]

    # -- the step
    def preactivations(self, sl) -> torch.Tensor:
        W = self.W[sl]
        k, p, d = W.shape
        if self.shared:
            return (W.view(k * p, d) @ self.X.T).view(k, p, -1)
        return torch.bmm(W, self.X[sl].transpose(1, 2))

    def outputs(self, sl, beta: torch.Tensor):
        """u (k, n) and a cache for the backward quantities."""
        if self.dropout is not None:
            return self.dropout.outputs(sl, self.preactivations(sl), beta)
        return self.kernels.outputs(self.preactivations(sl), beta)

    def dpsi(self, cache) -> torch.Tensor:
        if "D" not in cache:
            cache["D"] = self.act.deriv(cache["Z"])
        return cache["D"]

    def step(self, sl, cache, ce, fb_lr, lr_eff, keep, beta_step=None) -> torch.Tensor | None:
        """Apply W <- keep W - M X, M = fb_lr * psi'(Z) * ce; return psi(Z) ce (k, p), the
        second layer's gradient direction, for the engine to apply. A path may instead
        apply beta <- beta - lr (psi(Z) ce + lam beta) itself, given ``beta_step`` =
        (beta, lr, lam), and return None.

        Consumes the cache's buffers."""
        direction, M = (self.dropout or self.kernels).backward(cache, ce, fb_lr)
        self._apply(sl, M, keep)
        return direction

    def _apply(self, sl, M, keep) -> None:
        W = self.W[sl]
        if keep is not None:
            W.mul_(keep[:, None, None])
        _sub_product_(W, M, self._X(sl))

    # -- metrics
    def update_row_sq_norms(self, sl, cache, e) -> torch.Tensor:
        """|(psi'(Z) * e)_r X|^2 per hidden unit r, (k, p): the update's row norms / fb_r^2."""
        m = self.dpsi(cache) * e.unsqueeze(1)
        if self.shared:
            R = (m.reshape(-1, m.shape[-1]) @ self.X).view(*m.shape[:2], -1)
        else:
            R = torch.bmm(m, self.X[sl])
        return (R * R).sum(-1)

    def sq_norm(self, sl) -> torch.Tensor:
        return self.W[sl].square().sum((1, 2))

    def change_sq_norm(self, sl) -> torch.Tensor:
        return (self.W[sl] - self.W0[sl]).square().sum((1, 2))

    def materialise(self) -> torch.Tensor:
        return self.W

    # -- resume (.fitstate)
    def state(self) -> dict:
        """What this path carries from one step to the next (tensors, copied)."""
        return {"W": self.W.clone()}

    def load_state(self, state: dict) -> None:
        """Put :meth:`state` back, into a path just bound to the same data."""
        self.W.copy_(state["W"])


class _DroppedCache(dict):
    """A native step's cache under dropout: Z, and H and D (psi(Z) and psi'(Z) times the
    step's scaled masks, which the kernels drew in their loops and kept nowhere) formed by
    the torch ops only if a recorded metric asks for them."""

    def __init__(self, dropout, sl, Z, beta):
        super().__init__(Z=Z)
        self._args = (dropout, sl, Z, beta)

    def __contains__(self, key) -> bool:
        return key in ("H", "D") or super().__contains__(key)

    def __missing__(self, key):
        if key not in ("H", "D"):
            raise KeyError(key)
        dropout, sl, Z, beta = self._args
        _, cache = dropout.outputs(sl, Z, beta)
        self.update(H=cache["H"], D=cache["D"])
        return self[key]


class RowSpacePath(ExplicitPath):
    """W = s W_b + A X, with Z = W X^T, Z_b = W_b X^T and the Gram matrix X X^T kept.

    Z is state, not recomputed: each step applies Z <- keep Z - M G in place (an
    in-place product reads and writes Z once; forming s Z_b + A G afresh would also copy
    Z_b every step, a slower step at every width measured, docs/performance.md).

    With ``keep_weights=False`` only Z (and beta, which the engine holds) is kept: no A,
    no Z_b, half the memory traffic of a step; W and the metrics that need it
    (``w_change``, the weight-decay penalty) can then not be formed, and asking for them
    raises :class:`~feedback_alignment.errors.ConfigError`.

    ``native``: run the step on the native kernels (:mod:`.native`; the caller checked
    that they apply, :func:`.kernels.choose`); ``compiled``: on the torch.compile ones."""

    name = "rowspace"

    def __init__(
        self,
        W: torch.Tensor,
        W0: torch.Tensor,
        act: Activation,
        kernels: str = "torch",
        keep_weights: bool = True,
    ):
        super().__init__(W, W0, act, kernels)
        self.Wb = W
        self._W = None
        self.want_native = kernels == "native"
        self.keeps_weights = keep_weights
        self._u_next: dict = {}  # member slice -> beta^T psi(Z) the native update computed

    def bind(self, X: torch.Tensor) -> None:
        super().bind(X)
        self.G = _gram(X)
        Zb = super().preactivations(slice(None))  # W_b X^T, (K, p, n)
        self._M = None  # the compiled kernels' scratch for M, one chunk's size, reused
        if self.want_native:
            self.native = _native.RowSpaceKernels(self.G, self.act)  # one pass a step
            Zb = _native.column_layout(Zb)  # Z, and A like it, as the kernels read them
        self.s = torch.ones(Zb.shape[0], dtype=X.dtype, device=X.device)
        self.base_is_init = self.Wb is self.W0
        if not self.keeps_weights:  # Z alone: it starts as Z_b and is moved in place
            self.Z, self.Zb = Zb, None
            self.A = self.Z0 = self.nWb = None
            return
        self.Zb = Zb
        self.Z = self.Zb.clone()
        self.Z0 = self.Zb if self.base_is_init else self._project(self.W0)
        self.A = torch.zeros_like(self.Zb)
        self.nWb = self.Wb.square().sum((1, 2))

    def _need_weights(self, what: str) -> None:
        if not self.keeps_weights:
            from ..errors import ConfigError

            raise ConfigError(
                f"{what} needs the first-layer weights W, which this fit did not keep "
                "(keep_weights=False keeps only Z = W X^T and beta); fit with "
                "keep_weights=True to have it"
            )

    def _project(self, W):
        if self.shared:
            return (W.reshape(-1, W.shape[-1]) @ self.X.T).view(*W.shape[:2], -1)
        return torch.bmm(W, self.X.transpose(1, 2))

    def _G(self, sl):
        return self.G if self.shared else self.G[sl]

    def _AG(self, A, sl):
        if self.shared:
            return (A.reshape(-1, A.shape[-1]) @ self.G).view(A.shape)
        return torch.bmm(A, self.G[sl])

    def preactivations(self, sl) -> torch.Tensor:
        return self.Z[sl]

    def _masks(self, sl):
        """The native kernels' dropout arguments for members ``sl`` (None: no dropout)."""
        if self.dropout is None:
            return None
        return self.dropout.native_args(sl, self.Z.dtype)

    def outputs(self, sl, beta: torch.Tensor):
        if self.native is None:
            return super().outputs(sl, beta)
        Z = self.Z[sl]
        u = self._u_next.pop((sl.start, sl.stop), None)  # left by the last update
        if u is None:
            u = self.native.forward(Z, beta, self._masks(sl))
        if self.dropout is None:
            return u / math.sqrt(Z.shape[1]), {"Z": Z}
        return u / math.sqrt(Z.shape[1]), _DroppedCache(self.dropout, sl, Z, beta)

    def _move_Z(self, sl, M, keep) -> None:
        """Z <- keep Z - M G, in place."""
        Z = self.Z[sl]
        if keep is not None:
            Z.mul_(keep[:, None, None])
        _sub_product_(Z, M, self._G(sl))

    def _scratch(self, Z: torch.Tensor) -> torch.Tensor:
        k = Z.shape[0]
        if self._M is None or self._M.shape[0] < k:
            self._M = torch.empty_like(Z)
        return self._M[:k]

    def step(self, sl, cache, ce, fb_lr, lr_eff, keep, beta_step=None):
        if self.native is not None and beta_step is not None:
            beta, _, lam = beta_step
            A = None if self.A is None else self.A[sl]
            self._u_next[(sl.start, sl.stop)] = self.native.update(
                self.Z[sl], A, ce, fb_lr, keep, beta, lr_eff, lam.reshape(-1), sl,
                self._masks(sl),
            )  # fmt: skip
            if keep is not None:
                self.s[sl] *= keep
            self._W = None
            return None
        if self.A is None:  # nothing to fuse the update of A into: M, then Z <- Z - M G
            return super().step(sl, cache, ce, fb_lr, lr_eff, keep)
        M = self._scratch(cache["Z"]) if self.kernels.compiled else None
        direction = self.kernels.backward_update(cache, ce, fb_lr, self.A[sl], keep, M)
        if direction is None:
            return super().step(sl, cache, ce, fb_lr, lr_eff, keep)
        if keep is not None:
            self.s[sl] *= keep
        self._move_Z(sl, M, keep)
        self._W = None
        return direction

    def run(self, sl, count, beta, y, c_p, fb_lr, lr_eff, keep, lam, fb_beta) -> torch.Tensor:
        """``count`` of the engine's steps of members ``sl`` in one native call (see
        :attr:`takes_runs`), each with the same lr, lam and keep: e = u - y from the
        outputs u, then :meth:`step` with ce = e ``c_p`` and fb_lr, which the members
        flagged in ``fb_beta`` ((k,) bool, or None: none) take as beta lr afresh at each
        step; with dropout, the first step's masks are those of ``dropout.t``. The numbers
        are the engine's step by step. Returns every step's e, (count, k, n)."""
        Z, masks = self.Z[sl], self._masks(sl)
        u = self._u_next.pop((sl.start, sl.stop), None)
        if u is None:
            u = self.native.forward(Z, beta, masks)
        A = None if self.A is None else self.A[sl]
        u, e = self.native.steps(
            count, Z, A, u, y, c_p, fb_lr, keep, beta, lr_eff, lam.reshape(-1), sl, masks,
            fb_beta,
        )  # fmt: skip
        self._u_next[(sl.start, sl.stop)] = u
        if keep is not None:
            s = self.s[sl]
            for _ in range(count):  # one rounding a step, as step() does
                s *= keep
        self._W = None
        return e

    def _apply(self, sl, M, keep) -> None:
        if keep is not None:
            self.s[sl] *= keep
        if self.A is not None:
            A = self.A[sl]
            if keep is not None:
                A.mul_(keep[:, None, None])
            A.sub_(M)
        self._move_Z(sl, M, keep)
        self._W = None

    def update_row_sq_norms(self, sl, cache, e) -> torch.Tensor:
        m = self.dpsi(cache) * e.unsqueeze(1)
        return (self._AG(m, sl) * m).sum(-1)  # m G m^T per row

    def _quad(self, sl) -> torch.Tensor:
        A = self.A[sl]
        return (self._AG(A, sl) * A).sum((1, 2))  # |A X|^2

    def sq_norm(self, sl) -> torch.Tensor:
        self._need_weights("|W|^2 (the weight-decay penalty)")
        s = self.s[sl]
        cross = (self.A[sl] * self.Zb[sl]).sum((1, 2))
        return s * s * self.nWb[sl] + 2 * s * cross + self._quad(sl)

    def change_sq_norm(self, sl) -> torch.Tensor:
        # W - W0 = (s W_b - W0) + A X
        self._need_weights("w_change")
        s = self.s[sl]
        if self.base_is_init:
            E2 = (s - 1).square() * self.nWb[sl]
            cross = (s - 1) * (self.A[sl] * self.Zb[sl]).sum((1, 2))
        else:
            E = s[:, None, None] * self.Wb[sl] - self.W0[sl]
            E2 = E.square().sum((1, 2))
            cross = (self.A[sl] * (s[:, None, None] * self.Zb[sl] - self.Z0[sl])).sum((1, 2))
        return E2 + 2 * cross + self._quad(sl)

    def materialise(self) -> torch.Tensor:
        self._need_weights("W")
        if self._W is None:
            W = self.s[:, None, None] * self.Wb
            X = self.X.expand(W.shape[0], *self.X.shape) if self.shared else self.X
            self._W = torch.baddbmm(W, self.A, X)
        return self._W

    def state(self) -> dict:
        # Z, A (None without weights) and s; the outputs the native update left for the
        # next step are kept too (recomputing them could round differently)
        u_next = {f"{a}:{b}": u.clone() for (a, b), u in self._u_next.items()}
        A = None if self.A is None else self.A.clone()
        return {"Z": self.Z.clone(), "A": A, "s": self.s.clone(), "u_next": u_next}

    def load_state(self, state: dict) -> None:
        self.Z.copy_(state["Z"])
        if self.A is not None:
            self.A.copy_(state["A"])
        self.s.copy_(state["s"])
        self._u_next = {
            tuple(int(i) for i in k.split(":")): u.clone() for k, u in state["u_next"].items()
        }
        self._W = None


class LinearFAPath(RowSpacePath):
    """psi linear, rule FA: A = b a^T, and beta = c1 beta_0 + c2 b + Z_b gamma, so a step is
    O(K n^2), whatever p.

    With psi linear, Z = s Z_b + b (G a)^T and every second-layer gradient Z ce lies in
    span{b, columns of Z_b}; beta is held as (c1, c2, gamma) over beta_0 (beta when the
    fit began), b and Z_b, and u = beta^T Z / sqrt p comes from precomputed n-vectors and
    the n x n matrix Z_b^T Z_b. beta is written out (O(K n p)) only when a record needs
    it (:meth:`write_beta`); the engine calls that before every record.
    """

    name = "linear_fa"
    owns_beta = True

    def __init__(self, W, W0, act, b: torch.Tensor):
        super().__init__(W, W0, act)  # no element-wise passes: nothing to compile
        self.b = b

    def bind(self, X: torch.Tensor) -> None:
        ExplicitPath.bind(self, X)
        K = self.Wb.shape[0]
        n = X.shape[-2]
        self.G = _gram(X)
        self.Zb = self._project(self.Wb)
        self.base_is_init = self.Wb is self.W0
        self.Z0 = self.Zb if self.base_is_init else self._project(self.W0)
        self.a = torch.zeros(K, n, dtype=X.dtype, device=X.device)
        self.s = torch.ones(K, dtype=X.dtype, device=X.device)
        self.nWb = self.Wb.square().sum((1, 2))
        self.nb = self.b.square().sum(1)
        self.bZb = torch.bmm(self.b.unsqueeze(1), self.Zb).squeeze(1)  # b^T Z_b, (K, n)
        self.bZ0 = (
            self.bZb if self.base_is_init else torch.bmm(self.b.unsqueeze(1), self.Z0).squeeze(1)
        )
        self.Hb = torch.bmm(self.Zb.transpose(1, 2), self.Zb)  # Z_b^T Z_b, (K, n, n)
        self._W = None

    def bind_beta(self, beta: torch.Tensor) -> None:
        """Start beta's coordinates from its value now: beta = 1 beta_0 + 0 b + Z_b 0."""
        K, n = self.a.shape
        to = {"dtype": beta.dtype, "device": beta.device}
        self.beta0 = beta.clone()
        self.c1, self.c2 = torch.ones(K, **to), torch.zeros(K, **to)
        self.gamma = torch.zeros(K, n, **to)
        self.P0 = torch.bmm(beta.unsqueeze(1), self.Zb).squeeze(1)  # beta_0^T Z_b, (K, n)
        self.beta0_b = (beta * self.b).sum(1)

    def write_beta(self, sl, beta: torch.Tensor) -> None:
        """beta[sl] <- c1 beta_0 + c2 b + Z_b gamma."""
        Zg = torch.bmm(self.Zb[sl], self.gamma[sl].unsqueeze(-1)).squeeze(-1)
        beta.copy_(self.c1[sl, None] * self.beta0[sl] + self.c2[sl, None] * self.b[sl] + Zg)

    def _Ga(self, sl):
        a = self.a[sl]
        return a @ self.G if self.shared else torch.bmm(self.G[sl], a.unsqueeze(-1)).squeeze(-1)

    def outputs(self, sl, beta):
        # Z = s Z_b + b (G a)^T, so beta^T Z = s beta^T Z_b + (beta . b) G a, and with
        # beta = c1 beta_0 + c2 b + Z_b gamma both terms are O(n^2) (beta itself is unused)
        c1, c2, gamma = self.c1[sl, None], self.c2[sl, None], self.gamma[sl]
        bZb = self.bZb[sl]
        HG = torch.bmm(self.Hb[sl], gamma.unsqueeze(-1)).squeeze(-1)
        beta_Zb = c1 * self.P0[sl] + c2 * bZb + HG
        beta_b = (
            c1 * self.beta0_b[sl, None]
            + c2 * self.nb[sl, None]
            + (bZb * gamma).sum(1, keepdim=True)
        )
        Ga = self._Ga(sl)
        u = (self.s[sl, None] * beta_Zb + beta_b * Ga) / math.sqrt(self.Zb.shape[1])
        return u, {"Ga": Ga}

    def step(self, sl, cache, ce, fb_lr, lr_eff, keep, beta_step=None):
        # the gradient Z ce = s Z_b ce + b (G a . ce): beta <- beta - lr (Z ce + lam beta)
        # moves the coordinates; M = lr b (x) ce moves a (A = b a^T): a <- keep a - lr ce
        _, _, lam = beta_step
        lr, lam = lr_eff[:, None], lam.reshape(-1, 1)
        s = self.s[sl, None]
        c1, c2, gamma = self.c1[sl], self.c2[sl], self.gamma[sl]
        gb = (cache["Ga"] * ce).sum(1)
        c1.sub_(lr_eff * lam[:, 0] * c1)
        c2.sub_(lr_eff * (lam[:, 0] * c2 + gb))
        gamma.sub_(lr * (lam * gamma + s * ce))
        a = self.a[sl]
        if keep is not None:
            a.mul_(keep[:, None])
            self.s[sl] *= keep
        a.sub_(lr * ce)
        self._W = None
        return None

    def update_row_sq_norms(self, sl, cache, e):
        G = self._G(sl)
        eGe = (
            (e @ G * e).sum(1)
            if self.shared
            else (torch.bmm(G, e.unsqueeze(-1)).squeeze(-1) * e).sum(1)
        )
        return eGe[:, None].expand(-1, self.b.shape[1])

    def _quad(self, sl):
        return self.nb[sl] * (self._Ga(sl) * self.a[sl]).sum(1)  # |b a^T X|^2

    def sq_norm(self, sl):
        s = self.s[sl]
        return s * s * self.nWb[sl] + 2 * s * (self.a[sl] * self.bZb[sl]).sum(1) + self._quad(sl)

    def change_sq_norm(self, sl):
        s, a = self.s[sl], self.a[sl]
        if self.base_is_init:
            E2 = (s - 1).square() * self.nWb[sl]
            cross = (s - 1) * (a * self.bZb[sl]).sum(1)
        else:
            E = s[:, None, None] * self.Wb[sl] - self.W0[sl]
            E2 = E.square().sum((1, 2))
            cross = (a * (s[:, None] * self.bZb[sl] - self.bZ0[sl])).sum(1)
        return E2 + 2 * cross + self._quad(sl)

    def materialise(self):
        if self._W is None:
            aX = (
                self.a @ self.X
                if self.shared
                else torch.bmm(self.a.unsqueeze(1), self.X).squeeze(1)
            )
            self._W = self.s[:, None, None] * self.Wb + self.b.unsqueeze(-1) * aX.unsqueeze(1)
        return self._W

    def state(self) -> dict:
        # beta_0 (and what bind_beta derives from it) is the fit's starting beta
        return {k: getattr(self, k).clone() for k in ("a", "s", "c1", "c2", "gamma")}

    def load_state(self, state: dict) -> None:
        for k in ("a", "s", "c1", "c2", "gamma"):
            getattr(self, k).copy_(state[k])
        self._W = None


PATHS = {"explicit": ExplicitPath, "rowspace": RowSpacePath, "linear_fa": LinearFAPath}
