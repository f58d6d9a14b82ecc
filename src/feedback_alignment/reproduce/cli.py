"""``fa reproduce {E1,E2,E3,E4,E5,all} --profile P --out DIR``: plan, run, store, report.

Every experiment of the profile is planned as packs of runs (:mod:`.pipeline`), run on the
chosen executor (inline, the local pool or Dask) into one SQLite store in DIR, and every
CSV, figure, verdict and the report are built from that store alone. The same command
again resumes: finished packs are kept and not run again. Another experiment of the same
profile and seed adds to DIR. A DIR of another profile, seed or package version, or
holding a file its manifest does not prove, is refused with one line before anything is
touched (:mod:`.outdir`); nothing is ever deleted. ``--report-only`` rebuilds the files
from the store without computing.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import platform
import shlex
import sys
import time
from pathlib import Path

from .. import hardware
from ..cli import keywords
from ..errors import ConfigError, choice, need
from ..executors import add_flags as add_executor_flags
from ..executors import from_text
from ..experiments.store import Store
from ..experiments.study import _sigint_deferred, provenance
from ..progress import Progress, wanted
from ..progress import add_flags as add_progress_flags
from . import baselines, checkpoints, conservation, e1, e2, e3, e4, e5, outdir, published
from .figures import e1_figure, e2_figure, e3_figure, e4_figure, e5_figure
from .outdir import MANIFEST
from .pipeline import (
    STORE,
    STUDY,
    complete,
    plan,
    records,
    results_from_store,
    run_pack,
    takes_checkpoint,
    with_extra,
)
from .profiles import CPU_TIMES, EXPERIMENTS, PROFILES, get_profile
from .report import build_blocks, to_html, to_markdown
from .verdicts import all_verdicts

__all__ = ["MANIFEST", "STORE", "planned", "reproduce"]
CHOICES = (*EXPERIMENTS, "all")


def register(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="reproduce the paper's experiments E1-E3, the authors' E4 and E5 (dropout instead "
        "of weight decay): figures, CSV and a claim report",
        description="Run the paper's experiments at a profile, draw the figures with theory "
        "overlays, write every plotted number as CSV and report.md/report.html with a "
        "computed verdict for each claim.",
        func=_run,
    )
    p.add_argument("experiment", help="E1, E2, E3, E4, E5 or all")
    p.add_argument(
        "--profile",
        default=None,
        help=f"smoke (tests, {CPU_TIMES['smoke']}), quick ({CPU_TIMES['quick']}), standard "
        f"({CPU_TIMES['standard']}), full (the paper's settings; {CPU_TIMES['full']}); times "
        "for all the experiments on 2 CPU cores. Default quick (with --report-only: "
        "the directory's).",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output directory: new, empty, or a reproduction of the same profile and seed "
        "(resumed, or added to)",
    )
    p.add_argument("--seed", type=int, default=None, help="base seed (default 0)")
    add_executor_flags(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (packs, peak memory per worker, projected time here and on N "
        "workers) and compute nothing; DIR is not touched",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="compute nothing: rebuild the CSVs, figures and report of DIR from its store",
    )
    add_progress_flags(p)


def _run(args) -> int:
    with Progress({}, label="fa reproduce", enabled=wanted(args.progress)) as meter:
        res = reproduce(
            args.experiment,
            **keywords(args, "profile", "out", "seed", "executor", "report_only", "dry_run"),
            progress=meter,
            command="fa reproduce " + " ".join(shlex.quote(a) for a in sys.argv[2:])
            if len(sys.argv) > 2
            else None,
        )
    if "plan" in res:
        print("\n".join(res["plan"]))
        return 0
    print(f"report: {res['report']}")
    if "e1_published" in res:
        print(f"  {res['e1_published']['headline']}")
    for v in res["verdicts"]:
        print(f"  claim {v['claim']}: {v['verdict']}")
    return 0


# ------------------------------------------------------------------ output files
def csv_bytes(columns, rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([repr(v) if isinstance(v, float) else v for v in (r[c] for c in columns)])
    return buf.getvalue().encode()


def _versions() -> dict:
    import matplotlib
    import numpy
    import scipy
    import torch

    from .. import __version__
    from ..twolayer.native import vector_bytes

    width, origin = vector_bytes()
    return {
        "feedback-alignment": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "cpu": hardware.line(),
        "native kernels": f"{width * 8}-bit vectors ({origin})" if width else f"none ({origin})",
    }


OUTPUTS = {
    "E1": ["E1/alignment.csv", "E1/alignment.png", "E1/alignment.pdf"],
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
        "E3/backprop.csv",
        "E3/metrics.png",
        "E3/metrics.pdf",
    ],
    "E4": ["E4/metrics.csv", "E4/backprop.csv", "E4/metrics.png", "E4/metrics.pdf"],
    "E5": ["E5/alignment.csv", "E5/alignment.png", "E5/alignment.pdf"],
}
REPORT = ["report.md", "report.html", "summary.json"]


def planned(exps) -> list[str]:
    """Every file a reproduction of ``exps`` writes (relative to DIR) besides its store."""
    return [f for e in exps for f in OUTPUTS[e]] + REPORT


def write_outputs(exp: str, res: dict, out: Path, prof, write) -> tuple[str, str]:
    """Write experiment ``exp``'s CSVs and figures from its rows through ``write(path,
    bytes)``; return its report figure (path, caption)."""
    d = out / exp
    if exp == "E1":
        write(d / "alignment.csv", csv_bytes(e1.COLUMNS, res["rows"]))
        e1_figure(res["rows"], d / "alignment", published.load()["cells"], write)
        return (
            "E1/alignment.png",
            "alignment cos(beta, b) at the end of training against width (log scale), "
            "mean +- 1 s.d. over repetitions, one line per lambda; hollow squares (shifted "
            "right a little): the paper's published values, mean +- 1 s.d. over 50.",
        )
    if exp == "E2":
        write(d / "loss.csv", csv_bytes(e2.COLUMNS, res["rows"]))
        write(d / "prediction.csv", csv_bytes(e2.PRED_COLUMNS, res["prediction"]))
        write(d / "kernels.csv", csv_bytes(e2.KERNEL_COLUMNS, res["kernels"]))
        e2_figure(res["rows"], res["prediction"], res["kernels"], d / "loss", prof.e2.p, write)
        return (
            "E2/loss.png",
            f"training MSE against step (log scale) at p = {prof.e2.p}, mean with a +-1 s.d. "
            "band; dashed: the loss curve predicted by the linearised dynamics with the "
            "kernels at initialisation H(0)+G(0); dotted: the predicted settle level for "
            "lambda > 0; lambda_min(H(0)+G(0)) and its rate in each panel title. The y-axis "
            "stops 14 decades below its top (E2/loss.csv holds every value).",
        )
    if exp == "E5":
        write(d / "alignment.csv", csv_bytes(e5.COLUMNS, res["rows"]))
        e5_figure(res["rows"], d / "alignment", write)
        return (
            "E5/alignment.png",
            "dropout in place of weight decay (lambda = 0): alignment cos(beta, b) at the end "
            "of training against width (log scale), mean +- 1 s.d. over repetitions, one line "
            "per dropout probability q (q = 0: no regulariser).",
        )
    base = res["baseline"]["rows"]
    write(d / "backprop.csv", csv_bytes(baselines.COLUMNS, base))
    if exp == "E4":
        write(d / "metrics.csv", csv_bytes(e4.COLUMNS, res["rows"]))
        e4_figure(res["rows"], d / "metrics", published.E4_AUTHORS, write, base, res["dataset"])
        return (
            "E4/metrics.png",
            f"{res['dataset']}, the authors' three-layer network: error-signal alignment on "
            "the training batch (solid, +-1 s.d. band over repetitions) and weight alignment "
            "cos(B, W) (dashed) of the output layer fc3 and of layer 2 fc2 against step; test "
            "accuracy against step, the same network trained by backprop dotted; hollow "
            "markers at the right edge: the authors' single run after 15,000 steps.",
        )
    write(d / "metrics.csv", csv_bytes(e3.COLUMNS, res["rows"]))
    write(d / "weight_alignment.csv", csv_bytes(e3.WEIGHT_COLUMNS, res["weight_rows"]))
    e3_figure(res["rows"], res["weight_rows"], d / "metrics", write, base)
    return (
        "E3/metrics.png",
        f"{res['dataset']}: hidden-error alignment on the training batch (solid, "
        "+-1 s.d. band over repetitions) and weight cosine cos(B, beta) (dashed) against "
        "step; test accuracy against step, the authors' backprop baseline dotted.",
    )


# ------------------------------------------------------------------ executors
def _threads(ex) -> int:
    """Torch threads inside each pack: one on every executor (a matrix product's rounding
    depends on how many threads share it, so this is what makes every executor give the
    same bytes), or T for ``inline:T``."""
    return getattr(ex, "threads", None) or 1 if ex.name == "inline" else 1


# ------------------------------------------------------------------ the job
def _check_args(experiment, profile, seed) -> None:
    choice("experiment", experiment, CHOICES)
    choice("profile", profile, PROFILES)
    need(
        isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0,
        "--seed",
        seed,
        "a non-negative integer",
    )


def reproduce(
    experiment: str = "all",
    *,
    profile: str | None = None,
    out,
    seed: int | None = None,
    executor: str = "local",
    progress=None,
    command: str | None = None,
    report_only: bool = False,
    dry_run: bool = False,
) -> dict:
    """Run ``experiment`` (E1, E2, E3, E4, E5 or all) at ``profile`` into ``out``; return a summary.

    The runs go into ``out/store.sqlite``; a rerun resumes (finished packs are kept and not
    run again) and another experiment of the same profile and seed adds to it. Every file
    is then built from the store. ``report_only``: compute nothing, rebuild the files of
    every experiment whose runs are all in the store (profile and seed default to the
    directory's)."""
    out = Path(out)
    if report_only:
        held = outdir.held(out)
        if held is None:
            raise ConfigError(
                f"--report-only: --out {str(out)!r} holds no reproduction; accepted: the "
                "directory of an earlier fa reproduce"
            )
        profile = held["profile"] if profile is None else profile
        seed = held["seed"] if seed is None else seed
    profile = "quick" if profile is None else profile
    seed = 0 if seed is None else seed
    _check_args(experiment, profile, seed)
    prof = get_profile(profile)
    ex = from_text(executor)
    from ..twolayer.native import check_environment

    check_environment()  # a bad FA_NATIVE: one line before the directory is touched
    interval = checkpoints.every_seconds()  # so is a bad FA_CHECKPOINT_SECONDS
    exps = list(EXPERIMENTS) if experiment == "all" else [experiment]
    every = plan(EXPERIMENTS, prof, seed)
    packs = [pk for pk in every if pk.experiment in exps]
    if dry_run:  # touches nothing, DIR included
        from .dryrun import describe

        return {"plan": describe(packs, prof, seed, getattr(ex, "workers", 1))}
    ident = outdir.identity(profile, seed)
    previous = outdir.inspect(out, ident)  # refuses anything else, touching nothing
    # progress: a callable for status lines, or a Progress that also shows the time left
    meter = progress if isinstance(progress, Progress) else None
    say = meter.note if meter else (progress or (lambda m: None))
    if profile == "full" and not report_only:
        say(
            "note: 'full' is the paper's exact grid (thousands of runs up to ~140k steps); "
            "on a small CPU it takes days: it is meant for a GPU or a cluster (see "
            "fa reproduce all --profile full --dry-run)"
        )
    t_all = time.perf_counter()
    todo = [] if report_only else _todo(packs, out / STORE)
    if todo:
        ex.start()  # an unreachable scheduler is refused here, before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
        names = planned(EXPERIMENTS) + [checkpoints.relative(pk.pack_id) for pk in every]
        manifest = outdir.Manifest(out, ident, previous, names)
        manifest.save()  # before the store exists, so a kill at any moment leaves it proven
        with Store(out / STORE) as st:
            if st.meta().get("study") is None:
                st.set_meta(study=STUDY, **ident)
            if not report_only:
                ckpt = _checkpoints(out, ident, interval)
                _run_packs(packs, st, ex, meter, say, ckpt)
            finished = st.finished_ids()
            results = _finish(finished, every, exps, out, report_only, st, prof)
    finally:
        ex.close()
    return _write_all(*results, prof, out, manifest, say, t_all, executor, command, seed)


def _todo(packs, store: Path) -> list:
    """The packs not all of whose runs are in ``store`` (read-only; it may not exist)."""
    finished = set()
    if store.is_file() and store.stat().st_size > 0:
        with contextlib.suppress(ConfigError), Store(store, create=False) as st:
            finished = st.finished_ids()
    return [pk for pk in packs if not all(m.run_id in finished for m in pk.members)]


def _finish(finished, every, exps, out, report_only, st, prof):
    """(results, experiments) to report: every experiment whose runs are all stored."""
    ready = complete(every, finished)
    missing = [e for e in exps if e not in ready]
    if missing and not report_only:
        raise ConfigError(f"{', '.join(missing)} did not finish; run the same command again")
    if not ready:
        raise ConfigError(
            f"--report-only: --out {str(out)!r} holds no finished experiment yet; run "
            "fa reproduce without --report-only to compute them"
        )
    return results_from_store(st, prof, ready), ready


def _checkpoints(out: Path, ident: dict, interval: float):
    """pack -> its in-run checkpoint in ``out`` (None for a pack function that takes none)."""

    def of(pk):
        if not takes_checkpoint(pk.fn):
            return None
        return checkpoints.Checkpoint(out, ident, pk.pack_id, interval)

    return of


def _run_packs(packs, st, ex, meter, say, checkpoint=lambda pk: None) -> None:
    """Run the packs whose runs are not all in the store, writing each pack's runs in one
    transaction as it finishes (then clearing its checkpoint); packs already stored count
    as done (a resume)."""
    finished = st.finished_ids()
    todo = [pk for pk in packs if not all(m.run_id in finished for m in pk.members)]
    kept = len(packs) - len(todo)
    for pk in packs:  # a kill between a pack's store write and its checkpoint's clearing
        if pk not in todo and (ck := checkpoint(pk)) is not None:
            ck.clear()
    if meter:
        totals: dict[str, float] = {}
        for pk in packs:
            totals[pk.work_kind] = totals.get(pk.work_kind, 0.0) + pk.cost
        meter.set_work(totals)
        for pk in packs:
            if pk not in todo:
                meter.resumed(pk.cost, pk.work_kind)
    exps = sorted({pk.experiment for pk in packs})
    say(
        f"{', '.join(exps)}: {len(packs)} packs, {kept} already in the store, "
        f"{len(todo)} to run (executor {ex.name})"
    )
    if meter:
        meter.set_status(f"{kept}/{len(packs)} packs")
    if not todo:
        return
    prov = provenance(ex.name)
    threads = _threads(ex)
    failures: list[str] = []
    try:
        done = kept
        ckpts = [checkpoint(pk) for pk in todo]
        items = [(pk.fn, pk.kwargs, threads, ck) for pk, ck in zip(todo, ckpts, strict=True)]
        for i, res in ex.run(run_pack, items):
            pk = todo[i]
            if isinstance(res, BaseException):
                failures.append(f"{pk.kind} {pk.kwargs}: {type(res).__name__}: {res}")
                continue
            recs = records(pk, res, res["seconds"])
            with _sigint_deferred():
                st.write(with_extra(pk, recs), recs, prov)
            if ckpts[i] is not None:
                ckpts[i].clear()
            if res.get("resumed_at"):
                say(
                    f"{pk.kind} pack {pk.pack_id} resumed from its checkpoint at step "
                    f"{res['resumed_at']}"
                )
            done += 1
            if meter:
                meter.done(pk.cost, pk.work_kind, status=f"{done}/{len(packs)} packs")
            else:
                say(f"pack {done}/{len(packs)} done ({pk.experiment})")
    except BaseException:
        ex.cancel()
        raise
    if failures:
        raise ConfigError(
            f"{len(failures)} pack(s) failed, the others are kept in the store (first: "
            f"{' '.join(failures[0].split())[:300]}); run the same command again to retry them"
        )


def _write_all(results, exps, prof, out, manifest, say, t_all, executor, command, seed) -> dict:
    """CSVs, figures, verdicts, report and summary of ``exps`` from their stored rows."""
    figures, times, files, diverged = {}, {}, [], []
    for exp in exps:
        res = results[exp]
        figures[exp] = write_outputs(exp, res, out, prof, manifest.write)
        files += OUTPUTS[exp]
        if exp == "E2":
            _, figures["E2 conservation"] = conservation.write(
                res["conservation"], out / "E2", prof.e2.p, manifest.write
            )
        diverged += res.get("diverged", [])
        times[exp] = {"compute": res["compute_seconds"], "member_steps": res["member_steps"]}
    verdicts = all_verdicts(results)
    files += REPORT
    meta = {
        "seed": seed,
        "experiments": exps,
        "executor": executor,
        "wall_seconds": time.perf_counter() - t_all,
        "times": times,
        "versions": _versions(),
        "command": command
        or f"fa reproduce {' '.join(exps)} --profile {prof.name} --out {out} --seed {seed}",
        "files": [STORE, *files],
        "diverged": diverged,
    }
    blocks = build_blocks(
        profile=prof, meta=meta, verdicts=verdicts, figures=figures, results=results
    )
    manifest.write(out / "report.md", to_markdown(blocks).encode())
    manifest.write(out / "report.html", to_html(blocks, out).encode())
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
    manifest.write(out / "summary.json", json.dumps(summary, indent=1, default=str).encode())
    manifest.save(complete=True)
    say(f"report: {', '.join(exps)} from the store in {time.perf_counter() - t_all:.1f} s")
    return summary
