"""Benchmark of the sweep machinery (issue 4): its overhead and the gain from packing.

A 200-run grid of small two-layer runs (n = 50, d = 150, ReLU, float64, 400 steps,
p in {50, 100, 200, 400} x lambda in {0, 0.1, 0.2, 0.3, 0.5} x 10 repetitions) is run into a
fresh store by :func:`feedback_alignment.experiments.run_study`:

* **machinery fraction**: the time spent outside the packs' tasks (planning, the store's
  writes, the executor: process start, pickling, waiting) as a fraction of the engine's
  own time (``TwoLayerEnsemble.fit``, summed over packs). For a pool of W workers the
  budget is W x wall time, so idle workers at the end count too;
* **overhead fraction**: the same with everything that is not ``fit`` counted, i.e. also
  drawing each run's data and building the ensembles inside the tasks. Both measured for
  ``inline`` and ``local`` (the default);
* **packing speed-up**: wall time with one run per task (``pack = 1``) over wall time with
  the planner's ensembles (``pack = "auto"``), same grid, same executor, same machine.

Every measurement runs in a fresh Python process, as ``fa sweep`` does, so a pool's start
(the forkserver importing torch, then forking the workers) is counted each time; it is
also reported on its own (``local_start_s``) with the fraction after it. Each
configuration runs ``--rounds`` times interleaved; the figures are medians (the machine
is shared). The last line of output is one JSON object. ``--quick``: 40 runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from feedback_alignment.executors import cores
from feedback_alignment.experiments import Store, run_study


def grid(reps: int, steps: int) -> dict:
    return {
        "study": {"name": "bench", "repetitions": reps, "seed": 0},
        "fixed": {
            "n": 50,
            "d": 150,
            "activation": "relu",
            "steps": steps,
            "record_every": 100,
            "metrics": ["mse", "alignment"],
        },
        "grid": {"p": [50, 100, 200, 400], "lam": [0.0, 0.1, 0.2, 0.3, 0.5]},
    }


def one(spec: dict, executor: str, pack, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.sqlite"
        t0_unix = time.time()
        t0 = time.perf_counter()
        rep = run_study(spec, path, executor=executor, workers=workers, pack=pack, progress=False)
        wall = time.perf_counter() - t0
        assert rep.ok and rep.done == rep.total, rep.summary()
        with Store(path, create=False) as st:
            rows = st.runs()
        packs = {r["pack_id"]: r for r in rows}
        engine = sum(r["pack_seconds"] for r in packs.values())
        task = sum(r["task_seconds"] for r in packs.values())
        # from the call to the first task starting: planning, store, and for a pool its
        # start (the forkserver importing torch once, forking the workers)
        start = min(r["started"] for r in packs.values()) - t0_unix
    w = 1 if executor == "inline" else min(workers, len(packs))
    return {
        "executor": executor,
        "pack": pack,
        "workers": w,
        "runs": rep.total,
        "packs": len(packs),
        "wall_s": wall,
        "engine_s": engine,
        "setup_s": task - engine,  # data, ensemble construction, result arrays (in tasks)
        "plan_s": rep.timings["plan_seconds"],
        "store_s": rep.timings["store_seconds"],
        # the machinery: everything outside the tasks (planning, store, executor)
        "machinery_fraction": (w * wall - task) / engine,
        "start_s": start,
        # the same without the one-off start: what the machinery costs per run
        "machinery_fraction_after_start": (w * (wall - start) - task) / engine,
        # everything that is not fit(): the machinery plus data and network set-up
        "overhead_fraction": (w * wall - engine) / engine,
    }


def fresh(reps: int, steps: int, executor: str, pack, workers: int) -> dict:
    """One measurement in a new Python process, as ``fa sweep`` runs (a cold pool)."""
    cmd = [sys.executable, __file__, "--one", executor, str(pack), "--reps", str(reps)]
    cmd += ["--steps", str(steps), "--workers", str(workers)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 runs, one round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=cores())
    ap.add_argument("--one", nargs=2, metavar=("EXECUTOR", "PACK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        ex, pack = args.one[0], args.one[1] if args.one[1] == "auto" else int(args.one[1])
        print(json.dumps(one(grid(args.reps, args.steps), ex, pack, args.workers)))
        return 0
    reps, rounds = (2, 1) if args.quick else (args.reps, args.rounds)
    configs = [("inline", "auto"), ("local", "auto"), ("inline", 1), ("local", 1)]
    results: dict = {c: [] for c in configs}
    for r in range(rounds):
        for ex, pack in configs:
            res = fresh(reps, args.steps, ex, pack, args.workers)
            results[(ex, pack)].append(res)
            print(
                f"round {r}: {ex:6} pack={pack!s:4} runs={res['runs']} packs={res['packs']:3} "
                f"wall={res['wall_s']:6.2f}s engine={res['engine_s']:6.2f}s "
                f"start={res['start_s']:5.2f}s setup={res['setup_s']:5.2f}s "
                f"store={res['store_s']:5.3f}s plan={res['plan_s']:5.3f}s "
                f"machinery={100 * res['machinery_fraction']:5.1f}% "
                f"(after start {100 * res['machinery_fraction_after_start']:4.1f}%) "
                f"all-but-fit={100 * res['overhead_fraction']:5.1f}%",
                flush=True,
            )

    def med(ex, pack, key):
        return statistics.median(x[key] for x in results[(ex, pack)])

    summary = {
        "benchmark": "sweep",
        "runs": results[configs[0]][0]["runs"],
        "steps": args.steps,
        "workers": args.workers,
        "rounds": rounds,
        "machinery_fraction_inline": med("inline", "auto", "machinery_fraction"),
        "machinery_fraction_local": med("local", "auto", "machinery_fraction"),
        "machinery_fraction_local_after_start": med(
            "local", "auto", "machinery_fraction_after_start"
        ),
        "local_start_s": med("local", "auto", "start_s"),
        "overhead_fraction_inline": med("inline", "auto", "overhead_fraction"),
        "overhead_fraction_local": med("local", "auto", "overhead_fraction"),
        "wall_s": {f"{ex}/pack={pk}": med(ex, pk, "wall_s") for ex, pk in configs},
        "engine_s": {f"{ex}/pack={pk}": med(ex, pk, "engine_s") for ex, pk in configs},
        "packing_speedup_local": med("local", 1, "wall_s") / med("local", "auto", "wall_s"),
        "packing_speedup_inline": med("inline", 1, "wall_s") / med("inline", "auto", "wall_s"),
        "machine": f"{platform.machine()} {cores()} cores, torch {torch.__version__}",
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
