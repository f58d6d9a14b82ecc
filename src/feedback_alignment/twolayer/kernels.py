"""Which kernels run a fit's element-wise work: the ``kernels`` option of ``fit``.

* ``"torch"``: eager torch ops, no set-up cost.
* ``"compiled"``: two ``torch.compile`` kernels a step (:mod:`.fused`) on the explicit and
  row-space paths; compiling costs seconds a shape, so it pays only on long runs.
* ``"native"``: the C++ row-space kernels (:mod:`.native`): row-space path, an activation
  that has them (``Activation.native``: linear, ReLU, tanh, sigmoid), with or without dropout,
  CPU, float32/64, n <= 1024 and a C++ compiler. Asked for where they cannot run, the fit
  is refused with a :class:`ConfigError` saying why (so is ``"compiled"`` on the linear-FA
  path, which has no element-wise work).
* ``"auto"`` (the default): the native kernels where they apply and a self-check
  (:mod:`.native.selfcheck`, timed once per machine and shape class) finds them faster
  than the torch ops; else the compiled kernels on a GPU, and on the CPU for runs long
  enough to repay compiling; else the torch ops.

The environment variable ``FA_NATIVE`` overrides ``"auto"`` only: ``0`` never takes the
native kernels, ``1`` takes them wherever they apply without the self-check. All choices
give the same numbers up to float rounding (the order of sums).
"""

from __future__ import annotations

import torch

from ..activations import Activation
from ..errors import check
from . import native
from .native import selfcheck

KERNELS = ("auto", "torch", "compiled", "native")
# below this many element-steps (K p n steps) compiling costs more than it saves on a CPU
_COMPILE_MIN_WORK = 2e11


def choose(
    kernels: str,
    path: str,
    act: Activation,
    X: torch.Tensor,
    K: int,
    p: int,
    keep_weights: bool,
    work: float,
    masked: bool = False,
) -> tuple[str, str]:
    """(what runs: "torch", "compiled" or "native"; why the native kernels do not, or "").

    ``kernels`` is one of :data:`KERNELS` (``fit`` checked it); ``work``: the fit's
    element-steps K p n steps (its minimum run under a stopping rule); ``masked``: the fit
    has dropout masks, which the compiled kernels cannot take (``fit`` refused
    ``kernels="compiled"``; ``"auto"`` then takes the torch ops instead of them).
    """
    n = X.shape[-2]
    if path == "linear_fa":
        check(
            kernels in ("auto", "torch"),
            f"kernels={kernels!r} cannot run on path 'linear_fa', which has no element-wise "
            "work; accepted there: 'auto', 'torch'",
        )
        return "torch", "the linear FA path has no element-wise work to run natively"
    if kernels in ("torch", "compiled"):
        return kernels, f"kernels={kernels!r} asked for"
    if path != "rowspace":
        why = f"native kernels only on the row-space path, this fit runs path {path!r}"
    elif kernels == "auto" and native.mode() == "0":
        why = "FA_NATIVE=0"
    else:
        why = native.why_not(act, X, n)
    if kernels == "native":
        check(
            why is None,
            f"kernels='native' cannot run this fit: {why}; accepted here: 'auto', 'torch', "
            "'compiled'",
        )
        return "native", ""
    if why is None and native.mode() == "auto":
        why = selfcheck.verdict(act, X.dtype, X.dim() == 2, K, p, n, keep_weights)
    if why is None:
        return "native", ""
    compiled = (X.device.type == "cuda" or work >= _COMPILE_MIN_WORK) and not masked
    return ("compiled" if compiled else "torch"), why
