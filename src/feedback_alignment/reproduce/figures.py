"""The paper's figures from the long-form rows, with the theory overlays, as PNG and PDF.

E1: alignment against width, one panel per activation, log x-axis, mean +-1 s.d. bars,
one line per lambda. E2: MSE against step on a log y-axis, one panel per activation,
mean with a +-1 s.d. band, the loss curve predicted from H(0)+G(0) dashed, the settle level
of each lambda > 0 dotted and lambda_min(H(0)+G(0)) in the panel. E3: hidden-error
alignment (and the weight cosine) against step, and test accuracy against step (backprop
baseline dotted). E4: each layer's error-signal and weight alignment against step, test
accuracy, the authors' single run as markers. E2's conservation figure: b.beta(t) split
into the terms of the exact law. E5: E1's axes, one line per dropout probability.
:func:`plot_comparison` draws one run beside its prediction (``twolayer.theory``).
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..activations import get_activation
from ..outputs import atomic_write_bytes
from .profiles import ACTIVATIONS, LAMS


def act_title(act: str) -> str:
    """An activation's title as the paper writes it ("ReLU"), declared with the activation."""
    return get_activation(act).title


# the conservation figure's terms (reproduce/conservation.py): label, colour, line style
CONSERVATION_STYLE = {
    "initial": ("initial b.beta(0)", "tab:gray", ":"),
    "w_growth": ("W-norm growth", "tab:blue", "-"),
    "step_correction": ("step-size correction", "tab:orange", "-"),
    "weight_decay": ("weight-decay term", "tab:red", "-"),
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 8, "figure.dpi": 110}
    )
    return plt


def _save(fig, path: Path, write=None) -> list[Path]:
    """Write ``path``.png and .pdf; return both paths. Each is rendered in memory and handed
    to ``write(path, bytes)`` (default: :func:`~..outputs.atomic_write_bytes`), so a caller
    can record the bytes' hash before they land."""
    out = []
    for ext in ("png", "pdf"):
        final = path.with_suffix(f".{ext}")
        buf = io.BytesIO()
        # no creation date in the PDF: the same numbers give the same bytes
        meta = {"CreationDate": None} if ext == "pdf" else None
        fig.savefig(
            buf,
            format=ext,
            dpi=150 if ext == "png" else None,
            bbox_inches="tight",
            metadata=meta,
        )
        (write or atomic_write_bytes)(final, buf.getvalue())
        out.append(final)
    return out


def group(rows, keys, value):
    """{key tuple: np.array of ``value``} over rows, in first-seen order."""
    g = defaultdict(list)
    for r in rows:
        v = r[value]
        if v == "" or v is None:
            continue
        g[tuple(r[k] for k in keys)].append(float(v))
    return {k: np.asarray(v) for k, v in g.items()}


def over_reps(g: dict, head: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, mean, s.d.) of the groups ``g[(*head, x)]`` of :func:`group`, in x order: the
    mean and sample s.d. over repetitions of each point (s.d. 0 for a single value)."""
    xs = np.array(sorted(k[-1] for k in g if k[:-1] == head))
    vals = [g[(*head, x)] for x in xs]
    mean = np.array([v.mean() for v in vals])
    sd = np.array([v.std(ddof=1) if v.size > 1 else 0 for v in vals])
    return xs, mean, sd


def _colors(n):
    plt = _plt()
    cmap = plt.get_cmap("viridis")
    return ["black"] + [cmap(x) for x in np.linspace(0.15, 0.85, n - 1)]


def e1_figure(rows, path: Path, published: dict | None = None, write=None) -> list[Path]:
    """E1 figure; ``published`` ({(act, lam, p): (mean, sd)}) adds the paper's values as
    hollow markers with +-1 s.d. bars, shifted right a little, at the widths drawn."""
    title = "E1: alignment at the end of training vs width (mean ± 1 s.d.)" + (
        "; hollow squares: the paper's published values" if published else ""
    )
    return alignment_figure(
        rows, path, ("lam", LAMS, "λ", "weight decay"), ACTIVATIONS, title, published, write
    )


def e5_figure(rows, path: Path, write=None) -> list[Path]:
    """E5 figure: E1's axes, one line per dropout probability q (lambda = 0)."""
    from .profiles import DROPOUTS, E5_ACTIVATIONS

    title = "E5: dropout instead of weight decay (λ = 0): alignment vs width (mean ± 1 s.d.)"
    lines = ("dropout", DROPOUTS, "q", "dropout probability")
    return alignment_figure(rows, path, lines, E5_ACTIVATIONS, title, None, write)


