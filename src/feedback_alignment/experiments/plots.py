"""Figures from a store (matplotlib, Agg backend): PNG or PDF by the output's suffix.

* :func:`plot_final`: a run's final value of any recorded metric against any config
  field, mean with +-1 s.d. error bars over repetitions, one line per value of ``by``
  (the paper's alignment against width per lambda: ``metric="alignment", x="p",
  by="lam"``).
* :func:`plot_curves`: a recorded series against the step, mean with a +-1 s.d. band,
  one line per value of ``by`` (the paper's loss curves: ``metric="mse", by="lam"``).

Only runs with status ``done`` are drawn; the functions return what they drew (numbers)
so callers and tests can check it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..outputs import atomic_path, check_output_files
from .store import Store

SUFFIXES = (".png", ".pdf")


def _open(store) -> tuple[Store, bool]:
    return (store, False) if isinstance(store, Store) else (Store(store, create=False), True)


def _outs(out, store=None, force: bool = False) -> list[Path]:
    """Check every output before anything is read or drawn (see ``outputs``)."""
    outs = [Path(o) for o in ([out] if isinstance(out, str | Path) else list(out or []))]
    if not outs:
        raise ConfigError("--out is required; accepted: one or more .png or .pdf paths")
    for o in outs:
        if o.suffix.lower() not in SUFFIXES:
            raise ConfigError(
                f"--out {str(o)!r} has an unknown suffix; accepted: {', '.join(SUFFIXES)}"
            )
    src = store.path if isinstance(store, Store) else store
    return check_output_files(outs, inputs=[src], force=force)


def _rows(st: Store, where: dict | None) -> list[dict]:
    """Finished runs matching ``where``; an unknown field is an error, not 'no match'."""
    rows = st.runs(status="done")
    if where and rows:
        fields = _fields(rows)
        for k in where:
            if k not in fields:
                raise ConfigError(
                    f"--where field {k!r} is not a field of these runs; accepted: "
                    f"{', '.join(fields)}"
                )
    return st.runs(status="done", **(where or {})) if where else rows


def _fields(rows: list[dict]) -> list[str]:
    names: set[str] = set()
    for r in rows:
        names |= set(r["config"])
    return sorted(names | {"rep", "seed"})


def _check_field(rows, name, what) -> None:
    fields = _fields(rows)
    if name not in fields:
        raise ConfigError(
            f"{what} {name!r} is not a field of these runs; accepted: {', '.join(fields)}"
        )


def _key(v):
    return (0, v, "") if isinstance(v, int | float) and not isinstance(v, bool) else (1, 0, str(v))


def _label(by, v) -> str:
    return "all runs" if by is None else f"{by} = {v:g}" if isinstance(v, float) else f"{by} = {v}"


def _save(fig, outs) -> list[Path]:
    for o in outs:
        with atomic_path(o) as tmp:
            fig.savefig(tmp, format=o.suffix[1:].lower(), bbox_inches="tight")
    return outs


def _finish(fig, ax, xlabel, ylabel, title, legend, outs) -> None:
    """Label, grid, write every requested file, close."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if legend:
        ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, outs)
    plt.close(fig)


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5.5, 4))


