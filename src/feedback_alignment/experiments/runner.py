"""Running one pack: the pure, seeded function every executor calls (in any process).

:func:`run_pack` trains a pack and returns one plain result dict per run (picklable: only
str, int, float and numpy arrays). It never raises for a failure inside training: a run
that raised is returned with status ``"failed"`` and the reason, so the caller records it.
Torch's thread count is set from the pack for the duration of the call, so the same seeds
give the same numbers whichever executor or machine runs the pack.
"""

from __future__ import annotations

import os
import socket
import time
import warnings

import numpy as np

from ..twolayer.schema import log_count, log_spaced
from .planner import Pack
from .spec import Run, deep_config
from .stops import record_horizon, stop_rule

DEEP_INDEX = {
    "loss": "step",
    "batch_accuracy": "step",
    "lr": "step",
    "test_accuracy": "eval_step",
    "test_loss": "eval_step",
}
DEEP_STEP_KEYS = ("step", "eval_step", "record_step", "measure_step")


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())[:2000]


def _result(run: Run, status: str, reason: str = "", **kw) -> dict:
    out = {
        "run_id": run.run_id,
        "status": status,
        "reason": reason,
        "stop_step": None,
        "diverged_at": None,
        "path": "",
        "engine_seconds": None,
        "finals": {},
        "series": {},
    }
    out.update(kw)
    return out


def run_pack(pack: Pack) -> list[dict]:
    """Train ``pack``; one result dict per run, in the pack's order."""
    import torch

    started = time.time()
    t0 = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(pack.threads)
    try:
        if pack.system == "twolayer":
            try:
                results = _twolayer(pack)
            except Exception as exc:  # a failure while running: recorded, redone on resume
                results = [_result(r, "failed", _one_line(exc)) for r in pack.runs]
        else:
            results = [_deep(r, pack.threads) for r in pack.runs]
    finally:
        torch.set_num_threads(old_threads)
    task_seconds = time.perf_counter() - t0
    worker = f"{socket.gethostname()}:{os.getpid()}"
    for res in results:
        res.update(
            pack_id=pack.pack_id,
            pack_size=len(pack.runs),
            task_seconds=task_seconds,
            started=started,
            finished=time.time(),
            worker=worker,
        )
    return results


# --------------------------------------------------------------------------- two-layer
def _record_steps(cfg: dict) -> list[int] | None:
    rs = cfg["record_steps"]
    if isinstance(rs, list):
        return rs or None
    return log_spaced(log_count(rs), record_horizon(cfg))


def _twolayer(pack: Pack) -> list[dict]:
    import torch

    from ..twolayer.data import task_data
    from ..twolayer.engine import TwoLayerEnsemble

    runs = pack.runs
    c = runs[0].config
    Xs, ys = [], []
    for r in runs:
        X, y = task_data(r.config["task"], c["n"], c["d"], c["p"], c["activation"], r.data_seed)
        Xs.append(X)
        ys.append(y)
    X, y = torch.stack(Xs), torch.stack(ys)
    ens = TwoLayerEnsemble(
        c["d"],
        c["p"],
        seeds=[r.net_seed for r in runs],
        activation=c["activation"],
        init_scale=c["init_scale"],
        dtype=c["dtype"],
        device=c["device"],
    )
    rule = stop_rule(c)
    when = {"steps": rule} if isinstance(rule, int) else {"stop": rule}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # divergence is recorded per run
        h = ens.fit(
            X,
            y,
            rule=[r.config["rule"] for r in runs],
            lr=[r.config["lr"] for r in runs],
            lam=[r.config["lam"] for r in runs],
            lam_schedule=c["lam_schedule"],  # parsed by fit, as the spec checked it
            w_decay=[r.config["w_decay"] for r in runs],
            dropout=[r.config["dropout"] for r in runs],
            loss=c["loss"],
            record_every=c["record_every"] or None,
            record_steps=_record_steps(c),
            metrics=tuple(c["metrics"]),
            **when,
        )
    out = []
    K = len(runs)
    for k, r in enumerate(runs):
        stop = int(h.stop_step[k])
        keep = h.steps <= stop
        steps = h.steps[keep]
        series = {}
        for m in c["metrics"]:
            vals = h.metrics[m][keep, k]
            if steps.size == 0 or steps[-1] < stop:
                # the member is frozen from its stop step: its final state is its last point
                s = np.append(steps, stop)
                vals = np.append(vals, h.final[m][k])
            else:
                s = steps
            series[m] = (s.astype(np.int64), np.asarray(vals, dtype=np.float64))
        out.append(
            _result(
                r,
                h.status[k],
                h.messages[k],
                stop_step=stop,
                diverged_at=int(h.diverged_at[k]) if h.diverged_at[k] >= 0 else None,
                path=h.path,
                engine_seconds=h.seconds / K,
                pack_seconds=h.seconds,
                finals={m: float(h.final[m][k]) for m in c["metrics"]},
                series=series,
            )
        )
    return out


# --------------------------------------------------------------------------- deep
def _deep(run: Run, threads: int) -> dict:
    from ..errors import DivergenceError

    t0 = time.perf_counter()
    try:
        from ..deep.trainer import run_from_config

        hist = run_from_config(deep_config(run, threads), progress=False)
    except DivergenceError as exc:
        return _result(run, "diverged", _one_line(exc), engine_seconds=time.perf_counter() - t0)
    except Exception as exc:
        return _result(run, "failed", _one_line(exc), engine_seconds=time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    series, finals = {}, {}
    for key, vals in hist.items():
        if key in DEEP_STEP_KEYS or key == "config" or not isinstance(vals, list):
            continue
        index = DEEP_INDEX.get(key)
        if index is None:
            index = "measure_step" if key.startswith("measure/") else "record_step"
        steps = np.asarray(hist.get(index, []), dtype=np.int64)
        v = np.asarray(vals, dtype=np.float64)[: steps.size]
        if v.size < steps.size:
            v = np.append(v, np.full(steps.size - v.size, np.nan))
        series[key] = (steps, v)
        if v.size:
            finals[key] = float(v[-1])
    if "final_test_accuracy" in hist:
        finals["final_test_accuracy"] = float(hist["final_test_accuracy"])
    stop = int(hist["step"][-1]) if hist.get("step") else 0
    return _result(
        run,
        "done",
        stop_step=stop,
        engine_seconds=seconds,
        pack_seconds=seconds,
        finals=finals,
        series=series,
    )
