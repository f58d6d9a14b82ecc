"""``fa reproduce {E1,E2,E3,all} --profile P --out DIR``: run, plot, report.

The output directory must be new, empty, or hold a previous reproduction (recognised by
its manifest ``.fa-reproduce.json`` recording the SHA-256 of every file it wrote, and
nothing else). A rerun deletes only files whose bytes match their recorded hash; a manifest
naming anything outside its directory is refused and nothing is touched (see
``feedback_alignment.outputs``). All input is checked before any work starts or any file is
touched; every file is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import csv
import io
import json
import platform
import shlex
import sys
import time
from pathlib import Path

from ..errors import check, choice
from ..executors import LocalPool, cores, from_text
from ..outputs import atomic_write_text, previous_output, remove_proven, sha256, write_manifest
from ..progress import Progress, wanted
from ..progress import add_flags as add_progress_flags
from . import conservation, e1, e2, e3, published
from .figures import e1_figure, e2_figure, e3_figure
from .profiles import CPU_TIMES, EXPERIMENTS, PROFILES, get_profile
from .report import build_blocks, to_html, to_markdown
from .verdicts import all_verdicts
from .work import KIND, plan_work

MANIFEST = ".fa-reproduce.json"
CHOICES = (*EXPERIMENTS, "all")


def register(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce the paper's experiments E1-E3: figures, CSV and a claim report",
        description="Run the paper's experiments at a profile, draw the figures with theory "
        "overlays, write every plotted number as CSV and report.md/report.html with a "
        "computed verdict for each claim.",
    )
    p.add_argument("experiment", help="E1, E2, E3 or all")
    p.add_argument(
        "--profile",
        default="quick",
        help=f"smoke (tests, {CPU_TIMES['smoke']}), quick ({CPU_TIMES['quick']}), standard "
        f"({CPU_TIMES['standard']}), full (the paper's settings; {CPU_TIMES['full']}); times "
        "for all three experiments on 2 CPU cores. Default quick.",
    )
    p.add_argument("--out", required=True, help="output directory (new, empty or a previous one)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument(
        "--executor",
        default="local",
        help="local (default: one process per core, one thread each), local:N processes, "
        "inline (this process, all cores), inline:T (T threads), or sweep[:inline|:local:N|"
        ":dask:ADDRESS]: E1 through the fa sweep machinery (store in DIR/E1/sweep.sqlite)",
    )
    add_progress_flags(p)
    p.set_defaults(func=_run)


def _run(args) -> int:
    with Progress({}, label="fa reproduce", enabled=wanted(args.progress)) as meter:
        res = reproduce(
            args.experiment,
            profile=args.profile,
            out=args.out,
            seed=args.seed,
            executor=args.executor,
            progress=meter,
            command="fa reproduce " + " ".join(shlex.quote(a) for a in sys.argv[2:])
            if len(sys.argv) > 2
            else None,
        )
    print(f"report: {res['report']}")
    if "e1_published" in res:
        print(f"  {res['e1_published']['headline']}")
    for v in res["verdicts"]:
        print(f"  claim {v['claim']}: {v['verdict']}")
    return 0


# ------------------------------------------------------------------ output directory
TOOL = "fa reproduce"


def check_out_dir(out: Path) -> list[str]:
    """Refuse a DIR holding anything but a previous reproduction's files, each proven by the
    SHA-256 its manifest recorded; return those files. Reads only (see ``outputs``)."""
    return sorted(previous_output(out, MANIFEST, TOOL))


class _Manifest:
    """The manifest of this run, rewritten (atomically) after every file it writes, so an
    interrupted run's directory is still recognised and its files proven by hash."""

    def __init__(self, out: Path, planned_files: list[str]):
        self.out, self.planned, self.hashes = out, planned_files, {}

    def record(self, *rels: str, complete: bool = False) -> None:
        for rel in rels:
            if (self.out / rel).is_file():  # an SQLite -wal/-shm may be gone by now
                self.hashes[rel] = sha256(self.out / rel)
        write_manifest(
            self.out, MANIFEST, TOOL, self.hashes, complete=complete, planned=self.planned
        )