def alignment_figure(rows, path: Path, lines, activations, title, published, write):
    """Alignment at the end of training against width, one panel per activation of
    ``activations`` found in ``rows``, one line per value of ``lines`` = (column, {act:
    values}, label, legend title), mean +- 1 s.d. over repetitions."""
    from matplotlib.lines import Line2D

    column, values, label, legend_title = lines
    plt = _plt()
    acts = [a for a in activations if any(r["activation"] == a for r in rows)]
    cols = len(acts) if len(acts) <= 3 else 2  # four panels as a 2 x 2 grid
    rows_n = -(-len(acts) // cols)
    fig, axes = plt.subplots(
        rows_n, cols, figsize=(5.6 * cols, 3.8 * rows_n), squeeze=False, layout="constrained"
    )
    g = group(rows, ("activation", column, "p"), "alignment")
    for ax, act in zip(axes.flat, acts, strict=False):
        lams = values[act]
        for lam, color in zip(lams, _colors(len(lams)), strict=True):
            ps, m, s = over_reps(g, (act, lam))
            if not ps.size:
                continue
            ax.errorbar(
                ps, m, yerr=s, marker="o", ms=4, capsize=3, color=color, label=f"{label} = {lam:g}"
            )
            pub = [p for p in ps if published and (act, lam, p) in published]
            if pub:
                pm = np.array([published[(act, lam, p)][0] for p in pub])
                psd = np.array([published[(act, lam, p)][1] for p in pub])
                ax.errorbar(
                    np.array(pub) * 1.07,
                    pm,
                    yerr=psd,
                    marker="s",
                    ms=5,
                    mfc="white",
                    mec=color,
                    capsize=2,
                    color=color,
                    ls=":",
                    lw=0.9,
                )
        ax.set_xscale("log")
        ps_all = sorted({k[2] for k in g if k[0] == act})
        ax.set_xticks(ps_all, [str(p) for p in ps_all])
        ax.minorticks_off()
        ax.axhline(0, color="grey", lw=0.6, ls=":")
        ax.set_xlabel("width p (hidden units, log scale)")
        ax.set_ylabel("alignment cos(β, b)")
        ax.set_title(f"{act_title(act)} network")
        handles, labels = ax.get_legend_handles_labels()
        if published:
            handles += [
                Line2D([], [], color="grey", marker="o", ms=4),
                Line2D([], [], color="grey", marker="s", ms=5, mfc="white", ls=":", lw=0.9),
            ]
            labels += ["this run", "paper (50 reps)"]
        # beside the panel, not over it: the lines span the whole axis
        ax.legend(handles, labels, title=legend_title, loc="upper left", bbox_to_anchor=(1.01, 1))
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    out = _save(fig, path, write)
    plt.close(fig)
    return out


def e2_figure(rows, prediction, kernels, path: Path, p: int, write=None) -> list[Path]:
    plt = _plt()
    acts = [a for a in ACTIVATIONS if any(r["activation"] == a for r in rows)]
    fig, axes = plt.subplots(
        1, len(acts), figsize=(4.6 * len(acts), 4.4), squeeze=False, layout="constrained"
    )
    meas = group(rows, ("activation", "lam", "step"), "mse")
    pred = group(prediction, ("activation", "lam", "step"), "predicted_mse")
    settle = group(kernels, ("activation", "lam"), "settle_mse")
    lmin = group(kernels, ("activation",), "lambda_min")
    rate = group(kernels, ("activation",), "predicted_rate")
    from matplotlib.lines import Line2D

    for ax, act in zip(axes[0], acts, strict=True):
        lams = LAMS[act]
        lo_all, hi_all, pred_up = [], [], False
        for lam, color in zip(lams, _colors(len(lams)), strict=True):
            steps, m, sd = over_reps(meas, (act, lam))
            if steps.size == 0:
                continue
            lo = np.maximum(m - sd, m * 1e-2)
            ax.plot(steps, m, color=color, lw=1.6, label=f"λ = {lam:g}")
            ax.fill_between(steps, lo, m + sd, color=color, alpha=0.2, lw=0)
            pm = np.array([pred[(act, lam, s)].mean() for s in steps])
            pred_up |= bool(pm[-1] > pm[0])
            ax.plot(steps, pm, color=color, lw=1.1, ls="--")
            lo_all.append(lo.min())
            hi_all.append((m + sd).max())
            if lam > 0 and (act, lam) in settle:
                lvl = settle[(act, lam)].mean()
                ax.axhline(lvl, color=color, lw=0.9, ls=":")
                lo_all.append(lvl)
        ax.set_yscale("log")
        if lo_all:
            # measured curves and settle levels set the range; a diverging prediction is cut
            # (cut at 1e-14 of the top: below it only rounding noise, and the lambda > 0
            # levels would be squeezed into a sliver; the CSV holds every value)
            top = max(hi_all) * 3
            ax.set_ylim(max(min(lo_all) / 3, top * 1e-14), top)
        ax.set_xlabel("step")
        ax.set_ylabel("training MSE (log scale)")
        head = f"{act_title(act)} network, p = {p}"
        if (act,) in lmin:
            head += (
                f"\nλ_min(H(0)+G(0)) = {lmin[(act,)].mean():.3g}, "
                f"predicted rate {rate[(act,)].mean():.2g}/step"
            )
        if pred_up:
            head += "\n(H(0)+G(0) not PSD: the prediction grows)"
        ax.set_title(head, fontsize=10)
        ax.grid(alpha=0.3, which="major")
        handles, labels = ax.get_legend_handles_labels()
        handles += [
            Line2D([], [], color="grey", lw=1.6),
            Line2D([], [], color="grey", lw=1.1, ls="--"),
            Line2D([], [], color="grey", lw=0.9, ls=":"),
        ]
        labels += ["measured (mean ± 1 s.d.)", "kernel prediction", "predicted settle level"]
        ax.legend(handles, labels, loc="best", fontsize=7, framealpha=0.85)
    fig.suptitle(
        "E2: training loss of feedback alignment vs step",
    )
    out = _save(fig, path, write)
    plt.close(fig)
    return out


def _baseline_accuracy(ax, rows, lams, colors) -> None:
    """The backprop baseline's test accuracy (mean over its repetitions) per lambda, thin
    dotted lines with hollow markers in the lambda's colour."""
    acc = group(rows or [], ("lam", "step"), "test_accuracy")
    for lam, color in zip(lams, colors, strict=True):
        es = np.array(sorted({k[1] for k in acc if k[0] == lam}))
        if es.size:
            am = np.array([acc[(lam, s)].mean() for s in es])
            ax.plot(es, am, color=color, lw=1.0, ls=":", marker="s", ms=3, mfc="none",
                    label=f"λ = {lam:g}, backprop")  # fmt: skip


def e3_figure(rows, weight_rows, path: Path, write=None, baseline=None) -> list[Path]:
    """E3's figure; ``baseline``: the backprop baseline's rows (lam, rep, step,
    test_accuracy), drawn in the accuracy panel."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    al = group(rows, ("lam", "step"), "alignment")
    acc = group(rows, ("lam", "step"), "test_accuracy")
    wal = group(weight_rows, ("lam", "step"), "weight_alignment")
    lams = sorted({k[0] for k in al})
    for lam, color in zip(lams, _colors(len(lams)), strict=True):
        steps, m, sd = over_reps(al, (lam,))
        a1.plot(steps, m, color=color, lw=1.2, label=f"λ = {lam:g}: error signals")
        a1.fill_between(steps, m - sd, m + sd, color=color, alpha=0.2, lw=0)
        wm = np.array([wal[(lam, s)].mean() for s in steps])
        a1.plot(steps, wm, color=color, lw=1.0, ls="--", label=f"λ = {lam:g}: cos(B, β)")
        es, am, asd = over_reps(acc, (lam,))
        a2.errorbar(
            es,
            am,
            yerr=asd if asd.any() else None,
            color=color,
            marker="o",
            ms=3,
            capsize=2,
            label=f"λ = {lam:g}",
        )
    _baseline_accuracy(a2, baseline, lams, _colors(len(lams)))
    a1.set_xlabel("SGD step")
    a1.set_ylabel("alignment (cosine)")
    a1.set_title("hidden-error alignment cos(eB, eβ) and cos(B, β)")
    a1.axhline(0, color="grey", lw=0.6, ls=":")
    a1.legend(loc="best", ncol=1)
    a1.grid(alpha=0.3)
    a2.set_xlabel("SGD step")
    a2.set_ylabel("test accuracy")
    a2.set_title("test accuracy (FA solid" + (", backprop dotted)" if baseline else ")"))
    a2.legend(title="weight decay", loc="lower right")
    a2.grid(alpha=0.3)
    fig.suptitle(
        "E3: MNIST, feedback alignment with weight decay λ on the last layer",
    )
    out = _save(fig, path, write)
    plt.close(fig)
    return out


def e4_figure(
    rows, path: Path, authors: dict, write=None, baseline=None, dataset: str = "mnist"
) -> list[Path]:
    """E4's figure: per layer (fc3 the output layer, fc2 the second) the error-signal
    alignment (solid, +-1 s.d. band over repetitions) and the weight alignment (dashed)
    against step, one colour per lambda; test accuracy against step with the backprop
    baseline dotted. ``authors`` (:data:`.published.E4_AUTHORS`): their single run's
    values, drawn as hollow markers at the right edge of the output-layer and accuracy
    panels."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    lams = sorted({r["lam"] for r in rows})
    colors = _colors(len(lams))
    last = max(r["step"] for r in rows)
    edge = last * 1.04
    for ax, layer, title in (
        (axes[0], "fc3", "output layer (fc3)"),
        (axes[1], "fc2", "layer 2 (fc2)"),
    ):
        al = group(rows, ("lam", "step"), f"{layer}_alignment")
        wal = group(rows, ("lam", "step"), f"{layer}_weight_alignment")
        for k, (lam, color) in enumerate(zip(lams, colors, strict=True)):
            steps, m, sd = over_reps(al, (lam,))
            ax.plot(steps, m, color=color, lw=1.0, label=f"λ = {lam:g}: error signals")
            ax.fill_between(steps, m - sd, m + sd, color=color, alpha=0.2, lw=0)
            wm = np.array([wal[(lam, t)].mean() for t in steps])
            ax.plot(steps, wm, color=color, lw=1.2, ls="--", label=f"λ = {lam:g}: cos(B, W)")
            if layer == "fc3":
                ax.plot(edge, authors["fc3_alignment_last1000"][k], "o", color=color, mfc="none",
                        ms=7, mew=1.5)  # fmt: skip
                ax.plot(edge, authors["fc3_weight_alignment_final"][k], "D", color=color,
                        mfc="none", ms=6, mew=1.5)  # fmt: skip
        ax.set_title(f"{title}: cos(eB, eW) and cos(B, W)")
        ax.set_xlabel("SGD step")
        ax.set_ylabel("alignment (cosine)")
        ax.axhline(0, color="grey", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    marks = [
        Line2D([], [], color="0.3", marker="o", mfc="none", ls="", label="authors: error signals"),
        Line2D([], [], color="0.3", marker="D", mfc="none", ls="", label="authors: cos(B, W)"),
    ]
    h, _ = axes[0].get_legend_handles_labels()
    axes[0].legend(handles=h + marks, loc="best", fontsize=7)
    axes[1].legend(loc="best", fontsize=7)
    acc = group(rows, ("lam", "step"), "test_accuracy")
    a2 = axes[2]
    for k, (lam, color) in enumerate(zip(lams, colors, strict=True)):
        es, am, _ = over_reps(acc, (lam,))
        a2.plot(es, am, color=color, marker="o", ms=3,
                label=f"λ = {lam:g}, FA")  # fmt: skip
        a2.plot(edge, authors["test_accuracy_percent"][k] / 100, "o", color=color, mfc="none",
                ms=7, mew=1.5)  # fmt: skip
    _baseline_accuracy(a2, baseline, lams, colors)
    h, _ = a2.get_legend_handles_labels()
    a2.legend(
        handles=h + [Line2D([], [], color="0.3", marker="o", mfc="none", ls="",
                            label="authors (FA, 15,000 steps)")],
        loc="lower right", fontsize=7,
    )  # fmt: skip
    a2.set_title("test accuracy (FA solid" + (", backprop dotted)" if baseline else ")"))
    a2.set_xlabel("SGD step")
    a2.set_ylabel("test accuracy")
    a2.grid(alpha=0.3)
    fig.suptitle(
        f"E4: {dataset}, the authors' three-layer network trained by feedback alignment, weight "
        "decay λ on layers 2 and 3 "
        f"(hollow markers at the right edge: the authors' single run after 15,000 steps; "
        f"ours ends at step {last})",
        fontsize=10,
    )
    out = _save(fig, path, write)
    plt.close(fig)
    return out


def conservation_figure(results: dict, path: Path, p: int, write=None) -> list[Path]:
    """E2's conservation figure from :func:`.conservation.run_activation` results per
    activation: the alignment on top, below it b.beta(t) and the law's terms per lambda."""
    plt = _plt()
    acts = list(results)
    fig, axes = plt.subplots(3, len(acts), figsize=(5.2 * len(acts), 9.0), squeeze=False)
    for c, act in enumerate(acts):
        res = results[act]
        for k, lam in enumerate(res["lams"]):
            rows = [r for r in res["rows"] if r["lam"] == lam]
            step = np.array([r["step"] for r in rows])
            ax = axes[0, c]
            ax.plot(
                step,
                [r["alignment"] for r in rows],
                color="black" if k == 0 else "tab:red",
                label=f"lambda = {lam:g}",
            )
            ax = axes[1 + k, c]
            ax.plot(
                step,
                [r["b_beta"] for r in rows],
                color="black",
                lw=2.2,
                label="b.beta(t) (sum of the terms)",
            )
            for t, (label, color, ls) in CONSERVATION_STYLE.items():
                if t == "weight_decay" and lam == 0:
                    continue
                ax.plot(step, [r[t] for r in rows], color=color, ls=ls, label=label)
            ax.axhline(0, color="0.8", lw=0.8, zorder=0)
            ax.set_title(f"{act_title(act)}, lambda = {lam:g}: b.beta split")
            ax.set_xlabel("step")
            ax.legend(loc="best")
        axes[0, c].set_title(f"{act_title(act)}, p = {p}: alignment cos(beta, b)")
        axes[0, c].set_xlabel("step")
        axes[0, c].axhline(0, color="0.8", lw=0.8, zorder=0)
        axes[0, c].legend(loc="best")
    fig.tight_layout()
    out = _save(fig, path, write)
    plt.close(fig)
    return out


def plot_comparison(comparison, ax=None, member: int | None = None):
    """Measured vs predicted MSE of a :class:`~feedback_alignment.twolayer.theory.Comparison`
    on a log axis, one solid and one dashed line per member (or only ``member``); draws on
    ``ax``, or on a new figure of matplotlib's current backend, and returns the axes."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    meas, pred = comparison.measured, comparison.predicted
    if meas.ndim == 2:
        cols = range(meas.shape[1]) if member is None else [member]
    else:
        cols = [None]
    for k in cols:
        m = meas if k is None else meas[:, k]
        p = pred if k is None else pred[:, k]
        label = "" if k is None else f" [{k}]"
        line = ax.semilogy(comparison.steps, m, label=f"measured{label}")[0]
        ax.semilogy(comparison.steps, p, "--", color=line.get_color(), label=f"predicted{label}")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE")
    ax.legend()
    return ax
