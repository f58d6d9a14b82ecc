"""What a fit records: the metric names, their formulas, the rows and the :class:`History`.

Every metric is computed from the first-layer path's own quantities (W is never formed on
the fast paths); :class:`Recorder` fills one row (K,) per recorded step, chunk by chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

METRICS = (
    "mse",  # mean squared error, without any penalty
    "penalty",  # lam(t)/2 |beta|^2 + wd/2 |W|_F^2
    "alignment",  # cos(beta, b)
    "delta_alignment",  # cos(beta - beta(0), b); NaN at t = 0
    "beta_change",  # |beta - beta(0)| / |beta(0)|
    "w_change",  # |W - W(0)|_F / |W(0)|_F
    "update_alignment",  # cos(first-layer update applied, true backprop gradient)
)
# the terms of the conservation law (twolayer/conservation.py); asked for by name only,
# as they cost about a step each when recorded
CONSERVATION_METRICS = (
    "b_beta",  # b . beta, the alignment's numerator
    "w_sq_norm",  # |W|_F^2
    "beta_sq_norm",  # |beta|^2
    "w_step_sq",  # |lr (fb * psi'(Z) * c e / sqrt p) X|_F^2: this step's W update less decay
    "beta_step_sq",  # |beta(t+1) - beta(t)|^2, this step's second-layer update
)


@dataclass
class History:
    """What a :meth:`TwoLayerEnsemble.fit` call recorded.

    ``metrics[name]`` is a float64 array (R, K) at the step numbers ``steps`` (R,);
    ``final[name]`` is (K,) at each member's last step. ``status[k]`` is ``"done"`` or
    ``"diverged"``; ``stop_step[k]`` the step count at which member k stopped (its
    parameters are frozen from there); ``diverged_at[k]`` the first step whose MSE was
    non-finite or exploded (-1 if none), with ``messages[k]`` saying why. ``path`` names
    the first layer's representation and ``kernels`` what ran its element-wise work:
    ``"torch"`` (eager ops), ``"compiled"`` (torch.compile) or ``"native"`` (the C++
    row-space kernels for linear, ReLU, tanh and sigmoid); where the native kernels did not run,
    ``kernels_why`` says why (empty where they ran).
    """

    steps: np.ndarray
    metrics: dict[str, np.ndarray]
    final: dict[str, np.ndarray]
    status: list[str]
    stop_step: np.ndarray
    diverged_at: np.ndarray
    messages: list[str]
    path: str
    seconds: float
    kernels: str = "torch"
    extra: dict = field(default_factory=dict)
    kernels_why: str = ""

    def member(self, k: int) -> dict[str, np.ndarray]:
        """Member k's series: ``{"step": ..., metric: ...}``."""
        return {"step": self.steps, **{m: v[:, k] for m, v in self.metrics.items()}}

    @property
    def diverged(self) -> list[int]:
        return [k for k, s in enumerate(self.status) if s == "diverged"]


def _cos(a, c):
    return (a * c).sum(-1) / (a.norm(dim=-1) * c.norm(dim=-1))


