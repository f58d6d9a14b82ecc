"""Benchmark of the two-layer engine on the workload the reproduction runs (E1).

E1 trains, for each activation and width p, 4 lambdas x 50 repetitions, every repetition
on its own data: K = 50 members, each with its own X (n = 50, d = 150), FA, the
authors' step sizes, MSE and alignment recorded, no first-layer weights kept
(``keep_weights=False``, as ``fa reproduce`` sets it). For each activation, dtype and
width this measures, in one run on one machine:

* ``engine``: steps/s of the ensemble as the engine runs it by itself (``kernels="auto"``:
  the path and kernels it picks, self-check included; ``kernels`` names them);
* for ReLU and tanh, the row-space path on the native kernels (``kernels="native"``) and
  on the torch ops (``kernels="torch"``): ``native_vs_torch`` = torch time / native time;
* ``authors``: the same K runs done as the authors' code does, one run at a time, each
  through autograd (the FA output layer as an ``autograd.Function``) and
  ``torch.optim.SGD``, on the process's threads or on one, whichever is faster (its tiny
  ops at small p run faster and far steadier on one); ``speedup`` = authors' time for K
  runs / engine time;
* the full E1 grid projected on this machine at the paper's run-length rule, at least
  rint(5000 sqrt(p) // 14) steps a run (5050 at p = 200, 20203 at 3200), from the
  engine's measured step times (float32; widths not measured are interpolated in log-log);
* the roofline (``roofline.py``): for ReLU and tanh, the flops a row-space step must do
  (the (p x n)(n x n) product of every member, 2 p n^2 K) and the bytes it must move
  (its state Z, K p n numbers, read and written once: 2 K p n x itemsize, as
  ``keep_weights=False`` keeps nothing else), the machine's matmul rate and copy
  bandwidth measured in this run (before and after the rows; the higher counts), the
  least time a step can take, max(flops / matmul rate, bytes / copy bandwidth), and the
  ``fraction`` of it the engine's (and the native kernels') step reaches. The linear rows
  run the linear-FA path, O(K n^2) a step whatever p: no roofline there.

The variants of one width are timed in interleaved rounds: every round runs one block of
each (about 0.15 s in quick mode, 0.5 s otherwise, and a fit at least ``FIT_MIN_STEPS``
steps, so that its first step's extra pass over Z is about 1 % of the time), in a
rotating order, and each time is
the minimum over the rounds (five quick, seven otherwise). The minimum is the least noisy
estimate on a shared machine, and interleaving lets a slow spell hit every variant alike;
ratios, not absolute times, are the figures. The last
line of output is one JSON object. ``--quick`` measures p in {200, 3200, 12800}.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import sys
import time

import torch

import roofline
from feedback_alignment import hardware
from feedback_alignment.activations import paper_lr
from feedback_alignment.twolayer.data import linear_teacher, random_teacher, stack
from feedback_alignment.twolayer.engine import TwoLayerEnsemble

K, N, D = 50, 50, 150
WIDTHS_E1 = (200, 400, 800, 1600, 3200, 6400, 12800)
LR = {act: paper_lr(act) for act in ("linear", "relu", "tanh", "sigmoid")}  # the authors' code
LAM = {"linear": 0.2, "relu": 0.02, "tanh": 0.002}
E1_RUNS = 4 * 50  # lambdas x repetitions per (activation, width)


def step_work(p: int, dtype: str) -> tuple[float, float]:
    """(flops, bytes) a row-space step must do and move at width p: the product
    Z <- Z - M G of every member (2 p n^2 each) and one read and one write of Z."""
    itemsize = torch.finfo(getattr(torch, dtype)).bits // 8
    return 2.0 * p * N * N * K, 2.0 * K * p * N * itemsize


def paper_steps(p: int) -> int:
    """The authors' minimum run length: rint(5000 sqrt(p) // rint(sqrt(200)))."""
    return int(5000 * math.sqrt(p) // 14)


def data(act: str, p: int, members: int, dtype: str):
    to = getattr(torch, dtype)
    if act == "linear":
        X, y = stack(linear_teacher, range(members), n=N, d=D)
    else:
        X, y = stack(random_teacher, range(members), n=N, d=D, p=p, activation=act)
    return X.to(to), y.to(to)


# A fit's first step computes the outputs from scratch (one more pass over Z) and its last
# records: blocks of at least this many steps keep that to about 1 % of a step. At p =
# 12800 (ReLU, float32, Intel Xeon) a fit of 5 steps read 15.1 ms a step, of 100 11.8 ms.
FIT_MIN_STEPS = 100


def engine_timer(act: str, p: int, dtype: str, kernels: str, X, y):
    """A timer of the ensemble as the engine runs it: ``timer(steps)`` fits a fresh copy of
    one K-member ensemble (each member its own X) for ``steps`` steps and returns the
    engine's loop time per step; ``timer.ran`` names the path and kernels that ran."""
    template = TwoLayerEnsemble(D, p, seeds=range(K), activation=act, dtype=dtype)

    def timer(steps: int) -> float:
        ens = copy.deepcopy(template)
        h = ens.fit(
            X,
            y,
            rule="fa",
            lr=LR[act],
            lam=LAM[act],
            steps=steps,
            metrics=("mse", "alignment"),
            kernels=kernels,
            keep_weights=False,
        )
        timer.ran = f"{h.path}+{h.kernels}"
        return h.seconds / steps

    timer.min_steps = FIT_MIN_STEPS
    return timer


class FAOutput(torch.autograd.Function):
    """u = H beta / sqrt p; backward sends the error through b (FA) instead of beta."""

    @staticmethod
    def forward(ctx, H, beta, b):
        ctx.save_for_backward(H, b)
        return H @ beta / math.sqrt(H.shape[1])

    @staticmethod
    def backward(ctx, gu):
        H, b = ctx.saved_tensors
        s = math.sqrt(H.shape[1])
        return torch.outer(gu, b) / s, H.T @ gu / s, None


def authors_timer(act: str, p: int, dtype: str, X_all, y_all, threads: int | None = None):
    """A timer of one run done the authors' way (one network, its own data, autograd +
    torch.optim.SGD with weight decay on beta): ``timer(steps)`` takes the next run's
    network and data, one warm-up step, and returns the seconds per step of ``steps`` more,
    on ``threads`` torch threads (default: the process's)."""
    to = getattr(torch, dtype)
    psi = {"linear": lambda z: z, "relu": torch.relu, "tanh": torch.tanh}[act]
    runs = itertools.count()

    def timer(steps: int) -> float:
        k = next(runs) % len(X_all)
        X, y = X_all[k], y_all[k]
        g = torch.Generator().manual_seed(k)
        W = torch.randn(p, D, generator=g, dtype=to).requires_grad_()
        beta = torch.randn(p, generator=g, dtype=to).requires_grad_()
        b = torch.randn(p, generator=g, dtype=to)
        opt = torch.optim.SGD(
            [{"params": [W], "weight_decay": 0.0}, {"params": [beta], "weight_decay": LAM[act]}],
            lr=LR[act],
        )

        def step():
            opt.zero_grad()
            u = FAOutput.apply(psi(X @ W.T), beta, b)
            loss = ((u - y) ** 2).mean()
            loss.backward()
            opt.step()

        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            step()  # warm-up
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            return (time.perf_counter() - t0) / steps
        finally:
            torch.set_num_threads(before)

    return timer


def interleaved(timers: dict, rounds: int, block_s: float) -> dict[str, float]:
    """Seconds per step of each timer: the minimum over ``rounds`` rounds in which every
    timer runs one block of about ``block_s`` seconds, in an order that rotates from round
    to round (a slow spell of a shared machine then hits every timer alike). A first,
    untimed block of each warms up (build, self-check, page faults) and sizes the blocks,
    to at least a timer's ``min_steps`` (2 where it has none)."""
    steps = {}
    for name, timer in timers.items():
        t = timer(2)
        least = getattr(timer, "min_steps", 2)
        steps[name] = max(least, min(2000, math.ceil(block_s / t)))
    best = dict.fromkeys(timers, math.inf)
    names = list(timers)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            best[name] = min(best[name], timers[name](steps[name]))
    return best


def project(step_s: dict[int, float]) -> dict:
    """Seconds of the full E1 grid for one activation: 200 runs per width in ensembles of
    K, each for the paper's minimum steps; unmeasured widths interpolated in log-log."""
    ps = sorted(step_s)
    out = {}
    for p in WIDTHS_E1:
        if p in step_s:
            t = step_s[p]
        else:
            lo = max([q for q in ps if q < p], default=ps[0])
            hi = min([q for q in ps if q > p], default=ps[-1])
            if lo == hi:
                t = step_s[lo] * p / lo
            else:
                a = math.log(step_s[hi] / step_s[lo]) / math.log(hi / lo)
                t = step_s[lo] * (p / lo) ** a
        out[p] = t * paper_steps(p) * E1_RUNS / K
    return out


# what issue 24 asks of the float32 E1 step, for the summary: fraction of the roofline
# bound by width, speed-up over the authors' loop by width, tanh's step / ReLU's
TARGET_FRACTION = {200: 0.6, 3200: 0.7, 12800: 0.7}
TARGET_SPEEDUP = {200: 20.0, 3200: 5.0, 12800: 5.0}
TARGET_TANH_OVER_RELU = 1.25


def _fmt(row: dict) -> str:
    return "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def summary(rows: list[dict]) -> list[str]:
    """The float32 ReLU and tanh rows against the issue's targets, one line a width."""
    by = {(r["activation"], r["p"]): r for r in rows if r["dtype"] == "float32"}
    lines = []
    for p in sorted({p for _, p in by}):
        relu, tanh = by.get(("relu", p)), by.get(("tanh", p))
        for r in (relu, tanh):
            if r is None:
                continue
            f_goal, s_goal = TARGET_FRACTION.get(p), TARGET_SPEEDUP.get(p)
            lines.append(
                f"  {r['activation']:>4} p={p:<5}  step {1e3 / r['engine_steps_per_s']:.3g} ms"
                f"  bound {r['bound_ms']:.3g} ms ({r['binding']})"
                f"  fraction {r['fraction']:.2f}"
                + (f" (target {f_goal})" if f_goal else "")
                + f"  speedup {r['speedup']:.3g}"
                + (f" (target {s_goal:g})" if s_goal else "")
            )
        if relu and tanh:
            ratio = relu["engine_steps_per_s"] / tanh["engine_steps_per_s"]
            lines.append(
                f"  tanh / relu step at p={p}: {ratio:.2f} (target <= {TARGET_TANH_OVER_RELU})"
            )
    return lines


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="p in {200, 3200, 12800}, shorter blocks, fewer rounds"
    )
    ap.add_argument("--widths", type=int, nargs="*", default=None)
    ap.add_argument("--activations", nargs="*", default=["linear", "relu", "tanh"])
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    widths = args.widths or ([200, 3200, 12800] if args.quick else list(WIDTHS_E1))
    rounds, block_s = (5, 0.15) if args.quick else (7, 0.5)
    out: dict = {**hardware.describe(), "K": K, "n": N, "d": D, "data": "one X per member"}
    out["rows"] = []
    print(f"# {hardware.line(out)}, K={K} n={N} d={D}, one X per member", flush=True)
    lim_before = roofline.limits(args.dtypes)
    print(f"# machine limits (before the rows): {roofline.describe(lim_before)}", flush=True)
    step32: dict[str, dict[int, float]] = {}
    for act in args.activations:
        for dtype in args.dtypes:
            for p in widths:
                X, y = data(act, p, K, dtype)
                timers = {"engine": engine_timer(act, p, dtype, "auto", X, y)}
                if act != "linear":
                    timers["native"] = engine_timer(act, p, dtype, "native", X, y)
                    timers["torch"] = engine_timer(act, p, dtype, "torch", X, y)
                timers["authors"] = authors_timer(act, p, dtype, X, y)
                if torch.get_num_threads() > 1:  # tiny ops can run faster on one thread
                    timers["authors_1thread"] = authors_timer(act, p, dtype, X, y, threads=1)
                t = interleaved(timers, rounds, block_s)
                t["authors"] = min(t["authors"], t.get("authors_1thread", math.inf))
                t_eng = t["engine"]
                row = {"activation": act, "dtype": dtype, "p": p}
                row["kernels"] = timers["engine"].ran
                row["engine_steps_per_s"] = 1 / t_eng
                if act != "linear":
                    ran = (timers["native"].ran, timers["torch"].ran)
                    assert ran[0].endswith("native") and ran[1].endswith("torch"), ran
                    row["native_steps_per_s"] = 1 / t["native"]
                    row["torch_ops_steps_per_s"] = 1 / t["torch"]
                    row["native_vs_torch"] = t["torch"] / t["native"]
                    row["_t"] = (t_eng, t["native"])  # for the roofline, after the rows
                row["authors_steps_per_s_for_K_runs"] = 1 / (t["authors"] * K)
                row["speedup"] = t["authors"] * K / t_eng
                out["rows"].append(row)
                if dtype == "float32":
                    step32.setdefault(act, {})[p] = t_eng
                print(_fmt({k: v for k, v in row.items() if k != "_t"}), flush=True)
    lim_after = roofline.limits(args.dtypes)
    lim = roofline.best_of(lim_before, lim_after)
    print(f"# machine limits (after the rows): {roofline.describe(lim_after)}", flush=True)
    out["limits"] = {"before": lim_before, "after": lim_after, "used": lim}
    roof = [r for r in out["rows"] if "_t" in r]
    if roof:
        print("# roofline (the higher of each limit):", flush=True)
    for row in roof:
        t_eng, t_nat = row.pop("_t")
        flops, moved = step_work(row["p"], row["dtype"])
        b = roofline.bound_seconds(flops, moved, lim, row["dtype"])
        row.update(
            step_flops=flops,
            step_bytes=moved,
            bound_ms=b["bound_s"] * 1e3,
            binding=b["binding"],
            fraction=b["bound_s"] / t_eng,
            native_fraction=b["bound_s"] / t_nat,
            engine_ms=t_eng * 1e3,
        )
        print(
            _fmt(
                {
                    k: row[k]
                    for k in (
                        "activation",
                        "dtype",
                        "p",
                        "step_flops",
                        "step_bytes",
                        "engine_ms",
                        "bound_ms",
                        "binding",
                        "fraction",
                        "native_fraction",
                    )
                }
            ),
            flush=True,
        )
    if step32:
        per_act = {act: project(s) for act, s in step32.items()}
        hours = sum(sum(v.values()) for v in per_act.values()) / 3600
        out["e1_full_projection"] = {
            "hours": hours,
            "hours_per_activation": {a: sum(v.values()) / 3600 for a, v in per_act.items()},
            "rule": "at least rint(5000 sqrt(p) // 14) steps a run, float32, ensembles of 50",
            "measured_widths": widths,
            "note": "lower bound: runs that have not plateaued at the minimum go on",
        }
        print(
            f"E1 full grid projected ({', '.join(step32)}): {hours:.2f} h  "
            + "  ".join(
                f"{a}={h:.2f} h"
                for a, h in out["e1_full_projection"]["hours_per_activation"].items()
            ),
            flush=True,
        )
    lines = summary(out["rows"])
    if lines:
        print(
            f"# against issue 24's targets, float32, on {hardware.line(out)}:",
            flush=True,
        )
        print("\n".join(lines), flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