def write_csv(path: Path, columns, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([repr(v) if isinstance(v, float) else v for v in (r[c] for c in columns)])
    atomic_write_text(path, buf.getvalue())


def _versions() -> dict:
    import matplotlib
    import numpy
    import scipy
    import torch

    from .. import __version__

    return {
        "feedback-alignment": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "cpu threads": str(torch.get_num_threads()),
    }


def planned(exps) -> list[str]:
    """Every file a reproduction of ``exps`` writes (relative to DIR)."""
    names = {
        "E1": ["E1/alignment.csv", "E1/alignment.png", "E1/alignment.pdf"]
        + [f"E1/sweep.sqlite{x}" for x in ("", "-wal", "-shm", "-journal")],
        "E2": [
            "E2/loss.csv",
            "E2/prediction.csv",
            "E2/kernels.csv",
            "E2/loss.png",
            "E2/loss.pdf",
            "E2/conservation.csv",
            "E2/conservation.png",
            "E2/conservation.pdf",
        ],
        "E3": [
            "E3/metrics.csv",
            "E3/weight_alignment.csv",
            "E3/metrics.png",
            "E3/metrics.pdf",
        ],
    }
    return [f for e in exps for f in names[e]] + ["report.md", "report.html", "summary.json"]


def _on_task(exp: str, costs: list[float], meter, say):
    """The executors' callback (task ``i`` finished, ``done`` of ``total``) for one
    experiment."""
    if meter is not None:
        meter.set_status(f"{exp} task 0/{len(costs)}")

    def on(i: int, done: int, total: int) -> None:
        if meter is None:
            say(f"{exp}: task {done}/{total}")
        else:
            meter.done(costs[i], KIND[exp], status=f"{exp} task {done}/{total}")

    return on


# ------------------------------------------------------------------ executors
class Sweep:
    """E1 through ``feedback_alignment.experiments.run_study`` on ``executor`` (its store,
    packing and executors); E2 and E3 then run in the local pool."""

    name = "sweep"

    def __init__(self, executor):
        self.executor = executor

    def map(self, tasks, on_done=None) -> list:
        return LocalPool(cores()).map(tasks, on_done)


def get_executor(text: str):
    """``--executor``: ``local[:N]`` (N processes, default one per core), ``inline[:T]`` (T
    threads) or ``sweep[:inline|:local[:N]|:dask[:ADDRESS]]``."""
    text = (text or "local").strip()
    if text == "sweep" or text.startswith("sweep:"):
        return Sweep(from_text(text.partition(":")[2] or "local", prefix="sweep:"))
    return from_text(text, ("local", "inline"), more="sweep[:inline|:local[:N]|:dask[:ADDRESS]]")


# ------------------------------------------------------------------ the job
def reproduce(
    experiment: str = "all",
    *,
    profile: str = "quick",
    out,
    seed: int = 0,
    executor: str = "local",
    progress=None,
    command: str | None = None,
) -> dict:
    """Run ``experiment`` (E1, E2, E3 or all) at ``profile`` into ``out``; return a summary."""
    choice("experiment", experiment, CHOICES)
    choice("profile", profile, PROFILES)
    check(
        isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0,
        f"--seed must be a non-negative integer, got {seed!r}",
    )
    prof = get_profile(profile)
    ex = get_executor(executor)
    from ..twolayer.native import check_environment

    check_environment()  # a bad FA_NATIVE: one line before the directory is touched
    out = Path(out)
    previous = previous_output(out, MANIFEST, TOOL)
    exps = list(EXPERIMENTS) if experiment == "all" else [experiment]
    # progress: a callable for status lines, or a Progress that also shows the time left
    meter = progress if isinstance(progress, Progress) else None
    say = meter.note if meter else (progress or (lambda m: None))
    costs, totals = plan_work(exps, lambda e: {"E1": e1, "E2": e2, "E3": e3}[e].tasks(prof, seed))
    if meter:
        meter.set_work(totals)
    if profile == "full":
        say(
            "note: 'full' is the paper's exact grid (thousands of runs up to ~140k steps); "
            "on a small CPU it takes days: it is meant for a GPU or a cluster"
        )

    out.mkdir(parents=True, exist_ok=True)
    # remove the previous reproduction's files: only those whose bytes match the hash its
    # manifest recorded (previous_output proved every file present, touching nothing)
    remove_proven(out, previous)
    # the manifest goes first, so an interrupted run's directory is still recognised
    manifest = _Manifest(out, planned(exps))
    manifest.record()
    t_all = time.perf_counter()
    results, times, files, figures, diverged = {}, {}, [], {}, []
    mods = {"E1": e1, "E2": e2, "E3": e3}
    for exp in exps:
        mod = mods[exp]
        say(f"{exp}: running ({prof.name} profile, executor {ex.name})")
        t0 = time.perf_counter()
        n_before = len(files)
        (out / exp).mkdir(exist_ok=True)
        if exp == "E1" and isinstance(ex, Sweep):
            res = e1.run_sweep(prof, seed, out / "E1" / "sweep.sqlite", ex.executor)
            if meter:
                meter.done(sum(costs["E1"]), KIND["E1"], status="E1 (sweep) done")
        else:
            tasks = mod.tasks(prof, seed)
            res = mod.collect(ex.map(tasks, _on_task(exp, costs[exp], meter, say)))
        results[exp] = res
        diverged += res.get("diverged", [])
        d = out / exp
        d.mkdir(exist_ok=True)
        if exp == "E1" and isinstance(ex, Sweep):
            files += [f"E1/{f.name}" for f in sorted(d.glob("sweep.sqlite*"))]
        if exp == "E1":
            write_csv(d / "alignment.csv", e1.COLUMNS, res["rows"])
            files.append("E1/alignment.csv")
            figs = e1_figure(res["rows"], d / "alignment", published.load()["cells"])
            figures["E1"] = (
                "E1/alignment.png",
                "alignment cos(beta, b) at the end of training against width (log scale), "
                "mean +- 1 s.d. over repetitions, one line per lambda; hollow squares (shifted "
                "right a little): the paper's published values, mean +- 1 s.d. over 50.",
            )
        elif exp == "E2":
            write_csv(d / "loss.csv", e2.COLUMNS, res["rows"])
            write_csv(d / "prediction.csv", e2.PRED_COLUMNS, res["prediction"])
            write_csv(d / "kernels.csv", e2.KERNEL_COLUMNS, res["kernels"])
            files += ["E2/loss.csv", "E2/prediction.csv", "E2/kernels.csv"]
            figs = e2_figure(res["rows"], res["prediction"], res["kernels"], d / "loss", prof.e2.p)
            figures["E2"] = (
                "E2/loss.png",
                f"training MSE against step (log scale) at p = {prof.e2.p}, mean with a +-1 s.d. "
                "band; dashed: the loss curve predicted by the linearised dynamics with the "
                "kernels at initialisation H(0)+G(0); dotted: the predicted settle level for "
                "lambda > 0; lambda_min(H(0)+G(0)) and its rate in each panel title. The y-axis "
                "stops 14 decades below its top (E2/loss.csv holds every value).",
            )
            more, figures["E2 conservation"] = conservation.run(prof, seed, d, say)  # issue 15
            files += more
        else:
            write_csv(d / "metrics.csv", e3.COLUMNS, res["rows"])
            write_csv(d / "weight_alignment.csv", e3.WEIGHT_COLUMNS, res["weight_rows"])
            files += ["E3/metrics.csv", "E3/weight_alignment.csv"]
            figs = e3_figure(res["rows"], res["weight_rows"], d / "metrics")
            figures["E3"] = (
                "E3/metrics.png",
                f"{res['dataset']}: hidden-error alignment on the training batch (solid, "
                "+-1 s.d. band over repetitions) and weight cosine cos(B, beta) (dashed) against "
                "step; test accuracy against step.",
            )
        files += [f.relative_to(out).as_posix() for f in figs]
        manifest.record(*files[n_before:])
        wall = time.perf_counter() - t0
        times[exp] = {
            "wall": wall,
            "compute": res["compute_seconds"],
            "member_steps": res.get("member_steps", ""),
        }
        say(f"{exp}: done in {wall:.1f} s")

    verdicts = all_verdicts(results)
    files += ["report.md", "report.html", "summary.json"]
    meta = {
        "seed": seed,
        "experiments": exps,
        "executor": executor,
        "wall_seconds": time.perf_counter() - t_all,
        "times": times,
        "versions": _versions(),
        "command": command
        or f"fa reproduce {experiment} --profile {profile} --out {out} --seed {seed}",
        "files": files,
        "diverged": diverged,
    }
    blocks = build_blocks(
        profile=prof, meta=meta, verdicts=verdicts, figures=figures, results=results
    )
    atomic_write_text(out / "report.md", to_markdown(blocks))
    atomic_write_text(out / "report.html", to_html(blocks, out))
    summary = {
        "profile": prof.as_dict(),
        "reductions": prof.reductions(),
        **{k: v for k, v in meta.items() if k != "versions"},
        "versions": meta["versions"],
        "verdicts": [v.as_dict() for v in verdicts],
        "report": str(out / "report.md"),
    }
    if "E1" in results:
        cells = published.compare(results["E1"]["rows"])
        summary["e1_published"] = {
            "headline": published.headline(cells),
            "agree": sum(c.agree for c in cells),
            "cells": len(cells),
            "capped": results["E1"].get("capped", 0),
            "rule": published.AGREE_RULE,
            "table": [c.as_dict() for c in cells],
        }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=str))
    assert set(files) <= set(planned(exps)), sorted(set(files) - set(planned(exps)))
    manifest.record("report.md", "report.html", "summary.json", complete=True)
    return summary
