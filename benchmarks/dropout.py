"""Benchmark of the two-layer engine on E5's workload: dropout in place of weight decay.

E5 packs, for each activation and width p, the four dropout probabilities of the
activation x the repetitions into one ensemble (quick: 2 repetitions, K = 8), each
repetition on its own data (n = 50, d = 150), FA, the authors' dropout step sizes, lambda
= 0, MSE and alignment recorded, no first-layer weights kept. For each activation and
width this times, interleaved in one run on one machine (float32):

* ``native``: the row-space path on the native kernels, which draw the masks inside their
  one pass over the state (``dropout.py``);
* ``torch``: the same fit on the torch ops, the masks drawn by numpy per member and step;
* ``plain``: the native kernels without dropout (q = 0 everywhere, so no masks):
  ``mask_cost`` = native / plain is what drawing and applying the masks costs.

``native_vs_torch`` = torch time / native time. Each time is the minimum over interleaved
rounds (``twolayer.interleaved``); the ratios, not the absolute times, are the figures.
The CPU model, ``lscpu | grep -c avx512f`` and its vector flags are printed beside them.
The last line of output is one JSON object. ``--quick``: p in {200, 800} (E5's quick
widths); otherwise {200, 800, 3200, 12800} (its full ones).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import torch

from feedback_alignment import hardware
from feedback_alignment.activations import paper_lr
from feedback_alignment.reproduce.profiles import DROPOUTS
from feedback_alignment.twolayer.data import random_teacher, stack
from feedback_alignment.twolayer.engine import TwoLayerEnsemble
from twolayer import FIT_MIN_STEPS, interleaved

N, D, REPS = 50, 150, 2


def fit_timer(act: str, p: int, q: list[float], kernels: str, X, y):
    """``timer(steps)``: a fresh copy of one ensemble (member k: probability q[k]) fitted
    for ``steps`` steps; the engine's loop time per step. ``timer.ran``: the kernels."""
    template = TwoLayerEnsemble(D, p, seeds=range(len(q)), activation=act, dtype="float32")

    def timer(steps: int) -> float:
        ens = copy.deepcopy(template)
        h = ens.fit(
            X,
            y,
            rule="fa",
            lr=paper_lr(act, dropout=True),
            dropout=q,
            steps=steps,
            metrics=("mse", "alignment"),
            path="rowspace",
            kernels=kernels,
            keep_weights=False,
        )
        timer.ran = h.kernels
        return h.seconds / steps

    timer.min_steps = FIT_MIN_STEPS
    return timer


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="p in {200, 800}, fewer rounds")
    ap.add_argument("--widths", type=int, nargs="*", default=None)
    ap.add_argument("--activations", nargs="*", default=list(DROPOUTS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (E5's packs: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = args.widths or ([200, 800] if args.quick else [200, 800, 3200, 12800])
    rounds, block_s = (5, 0.15) if args.quick else (7, 0.5)
    out: dict = {**hardware.describe(), "n": N, "d": D, "rows": []}
    print(f"# {hardware.line(out)}, n={N} d={D}, float32, one X per repetition", flush=True)
    for act in args.activations:
        q = [v for _ in range(REPS) for v in DROPOUTS[act]]
        for p in widths:
            X, y = stack(random_teacher, range(len(q)), n=N, d=D, p=p, activation=act)
            X, y = X.float(), y.float()
            timers = {
                "native": fit_timer(act, p, q, "native", X, y),
                "torch": fit_timer(act, p, q, "torch", X, y),
                "plain": fit_timer(act, p, [0.0] * len(q), "native", X, y),
            }
            t = interleaved(timers, rounds, block_s)
            ran = {name: timer.ran for name, timer in timers.items()}
            assert ran == {"native": "native", "torch": "torch", "plain": "native"}, ran
            row = {
                "activation": act,
                "p": p,
                "K": len(q),
                "native_ms_per_member_step": t["native"] * 1e3 / len(q),
                "torch_ms_per_member_step": t["torch"] * 1e3 / len(q),
                "native_vs_torch": t["torch"] / t["native"],
                "mask_cost": t["native"] / t["plain"],
            }
            out["rows"].append(row)
            print(
                "  ".join(
                    f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                ),
                flush=True,
            )
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