def plot_final(
    store,
    metric: str = "alignment",
    x: str = "p",
    by: str | None = "lam",
    *,
    where: dict | None = None,
    out=None,
    logx: bool | None = None,
    logy: bool = False,
    title: str | None = None,
    force: bool = False,
) -> dict:
    """Final ``metric`` against field ``x``, one line per ``by``; returns
    ``{by_value: {"x": [...], "mean": [...], "sd": [...], "n": [...]}}``."""
    outs = _outs(out, store, force)
    st, close = _open(store)
    try:
        rows = _rows(st, where)
        metrics = st.metrics()
    finally:
        if close:
            st.close()
    if not rows:
        raise ConfigError(f"no finished runs match --where {where or {}}; nothing to plot")
    if f"final.{metric}" not in {k for r in rows for k in r}:
        raise ConfigError(f"--metric {metric!r} was not recorded; accepted: {', '.join(metrics)}")
    _check_field(rows, x, "--x")
    if by is not None:
        _check_field(rows, by, "--by")
    groups: dict = {}
    for r in rows:
        groups.setdefault(r[by] if by else None, {}).setdefault(r[x], []).append(
            r.get(f"final.{metric}", np.nan)
        )
    drawn = {}
    fig, ax = _figure()
    numeric = all(isinstance(r[x], int | float) and not isinstance(r[x], bool) for r in rows)
    for bv in sorted(groups, key=_key):
        xs = sorted(groups[bv], key=_key)
        vals = [np.asarray(groups[bv][xv], dtype=float) for xv in xs]
        mean = [float(np.nanmean(v)) for v in vals]
        sd = [float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else 0.0 for v in vals]
        drawn[bv] = {"x": xs, "mean": mean, "sd": sd, "n": [int(v.size) for v in vals]}
        pos = xs if numeric else list(range(len(xs)))
        ax.errorbar(pos, mean, yerr=sd, marker="o", capsize=3, label=_label(by, bv))
    if numeric:
        xv = np.asarray([r[x] for r in rows], dtype=float)
        if logx is None:
            logx = bool(xv.min() > 0 and xv.max() / xv.min() >= 8)
        if logx:
            ax.set_xscale("log")
    else:
        allx = sorted({r[x] for r in rows}, key=_key)
        ax.set_xticks(range(len(allx)), [str(v) for v in allx])
    if logy:
        ax.set_yscale("log")
    _finish(fig, ax, x, f"final {metric} (mean +- 1 s.d.)", title, by is not None, outs)
    return drawn


def plot_curves(
    store,
    metric: str = "mse",
    by: str | None = "lam",
    *,
    where: dict | None = None,
    out=None,
    logx: bool = False,
    logy: bool | None = None,
    title: str | None = None,
    force: bool = False,
) -> dict:
    """Recorded ``metric`` against the step, mean with a +-1 s.d. band per ``by`` value;
    returns ``{by_value: {"steps", "mean", "sd", "n"}}`` (arrays)."""
    outs = _outs(out, store, force)
    st, close = _open(store)
    try:
        rows = _rows(st, where)
        series = st.all_series(metric, status=("done",), **(where or {}))
        names = sorted({m for r in rows[:50] for m in st.run_metrics(r["run_id"])})
    finally:
        if close:
            st.close()
    if not rows:
        raise ConfigError(f"no finished runs match --where {where or {}}; nothing to plot")
    if not series:
        raise ConfigError(
            f"--metric {metric!r} has no recorded series; accepted: {', '.join(names)}"
        )
    if by is not None:
        _check_field(rows, by, "--by")
    groups: dict = {}
    for s in series:
        groups.setdefault(s[by] if by else None, []).append(s)
    fig, ax = _figure()
    drawn = {}
    for bv in sorted(groups, key=_key):
        members = groups[bv]
        steps = np.unique(np.concatenate([s["steps"] for s in members]))
        mat = np.full((len(members), steps.size), np.nan)
        for i, s in enumerate(members):
            mat[i, np.searchsorted(steps, s["steps"])] = s["values"]
        n = np.isfinite(mat).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nansum(mat, 0) / np.maximum(n, 1)
            sd = np.sqrt(np.nansum((mat - mean) ** 2, 0) / np.maximum(n - 1, 1))
        mean[n == 0] = np.nan
        drawn[bv] = {"steps": steps, "mean": mean, "sd": sd, "n": n}
        (line,) = ax.plot(steps, mean, label=_label(by, bv))
        ax.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, lw=0)
    if logy is None:
        allv = np.concatenate([d["mean"] for d in drawn.values()])
        allv = allv[np.isfinite(allv)]
        logy = bool(allv.size and allv.min() > 0 and metric in ("mse", "loss", "penalty"))
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("symlog")
    _finish(fig, ax, "step", f"{metric} (mean +- 1 s.d.)", title, by is not None, outs)
    return drawn
