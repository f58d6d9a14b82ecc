"""When each member of a fit stops: a plateau of its MSE, the step cap, or divergence.

:class:`Plateau` is the stopping rule a user gives; :class:`Monitor` applies it and watches
for divergence inside the fit loop, member by member, without a host sync at every step:
each step's MSE goes into a ring buffer and is judged at *sync* steps (every
``divergence_every`` steps, at plateau checks and when the buffer is full).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..activations import get_activation
from ..bounds import within
from ..errors import check, choice, need

PLATEAU_CHECKS = ("after_min", "authors")
# The paper's run-length rule as the authors' code runs it (Plateau.paper), declared once:
# at least rint(PAPER_MIN_BASE sqrt(p) // 14) steps, the MSE checked when
# t % PAPER_CHECK_EVERY == PAPER_CHECK_EVERY - 1, on until it changed by < PAPER_TOL.
PAPER_MIN_BASE = 5000
PAPER_CHECK_EVERY = 1000
PAPER_TOL = 1e-3
PLATEAU_QUANTITIES = ("mse", "alignment")  # what a plateau rule watches
# The authors' dropout runs' stopping rule (Plateau.paper_dropout): the base N of the
# minimum length (the activation's dropout_base_steps: 10000 for linear networks, else
# 5000), the alignment checked every N/5 steps, on until it changes by less than DROPOUT_TOL
# between checks.
DROPOUT_CHECKS_PER_BASE = 5
DROPOUT_TOL = 1e-4
# most steps between two divergence checks (the ring buffer of MSEs holds this many)
_MSE_WINDOW = 256


def paper_min_steps(p: int, base: int = PAPER_MIN_BASE) -> int:
    """The authors' minimum run length at width p: rint(base sqrt(p) // rint(sqrt(200))).

    Floor division by 14 then rounding, as their code computes it: 5050 at p = 200, 10101 at
    p = 800, 20203 at p = 3200 (not round(base sqrt(p/200)), which gives 5000, 10000, 20000).
    """
    return int(np.rint(base * np.sqrt(p) // np.rint(np.sqrt(200))))


@dataclass(frozen=True)
class Plateau:
    """A plateau stopping rule, decided per member; ``max_steps`` caps the run (None: the
    bound on steps, 1e9; a rule with ``tol = 0`` could never end, so it needs a cap).

    ``checks="after_min"``: train at least ``min_steps``; from then on, at ``min_steps +
    k check_every`` (k >= 1), stop a member whose MSE changed by less than ``tol`` since the
    previous checkpoint (``check_every`` steps earlier).

    ``checks="authors"``: the loop of the paper's published code. The MSE is checked at
    every step t (t updates applied) with ``t % check_every == check_every - 1``, from the
    start, against the previous check (the first against 0); once a change below ``tol``
    has been seen the member stops at the first step >= ``min_steps`` that its loop reaches
    (a check at t lets the update at t through, so a stop after ``min_steps`` comes at a
    multiple of ``check_every``). :meth:`paper` builds this rule.

    ``quantity``: what is compared between checks, the MSE (``"mse"``) or the alignment
    cos(beta, b) (``"alignment"``, the authors' dropout runs: :meth:`paper_dropout`).
    """

    min_steps: int
    check_every: int = PAPER_CHECK_EVERY
    tol: float = PAPER_TOL
    max_steps: int | None = None
    checks: str = "after_min"
    quantity: str = "mse"

    @classmethod
    def paper(cls, p: int, max_steps: int | None = None) -> Plateau:
        """The paper's rule as its code runs it: at least :func:`paper_min_steps` (p) steps,
        MSE checked at t % 1000 == 999, on until it changed by < 1e-3 between checks."""
        return cls(paper_min_steps(p), PAPER_CHECK_EVERY, PAPER_TOL, max_steps, "authors")

    @classmethod
    def paper_dropout(cls, p: int, activation: str, max_steps: int | None = None) -> Plateau:
        """The authors' dropout runs' rule: at least rint(N sqrt(p) // 14) steps with N =
        5000 (10000 for linear networks), the ALIGNMENT checked at t % (N/5) == N/5 - 1,
        on until it changed by < 1e-4 between checks (the same loop as :meth:`paper`)."""
        base = get_activation(activation).dropout_base_steps
        every = base // DROPOUT_CHECKS_PER_BASE
        return cls(paper_min_steps(p, base), every, DROPOUT_TOL, max_steps, "authors", "alignment")

    def __post_init__(self):
        choice("Plateau checks", self.checks, PLATEAU_CHECKS)
        choice("Plateau quantity", self.quantity, PLATEAU_QUANTITIES)
        within("Plateau min_steps", self.min_steps, "steps")
        need(self.check_every != 0, "Plateau check_every", self.check_every, "an integer >= 1")
        within("Plateau check_every", self.check_every, "steps")
        if self.max_steps is not None:
            within("Plateau max_steps", self.max_steps, "steps")
        need(
            isinstance(self.tol, int | float)
            and not isinstance(self.tol, bool)
            and math.isfinite(self.tol)
            and self.tol >= 0,
            "Plateau tol",
            self.tol,
            "a finite number >= 0",
        )
        check(
            self.tol > 0 or self.max_steps is not None,
            "Plateau tol = 0 never ends (no change is below 0) and max_steps is None; "
            "accepted: tol > 0, or a max_steps cap",
        )
        need(
            self.max_steps is None or self.max_steps >= self.min_steps,
            "Plateau max_steps",
            self.max_steps,
            f"None (no cap) or an integer >= min_steps ({self.min_steps})",
        )


class Monitor:
    """Which members are still training, and why the others stopped.

    Per step t: :meth:`begin` decides what happens at t (``last``, ``sync``, plateau
    checks); for each chunk of members :meth:`mse` stores the MSE of e and
    :meth:`observe` stops members that plateaued or diverged; :meth:`end` closes the step.
    ``active`` (K,) says who still trains, ``stop_step`` when the others stopped and
    ``first_bad`` the first step whose MSE was non-finite or grew ``blowup``-fold (-1 if
    none).
    """

    def __init__(self, K, stop: Plateau | None, max_steps, divergence_every, blowup, dtype, device):
        to = {"dtype": dtype, "device": device}
        self.stop, self.max_steps, self.blowup = stop, max_steps, blowup
        self.divergence_every = divergence_every
        self.active = torch.ones(K, dtype=torch.bool, device=device)
        self.first_bad = torch.full((K,), -1, dtype=torch.long, device=device)
        self.stop_step = np.full(K, -1, dtype=np.int64)
        self.mse0 = torch.empty(K, **to)
        self.mse_ckpt = torch.empty(K, **to)
        self.have_ckpt = False
        self.authors = stop is not None and stop.checks == "authors"
        if self.authors:  # the authors' loop: the first check compares with 0, a plateau sticks
            self.mse_ckpt.zero_()
            self.settled = torch.zeros(K, dtype=torch.bool, device=device)
        self.window = min(divergence_every, _MSE_WINDOW, max_steps + 1)
        self.mse_buf = torch.empty(self.window, K, **to)
        self.last_sync = -1

    def _events(self, t: int) -> tuple[bool, bool, bool, bool, bool]:
        """(last, checkpoint, auth_stop, auth_check, sync) of step t, the last sync so far."""
        stop, authors = self.stop, self.authors
        last = t >= self.max_steps
        checkpoint = (
            stop is not None
            and not authors
            and t >= stop.min_steps
            and (t - stop.min_steps) % stop.check_every == 0
        )
        # authors' rule: a settled member stops at min_steps or just after a check
        auth_stop = (
            authors and t >= stop.min_steps and (t == stop.min_steps or t % stop.check_every == 0)
        )
        auth_check = authors and t % stop.check_every == stop.check_every - 1
        sync = (
            last
            or checkpoint
            or auth_stop
            or t % self.divergence_every == 0
            or t - self.last_sync >= self.window
        )
        return last, checkpoint, auth_stop, auth_check, sync

    def begin(self, t: int) -> None:
        """Decide the events of step t (t updates applied so far)."""
        self.t = t
        self.last, self.checkpoint, self.auth_stop, self.auth_check, self.sync = self._events(t)
        if self.sync:  # the steps since the last sync, oldest first, as ring-buffer rows
            self.since = torch.arange(self.last_sync + 1, t + 1, device=self.active.device)
            self.rows = self.since % self.window

    def quiet(self, t: int, most: int) -> int:
        """How many steps from t on (at most ``most``) have no event: at such a step
        :meth:`observe` and :meth:`end` do nothing, and :meth:`record_run` stands for
        :meth:`mse`. There are fewer than ``window`` (a sync comes by then)."""
        count = 0
        while count < most and not any(self._events(t + count)):
            count += 1
        return count

    def record_run(self, sl: slice, t: int, e: torch.Tensor) -> None:
        """The MSEs of members ``sl`` at steps t, t + 1, ... (quiet ones, :meth:`quiet`),
        from their errors e (steps, k, n): each row as :meth:`mse` would store it."""
        rows = torch.arange(t, t + e.shape[0], device=e.device) % self.window
        self.mse_buf[rows, sl] = torch.mean(e * e, -1)

    def mse(self, sl: slice, e: torch.Tensor) -> torch.Tensor:
        """The MSE of members ``sl`` at this step, kept in the ring buffer."""
        mse = torch.mean(e * e, 1, out=self.mse_buf[self.t % self.window, sl])
        if self.t == 0:
            self.mse0[sl] = mse
        return mse

    def _halt(self, sl: slice, which: torch.Tensor) -> None:
        self.stop_step[sl][which.cpu().numpy()] = self.t
        self.active[sl] &= ~which

    def observe(self, sl: slice, mse: torch.Tensor, alignment=None) -> None:
        """Stop the members of ``sl`` that plateaued or diverged by this step;
        ``alignment()`` gives their cos(beta, b) where the rule watches it."""
        active, ckpt = self.active[sl], self.mse_ckpt[sl]
        watched = mse  # what the plateau rule compares between checks
        if (self.checkpoint or self.auth_check) and self.stop.quantity == "alignment":
            watched = alignment()
        if self.sync:  # first step since the last sync with a non-finite or blown-up MSE
            hist = self.mse_buf[self.rows, sl]
            bad = ~torch.isfinite(hist) | (hist > self.blowup * self.mse0[sl].clamp_min(1e-300))
            newly = bad.any(0) & (self.first_bad[sl] < 0) & active
            self.first_bad[sl] = torch.where(
                newly, self.since[bad.int().argmax(0)], self.first_bad[sl]
            )
        if self.checkpoint:
            if self.have_ckpt:
                self._halt(sl, ((watched - ckpt).abs() < self.stop.tol) & active)
            ckpt.copy_(watched)
        if self.auth_stop:  # settled by a check before t
            self._halt(sl, self.settled[sl] & active)
        if self.auth_check:
            self.settled[sl] |= (watched - ckpt).abs() < self.stop.tol
            ckpt.copy_(watched)
        if self.sync:
            diverged = (self.first_bad[sl] >= 0) & active
            if bool(diverged.any()):
                self._halt(sl, diverged)

    def end(self) -> bool:
        """Close the step; True where every member has stopped (judged at a sync step)."""
        if self.sync:
            self.last_sync = self.t
        self.have_ckpt |= self.checkpoint
        return self.sync and not bool(self.active.any())

    _TENSORS = ("active", "first_bad", "mse0", "mse_ckpt", "mse_buf")

    def state(self) -> dict:
        """Everything the monitor carries between steps (for a resume, :mod:`.fitstate`)."""
        out = {k: getattr(self, k).clone() for k in self._TENSORS}
        out["stop_step"] = torch.from_numpy(self.stop_step.copy())
        out["settled"] = self.settled.clone() if self.authors else None
        out["have_ckpt"] = bool(self.have_ckpt)
        out["last_sync"] = int(self.last_sync)
        return out

    def load_state(self, state: dict) -> None:
        for k in self._TENSORS:
            getattr(self, k).copy_(state[k])
        self.stop_step = state["stop_step"].numpy().copy()
        if self.authors:
            self.settled.copy_(state["settled"])
        self.have_ckpt = bool(state["have_ckpt"])
        self.last_sync = int(state["last_sync"])

    def outcome(self, seeds, lr, final_mse) -> tuple[list[str], list[str]]:
        """Each member's status ("done" or "diverged") and message (why it diverged; also
        warned). Called by ``fit`` once the loop has ended."""
        self.stop_step[self.stop_step < 0] = self.t
        first_bad = self.first_bad.cpu().numpy()
        mse0 = self.mse0.cpu().double().numpy()
        status, messages = [], []
        for k, bad_at in enumerate(first_bad):
            if bad_at < 0:
                status.append("done")
                messages.append("")
                continue
            status.append("diverged")
            messages.append(
                f"member {k} (seed {seeds[k]}) diverged at step {bad_at}: MSE became "
                f"{final_mse[k] if final_mse is not None else float('nan'):.3g} from "
                f"{mse0[k]:.3g} at step 0; likely cause: step size lr={lr[k]:g} is too large "
                "for this member's kernel (try a smaller lr)"
            )
            warnings.warn(messages[-1], RuntimeWarning, stacklevel=3)  # at fit's caller
        return status, messages
