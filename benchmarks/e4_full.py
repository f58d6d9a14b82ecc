"""E4 at the authors' full length: one repetition of their three-layer MNIST network.

784 -> 1000 ReLU -> 1000 ReLU -> 10, no biases, every layer an FA layer with its own
fixed N(0, 1) feedback, W and B drawn N(0, 1), the output divided by 1000, log-softmax +
NLL, SGD lr 1e-2, batch 600 shuffled each epoch, 15,000 steps (150 epochs), lambda in
{0, 0.1, 0.3} on layers 2 and 3, three copies of one initial network
(``deep.lambdas.E4``, the study the reproduction runs). Recorded per step for layers 2
and 3: the error-signal alignment (one cosine over the batch) and the weight alignment;
test accuracy every 100 steps.

    python benchmarks/e4_full.py --out DIR [--steps 15000] [--chunk 500] [--seed 0]

Resumable: every ``--chunk`` steps the three networks and the series so far are written
to DIR (``state.pt``, loaded with ``weights_only=True``; ``series.npz``), each by a
temporary file and a rename; rerunning the same command continues from the last chunk
and gives the numbers of an uninterrupted run (the minibatch order of epoch k is a
function of the seed and k alone; SGD has no other state). At the end it prints, and
writes to ``DIR/summary.json``, the authors' summary statistics beside theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from feedback_alignment.deep.data import load_dataset
from feedback_alignment.deep.lambdas import E4, paper_network, replicate, train_lambdas
from feedback_alignment.reproduce.published import E4_AUTHORS as AUTHORS  # their single run


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if "Model name" in ln)
        avx512 = "avx512f" in out
        return f"{model}, {os.cpu_count()} cores, avx512f={'yes' if avx512 else 'no'}"
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--steps", type=int, default=15000)
    ap.add_argument("--chunk", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    if not 1 <= a.steps <= 1_000_000 or not 1 <= a.chunk <= a.steps:
        print(f"e4_full: --steps {a.steps} / --chunk {a.chunk}: need 1 <= chunk <= steps <= 1e6")
        return 2
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("mnist")

    def flat(x):
        return ds.prepare(x).reshape(x.shape[0], -1)

    data = (flat(ds.x_train), ds.y_train, flat(ds.x_test), ds.y_test)
    nets = replicate(paper_network("e4", seed=a.seed), len(E4.lams))
    state_p, series_p = a.out / "state.pt", a.out / "series.npz"
    done, parts, seconds = 0, [], 0.0
    if state_p.is_file() and not state_p.is_symlink():
        st = torch.load(state_p, weights_only=True)
        if (st["seed"], st["steps"]) != (a.seed, a.steps):
            held = f"seed {st['seed']}, steps {st['steps']}"
            print(f"e4_full: {a.out} holds {held}; give another --out")
            return 2
        for net, sd in zip(nets, st["nets"], strict=True):
            net.load_state_dict(sd)
        done, seconds = int(st["done"]), float(st["seconds"])
        with np.load(series_p) as z:
            parts = [{k: z[k] for k in z.files}]
        print(f"e4_full: resuming at step {done} of {a.steps}", flush=True)
    order_seed = a.seed + 1
    while done < a.steps:
        stop = min(done + a.chunk, a.steps)
        r = train_lambdas(
            nets, data, E4, order_seed=order_seed, start=done, stop=stop,
            record_end=stop == a.steps,
        )  # fmt: skip
        seconds += r["seconds"]
        flat_r = {
            "step": r["step"], "loss": r["loss"], "eval_step": r["eval_step"],
            "test_accuracy": r["test_accuracy"],
            **{f"{n}_alignment": v for n, v in r["alignment"].items()},
            **{f"{n}_weight_alignment": v for n, v in r["weight_alignment"].items()},
        }  # fmt: skip
        parts.append(flat_r)
        merged = {k: np.concatenate([p[k] for p in parts]) for k in flat_r}
        parts = [merged]
        _atomic(series_p, lambda p, m=merged: np.savez(open(p, "wb"), **m))
        done = stop
        st = {"seed": a.seed, "steps": a.steps, "done": done, "seconds": seconds,
              "nets": [net.state_dict() for net in nets]}  # fmt: skip
        _atomic(state_p, lambda p, s=st: torch.save(s, p))
        acc = merged["test_accuracy"][-1] * 100
        print(
            f"step {done}/{a.steps}  {seconds / 60:.1f} min  test acc "
            + " / ".join(f"{v:.2f}" for v in acc)
            + "  fc3 align "
            + " / ".join(f"{v:.3f}" for v in merged["fc3_alignment"][-1]),
            flush=True,
        )
    s = parts[0]
    last = s["step"] >= a.steps - 1000
    summary = {
        "cpu": _cpu(),
        "torch": torch.__version__,
        "threads": a.threads,
        "seed": a.seed,
        "steps": a.steps,
        "compute_seconds": round(seconds, 1),
        "lams": list(E4.lams),
        "test_accuracy_percent": [round(100 * v, 2) for v in s["test_accuracy"][-1]],
        "fc3_alignment_last1000": [round(float(v), 3) for v in s["fc3_alignment"][last].mean(0)],
        "fc2_alignment_last1000": [round(float(v), 3) for v in s["fc2_alignment"][last].mean(0)],
        "fc3_weight_alignment_final": [round(float(v), 3) for v in s["fc3_weight_alignment"][-1]],
        "fc2_weight_alignment_final": [round(float(v), 3) for v in s["fc2_weight_alignment"][-1]],
        "authors": AUTHORS,
    }
    _atomic(a.out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=1) + "\n"))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