class Recorder:
    """The metric rows of one fit of ensemble ``ens`` on first-layer path ``fl``."""

    def __init__(self, ens, fl, names, every, at_steps, wd_t, c_p):
        self.ens, self.fl, self.names = ens, fl, names
        self.every, self.at_steps = every, at_steps
        self.wd_t, self.c_p = wd_t, c_p  # W's decay (K,) or None; c / sqrt p
        self.steps: list[int] = []
        self.rows: dict[str, list[torch.Tensor]] = {m: [] for m in names}
        self.row: dict[str, torch.Tensor] | None = None

    def records(self, t: int, last: bool) -> bool:
        """Whether step t is recorded: multiples of ``every``, ``at_steps``, the last."""
        return bool(last or (self.every and t % self.every == 0) or t in self.at_steps)

    def begin(self, t: int, last: bool) -> bool:
        """Open a row if step t is recorded (:meth:`records`)."""
        on = self.records(t, last)
        self.row = {m: self._empty() for m in self.names} if on else None
        return on

    def _empty(self) -> torch.Tensor:
        return torch.empty(self.ens.K, dtype=self.ens.dtype, device=self.ens.device)

    def chunk(self, sl, cache, e, mse, fb, lam, lr) -> None:
        """Fill the open row for members ``sl``: their errors e, feedback fb, lam(t) and
        the lr (k,) of the step about to be taken."""
        vals = self.metrics(sl, cache, e, mse, fb, lam, lr)
        for m in self.names:
            self.row[m][sl] = vals[m]

    def commit(self, t: int) -> None:
        self.steps.append(t)
        for m in self.names:
            self.rows[m].append(self.row[m])

    def record_all(self, t, chunks, y, feedback, lam_now) -> None:
        """Record the state every member stopped in at t (a forward pass, no update);
        ``feedback`` gives each member its own rule's fb, as in the loop."""
        self.row = {m: self._empty() for m in self.names}
        for sl in chunks:
            beta = self.ens.beta[sl]
            u, cache = self.fl.outputs(sl, beta)
            e = u - y[sl]
            no_step = torch.zeros_like(lam_now[sl])  # every member stopped
            self.chunk(sl, cache, e, (e * e).mean(1), feedback(sl, beta), lam_now[sl], no_step)
        self.commit(t)

    def state(self) -> dict:
        """The rows recorded so far (for a resume, :mod:`.fitstate`)."""
        return {
            "steps": list(self.steps),
            "rows": {m: torch.stack(v) if v else None for m, v in self.rows.items()},
        }

    def load_state(self, state: dict) -> None:
        self.steps = [int(s) for s in state["steps"]]
        self.rows = {
            m: [] if state["rows"][m] is None else list(state["rows"][m].clone().unbind(0))
            for m in self.names
        }

    def final(self) -> dict[str, np.ndarray]:
        """Each metric (K,) at each member's last step: the last row (frozen since)."""
        return {m: self.rows[m][-1].detach().cpu().double().numpy() for m in self.names}

    def history(self, final, **fields) -> History:
        """The :class:`History` of the recorded rows, ``final`` and ``fields``."""
        metrics = {
            m: torch.stack(v).detach().cpu().double().numpy() if v else np.empty((0, self.ens.K))
            for m, v in self.rows.items()
        }
        steps = np.asarray(self.steps, dtype=np.int64)
        return History(steps=steps, metrics=metrics, final=final, **fields)

    def metrics(self, sl, cache, e, mse, fb, lam_now, lr) -> dict[str, torch.Tensor]:
        """The recorded metrics, (k,) each, for members ``sl``; changes no parameter.

        ``lr`` (k,): the step about to be taken (for the *_step_sq)."""
        ens, fl, c_p, wd_t = self.ens, self.fl, self.c_p, self.wd_t
        out: dict[str, torch.Tensor] = {}
        if fl.owns_beta:
            fl.write_beta(sl, ens.beta[sl])
        beta, b, beta0 = ens.beta[sl], ens.b[sl], ens.beta0[sl]
        q = None  # q_r = |m_r X|^2, m = psi'(Z) * e: formed once for the metrics that need it
        for m in self.names:
            if m in ("update_alignment", "w_step_sq") and q is None:
                q = fl.update_row_sq_norms(sl, cache, e)
            if m == "mse":
                out[m] = mse
            elif m == "penalty":
                pen = 0.5 * lam_now * beta.square().sum(-1)
                if wd_t is not None:
                    pen = pen + 0.5 * wd_t[sl] * fl.sq_norm(sl)
                out[m] = pen
            elif m == "alignment":
                out[m] = _cos(beta, b)
            elif m == "delta_alignment":
                out[m] = _cos(beta - beta0, b)
            elif m == "beta_change":
                out[m] = (beta - beta0).norm(dim=-1) / beta0.norm(dim=-1)
            elif m == "w_change":
                W0 = ens.W0[sl]
                out[m] = (fl.change_sq_norm(sl) / W0.square().sum((1, 2))).sqrt()
            elif m == "update_alignment":
                # row r of the applied update is fb_r m_r X, of the gradient beta_r m_r X
                out[m] = (fb * beta * q).sum(-1) / torch.sqrt(
                    (fb * fb * q).sum(-1) * (beta * beta * q).sum(-1)
                )
            elif m == "b_beta":
                out[m] = (b * beta).sum(-1)
            elif m == "w_sq_norm":
                out[m] = fl.sq_norm(sl)
            elif m == "beta_sq_norm":
                out[m] = beta.square().sum(-1)
            elif m == "w_step_sq":
                out[m] = (lr * c_p).square() * (fb * fb * q).sum(-1)
            elif m == "beta_step_sq":
                if "H" in cache:
                    H = cache["H"]
                elif "Z" in cache:
                    H = ens.activation(cache["Z"])
                else:  # linear_fa keeps no Z: form it (slow, exact)
                    X = fl.X if fl.shared else fl.X[sl]
                    H = ens.activation(fl.materialise()[sl] @ X.transpose(-1, -2))
                grad = torch.einsum("kpn,kn->kp", H, e) * c_p
                out[m] = (lr[:, None] * (grad + lam_now[:, None] * beta)).square().sum(-1)
        return out
