"""A fit's full state mid-run, to save and resume: the ``checkpoint`` option of ``fit``.

``fit(..., checkpoint=c)`` takes any object with ``load() -> dict | None``, ``due() ->
bool`` and ``save(state)`` (``reproduce.checkpoints.Checkpoint`` is one). At the start the
fit resumes from ``c.load()`` when that returns a state; after each step where ``c.due()``
it calls ``c.save(state)``. A resumed fit gives exactly the numbers of an uninterrupted
one (float32 and float64), as everything the loop carries from one step to the next is in
the state:

* the first layer as the path holds it (:meth:`state` of :mod:`.paths`: W; or Z, A, s and
  the next step's outputs the native kernels left; or linear FA's coordinates), beta;
* the step count (this fit's and the ensemble's, which the dropout masks are drawn from:
  a mask is a function of (seed, step) alone, so no generator state needs keeping);
* the stopping and divergence monitor (:meth:`.monitor.Monitor.state`) and the rows
  recorded so far (:meth:`.recorder.Recorder.state`);
* what ran the element-wise work (a resume with ``kernels="auto"`` runs the same kernels,
  whose sums round alike).

What a fit recomputes from its inputs (X X^T, W_b X^T, the chunking) is not saved. A state
holds only tensors, numbers, strings, None and containers of these (what
``torch.load(..., weights_only=True)`` accepts). It carries a fingerprint of the fit (the
ensemble's shape, seeds, dtype and starting parameters, the data and every option): a
state of another fit is refused with one line.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import torch

from ..errors import ConfigError

FORMAT = "feedback-alignment two-layer fit state 1"


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    return str((t.dtype, tuple(t.shape))).encode() + t.view(torch.uint8).numpy().tobytes()


def fingerprint(ens, o) -> str:
    """A digest of everything that decides a fit's numbers: the ensemble as the fit finds
    it and every checked option of the fit (:class:`.options.FitOptions`, read from its
    fields, so an option added there is covered) but ``kernels``, which a resumed fit takes
    from the saved state."""
    h = hashlib.sha256(FORMAT.encode())
    for t in (ens.W, ens.beta, ens.b, ens.W0, ens.beta0, o.X, o.y):
        h.update(_tensor_bytes(t))
    plain = {
        "shape": (ens.d, ens.p, ens.K),
        "seeds": ens.seeds,
        "activation": ens.activation.name,
        "dtype": str(ens.dtype),
        "t": ens.t,
    }
    for f in dataclasses.fields(o):
        if f.name not in ("X", "y", "kernels"):
            plain[f.name] = _plain(getattr(o, f.name))
    h.update(repr(sorted(plain.items())).encode())
    return h.hexdigest()


def _plain(value):
    """An option's checked value as text that names it exactly."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set):
        return sorted(value)
    if callable(value) and not dataclasses.is_dataclass(value):
        return type(value).__qualname__  # a schedule without parameters
    return repr(value)


def where(checkpoint) -> str:
    """How a message names the checkpoint (its path where it has one)."""
    path = getattr(checkpoint, "path", None)
    return f"checkpoint {str(path)!r}" if path is not None else "the checkpoint"


def loaded(checkpoint, key: str) -> dict | None:
    """The state ``checkpoint`` holds for the fit of fingerprint ``key``, or None when it
    holds none; a state of another fit (or not a fit state) is a one-line ConfigError."""
    state = checkpoint.load()
    if state is None:
        return None
    from .kernels import KERNELS

    if (
        not isinstance(state, dict)
        or state.get("format") != FORMAT
        or state.get("kernels") not in KERNELS
    ):
        raise ConfigError(
            f"{where(checkpoint)} holds no two-layer fit state; delete it to start this fit "
            "afresh (nothing was touched)"
        )
    if state.get("key") != key:
        raise ConfigError(
            f"{where(checkpoint)} holds the state of another fit (other data, seeds or "
            "options); delete it to start this fit afresh (nothing was touched)"
        )
    return state


def capture(key: str, ens, fl, mon, rec, t: int, kernels: str, why: str) -> dict:
    """The state of a fit between steps: ``t`` updates applied in this fit."""
    return {
        "format": FORMAT,
        "key": key,
        "t": int(t),
        "ens_t": int(ens.t),
        "beta": ens.beta.clone(),
        "kernels": kernels,
        "kernels_why": why,
        "path": fl.name,
        "first_layer": fl.state(),
        "monitor": mon.state(),
        "recorder": rec.state(),
    }


def restore(state: dict, ens, fl, mon, rec) -> int:
    """Put ``state`` (from :func:`capture`, checked by :func:`loaded`) back into the
    ensemble, path, monitor and recorder of a fit that just began; return its ``t``."""
    if state["path"] != fl.name:
        raise ConfigError(
            f"the checkpoint was saved on path {state['path']!r}, this fit runs "
            f"{fl.name!r}; delete it to start this fit afresh (nothing was touched)"
        )
    ens.beta.copy_(state["beta"])
    ens.t = int(state["ens_t"])
    fl.load_state(state["first_layer"])
    mon.load_state(state["monitor"])
    rec.load_state(state["recorder"])
    return int(state["t"])


def as_tensor(a: np.ndarray) -> torch.Tensor:
    """A numpy array as a tensor a state may hold."""
    return torch.from_numpy(np.ascontiguousarray(a)).clone()
