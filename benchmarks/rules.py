#!/usr/bin/env python
"""Benchmark of the rule family: training-step time per rule against backprop and BioTorch.

Models: the paper's E3 MLP (784-1000-10, batch 600) and the small CNN of
``feedback_alignment.deep.models.small_cnn`` (28x28 input, batch 128). A step is
zero_grad + forward + cross-entropy + backward + SGD step.

* ``ratio_vs_bp``: each rule's step time / plain-autograd backprop's step time on the same
  (unconverted) model, timed interleaved in this process. Weight mirror's mirror phase is
  not in its step; it is timed on its own (``wm_mirror_vs_bp``: one mirror step / one bp step).
* ``ratio_vs_biotorch``: our step time / BioTorch 0.0.16's for the rules both have (bp, fa,
  usf, frsf, brsf, dfa), timed interleaved in one worker process that runs in a separate
  virtual environment holding BioTorch (created here on first use with
  ``pip install --no-deps biotorch==0.0.16``; it reuses this environment's torch through a
  .pth file so both sides run the same torch build). BioTorch is never a project dependency.

Times are CPU time of the benchmarking process (``time.process_time``, one torch thread by
default), so time spent waiting while other processes use the shared cores does not
count. In every round the two sides of a comparison run back to back (random order);
the headline ratios are the medians over rounds of these per-round ratios, and the
ratios of the best (minimum) times are reported too (``best_ratio_vs_bp``,
``best_ratio_vs_biotorch``). The last line printed is one JSON
object with ``ratio_vs_bp`` and ``ratio_vs_biotorch`` (rule -> model -> ratio).

    python benchmarks/rules.py            # full (several minutes on 2 cores)
    python benchmarks/rules.py --quick    # under two minutes
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import random
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from feedback_alignment.deep import convert, mirror
from feedback_alignment.deep.models import e3_network, small_cnn
from feedback_alignment.deep.rules import RULES as RULE_CLASSES

RULES = ["bp", "fa", "usf", "frsf", "brsf", "kp", "wm", "dfa"]
BIOTORCH_MODES = {
    "bp": "backpropagation",
    "fa": "fa",
    "usf": "usf",
    "frsf": "frsf",
    "brsf": "brsf",
    "dfa": "dfa",
}
BIOTORCH_VERSION = "0.0.16"


def models():
    """name -> (plain model, x, y)."""
    g = torch.Generator().manual_seed(0)
    out = {}
    for name, net, batch in (("e3_mlp", e3_network(), 600), ("cnn", small_cnn(), 128)):
        x = torch.randn(batch, 1, 28, 28, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        out[name] = (net, x, y)
    return out


def step_fn(model, x, y, lr=1e-4, biotorch_dfa=False):
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def step():
        opt.zero_grad(set_to_none=True)
        if biotorch_dfa:
            out = model(x, targets=y, loss_function=F.cross_entropy)
        else:
            out = model(x)
        F.cross_entropy(out, y).backward()
        opt.step()

    return step


def ours(net, rule, x):
    kw = {"input_shape": tuple(x.shape[1:])} if RULE_CLASSES[rule].direct else {}
    scale = 1.0 if net[-1].__class__.__name__ == "Scale" else None
    return convert(net, rule, scale=scale, **kw)


def _time(fn, steps):
    # CPU time of this process: time spent descheduled while other processes run on the
    # shared cores does not count (with one torch thread all the work is on this process)
    t0 = time.process_time()
    for _ in range(steps):
        fn()
    return (time.process_time() - t0) / steps


def paired(pairs: dict, rounds: int, steps: int, warmup: int = 1):
    """For each key, (a, b): time a and b back to back in every round (random order
    within the pair, shuffled keys), so load from other processes hits both alike.
    Returns per key: (median of the per-round ratios a/b, best a / best b, best seconds of
    a, of b); "best" is the minimum over rounds."""
    for a, b in pairs.values():
        for _ in range(warmup):
            a()
            b()
    ratios = {k: [] for k in pairs}
    ta = {k: [] for k in pairs}
    tb = {k: [] for k in pairs}
    rng = random.Random(0)
    for _ in range(rounds):
        keys = list(pairs)
        rng.shuffle(keys)
        for k in keys:
            a, b = pairs[k]
            if rng.random() < 0.5:
                x, y = _time(a, steps), _time(b, steps)
            else:
                y, x = _time(b, steps), _time(a, steps)
            ratios[k].append(x / y)
            ta[k].append(x)
            tb[k].append(y)
    return {
        k: (statistics.median(ratios[k]), min(ta[k]) / min(tb[k]), min(ta[k]), min(tb[k]))
        for k in pairs
    }


def run_vs_bp(rounds, steps):
    ms, ratio, mirror_ratio = {}, {r: {} for r in RULES}, {}
    best = {r: {} for r in RULES}
    for mname, (net, x, y) in models().items():
        plain = step_fn(copy.deepcopy(net), x, y)
        pairs = {}
        wm_model = None
        for rule in RULES:
            m = ours(net, rule, x)
            pairs[rule] = (step_fn(m, x, y), plain)
            if RULE_CLASSES[rule].mirror_phase:
                wm_model = m
        pairs["wm_mirror"] = (lambda m=wm_model: mirror(m), plain)
        res = paired(pairs, rounds, steps)
        ms[mname] = {k: v[2] * 1e3 for k, v in res.items()}
        ms[mname]["plain"] = min(v[3] for v in res.values()) * 1e3
        for rule in RULES:
            ratio[rule][mname] = res[rule][0]
            best[rule][mname] = res[rule][1]
        mirror_ratio[mname] = res["wm_mirror"][0]
    return ms, ratio, best, mirror_ratio


def worker(rounds, steps):
    """Runs inside the BioTorch environment: ours vs BioTorch, paired per round."""
    import warnings

    from biotorch.module.biomodule import BioModule

    out = {}
    for mname, (net, x, y) in models().items():
        pairs = {}
        for rule, mode in BIOTORCH_MODES.items():
            with contextlib.redirect_stdout(io.StringIO()):
                bm = BioModule(
                    copy.deepcopy(net), mode=mode, output_dim=10 if rule == "dfa" else None
                )
            pairs[rule] = (
                step_fn(ours(net, rule, x), x, y),
                step_fn(bm, x, y, biotorch_dfa=rule == "dfa"),
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = paired(pairs, rounds, steps)
        out[mname] = {
            rule: {"ratio": r, "best_ratio": mr, "ours_ms": a * 1e3, "biotorch_ms": b * 1e3}
            for rule, (r, mr, a, b) in res.items()
        }
    return out


def biotorch_python(venv: Path) -> Path:
    """The interpreter of a venv holding BioTorch (created on first use)."""
    py = venv / "bin" / "python"
    marker = venv / f".biotorch-{BIOTORCH_VERSION}"
    if marker.exists():
        return py
    print(f"creating {venv} with biotorch=={BIOTORCH_VERSION} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    here = sysconfig.get_paths()["purelib"]
    # share this environment's torch (and the editable project) without copying it
    Path(purelib, "_fa_parent_env.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", f"biotorch=={BIOTORCH_VERSION}"],
        check=True,
    )
    marker.write_text("ok\n")
    return py


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds; under two minutes")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="steps per variant per round")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument(
        "--biotorch-venv",
        default=os.path.expanduser(f"~/.cache/feedback-alignment/biotorch-{BIOTORCH_VERSION}"),
    )
    ap.add_argument("--no-biotorch", action="store_true", help="skip the BioTorch comparison")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 21)
    steps = args.steps or (2 if args.quick else 3)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(rounds, steps)))
        return 0
    t0 = time.perf_counter()
    ms, ratio_bp, best_bp, mirror_ratio = run_vs_bp(rounds, steps)
    ratio_bt, best_bt, bt_ms = {}, {}, None
    if not args.no_biotorch:
        py = biotorch_python(Path(args.biotorch_venv))
        cmd = [
            str(py),
            __file__,
            "--worker",
            "--rounds",
            str(rounds),
            "--steps",
            str(steps),
            "--threads",
            str(args.threads),
        ]
        proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
        bt_ms = json.loads(proc.stdout.strip().splitlines()[-1])
        for rule in BIOTORCH_MODES:
            ratio_bt[rule] = {m: bt_ms[m][rule]["ratio"] for m in bt_ms}
            best_bt[rule] = {m: bt_ms[m][rule]["best_ratio"] for m in bt_ms}
    print(f"threads={args.threads} rounds={rounds} steps={steps} torch={torch.__version__}")
    print(f"{'rule':6} " + " ".join(f"{m + ' /bp':>12} {m + ' /BioTorch':>16}" for m in ms))
    for rule in RULES:
        cells = []
        for m in ms:
            bt = ratio_bt.get(rule, {}).get(m)
            bt_text = "-" if bt is None else f"{bt:.3f}"
            cells.append(f"{ratio_bp[rule][m]:12.3f} {bt_text:>16}")
        print(f"{rule:6} " + " ".join(cells))
    for m in ms:
        print(
            f"{m}: plain bp step {ms[m]['plain']:.2f} ms; wm mirror phase "
            f"{ms[m]['wm_mirror']:.2f} ms ({mirror_ratio[m]:.3f} of a bp step)"
        )
    print(f"elapsed {time.perf_counter() - t0:.1f} s")
    result = {
        "ratio_vs_bp": ratio_bp,
        "ratio_vs_biotorch": ratio_bt,
        "wm_mirror_vs_bp": mirror_ratio,
        "best_ratio_vs_bp": best_bp,
        "best_ratio_vs_biotorch": best_bt,
        "step_ms": ms,
        "biotorch_step_ms": bt_ms,
        "settings": {
            "threads": args.threads,
            "rounds": rounds,
            "steps": steps,
            "batch": {"e3_mlp": 600, "cnn": 128},
            "torch": torch.__version__,
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
