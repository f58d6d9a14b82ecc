"""report.md and a self-contained report.html (figures embedded) from one reproduction.

The report is built as a list of blocks (heading, paragraph, list, table, figure) and
rendered twice, so the two files always say the same thing. Verdicts come from
:mod:`.verdicts`; nothing in the report is written in by hand except the explanations.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from ..activations import get_activation
from .figures import act_title
from .profiles import ACTIVATIONS, E3_LAMS, LAMS, STEP_SIZE_NOTE, D, N, Profile
from .published import AGREE_RULE, PAPER_REPS, compare, headline, provenance


def _set(values) -> str:
    """``{0, 0.1, 0.3}``: a set of numbers as the report writes it."""
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def e1_blocks(cells, e1: dict) -> list[tuple]:
    """E1 beside the paper: the run lengths, then one row per published cell."""
    b: list[tuple] = [("h2", "E1 beside the published values")]
    steps = [r["steps"] for r in e1["rows"]]
    capped = e1.get("capped", 0)
    b.append(
        (
            "p",
            "Run length: the paper's rule as the authors' code runs it, at every profile: at "
            "least rint(5000 sqrt(p) // 14) steps, the MSE checked when t % 1000 == 999, on "
            "until it changed by < 1e-3 between checks. "
            f"Members trained {min(steps)}-{max(steps)} steps (median "
            f"{int(sorted(steps)[len(steps) // 2])}); {capped} of {len(steps)} reached the "
            f"step cap{'' if e1.get('max_steps') else ' (none set)'}.",
        )
    )
    b.append(("p", f"**{headline(cells)}** by the rule {AGREE_RULE}."))
    if cells:
        b.append(("p", f"Published values: {provenance()}"))
        b.append(
            (
                "table",
                [
                    "activation",
                    "λ",
                    "p",
                    "ours: mean ± s.e. (reps)",
                    f"paper: mean ± s.d. ({PAPER_REPS} reps)",
                    "difference (s.e.)",
                    "tolerance",
                    "",
                ],
                [
                    [
                        c.activation,
                        f"{c.lam:g}",
                        c.p,
                        f"{c.mean:.3f} ± {c.se:.3f} ({c.reps})",
                        f"{c.paper_mean:.3f} ± {c.paper_sd:.3f}",
                        f"{c.diff:+.3f} ({c.z:+.1f})",
                        f"{c.tolerance:.3f}",
                        "agree" if c.agree else "**disagree**",
                    ]
                    for c in cells
                ],
            )
        )
        b.append(
            (
                "p",
                "The difference in standard errors divides ours - paper by sqrt(sd^2/reps + "
                f"sd^2/{PAPER_REPS}), sd the paper's standard deviation.",
            )
        )
    return b


def e3_blocks(e3: dict) -> list[tuple]:
    """E3's end point beside the paper's values after 30,000 steps."""
    from .e3 import PAPER_FINAL

    rows = e3["rows"]
    last = max(r["step"] for r in rows)
    out = []
    for lam, (al, acc) in PAPER_FINAL.items():
        a = [r["alignment"] for r in rows if r["lam"] == lam and r["step"] == last]
        last_eval = max(
            (r["step"] for r in rows if r["lam"] == lam and r["test_accuracy"] != ""), default=None
        )
        t = [
            r["test_accuracy"]
            for r in rows
            if r["lam"] == lam and r["step"] == last_eval and r["test_accuracy"] != ""
        ]
        out.append(
            [
                f"{lam:g}",
                f"{sum(a) / len(a):.3f}" if a else "",
                f"{100 * sum(t) / len(t):.1f} %" if t else "",
                _pct(_final_accuracy(e3.get("baseline", {}).get("rows", []), lam)),
                str(last),
                f"{al:.2f}",
                f"{acc:.1f} %",
            ]
        )
    return [
        ("h2", "E3 beside the paper's final values"),
        (
            "table",
            [
                "λ",
                "alignment (this run)",
                "test accuracy (this run)",
                "backprop baseline: test accuracy",
                "at step",
                "paper: alignment",
                "paper: test accuracy (30,000 steps)",
            ],
            out,
        ),
        (
            "p",
            "The paper's values are read at the end of its 30,000 steps (300 epochs); this run's "
            "at its last step, alignment on that step's training batch (mean over "
            "repetitions). Shorter runs stop while the alignment is still rising. The backprop "
            "baseline is the authors' two-layer one (nn.Linear with biases, PyTorch's default "
            "initialisation, loss + lambda |beta|^2), trained for the same steps.",
        ),
    ]


def _final_accuracy(rows, lam) -> float | None:
    """Mean over repetitions of the test accuracy at the last evaluated step of ``lam``."""
    acc = [r for r in rows if r["lam"] == lam and r["test_accuracy"] != ""]
    if not acc:
        return None
    last = max(r["step"] for r in acc)
    vals = [r["test_accuracy"] for r in acc if r["step"] == last]
    return sum(vals) / len(vals)


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.1f} %"


def e4_blocks(e4: dict) -> list[tuple]:
    """E4's end point beside the authors' single run, with the backprop baseline."""
    from .e4 import LAYERS
    from .published import E4_AUTHORS, E4_PROVENANCE

    rows = e4["rows"]
    last = max(r["step"] for r in rows)
    tail = last - 1000  # the authors' statistic: the mean of the last 1000 steps

    def mean(lam, key, when):
        v = [r[key] for r in rows if r["lam"] == lam and when(r["step"])]
        return sum(v) / len(v) if v else float("nan")

    out = []
    for k, lam in enumerate(E3_LAMS):
        ours = [
            _pct(_final_accuracy(rows, lam)),
            *(f"{mean(lam, f'{ly}_alignment', lambda t: t > tail):.3f}" for ly in LAYERS[::-1]),
            *(f"{mean(lam, f'{ly}_weight_alignment', lambda t: t == last):.3f}"
              for ly in LAYERS[::-1]),
            _pct(_final_accuracy(e4.get("baseline", {}).get("rows", []), lam)),
        ]  # fmt: skip
        theirs = [
            f"{E4_AUTHORS['test_accuracy_percent'][k]:.2f} %",
            f"{E4_AUTHORS['fc3_alignment_last1000'][k]:.3f}",
            f"{E4_AUTHORS['fc3_weight_alignment_final'][k]:.3f}",
        ]
        out.append([f"{lam:g}", *ours, *theirs])
    return [
        ("h2", "E4 beside the authors' run"),
        (
            "table",
            [
                "λ",
                "test accuracy (FA)",
                "fc3 error alignment",
                "fc2 error alignment",
                "fc3 cos(B, W)",
                "fc2 cos(B, W)",
                "test accuracy (backprop)",
                "authors: test accuracy",
                "authors: fc3 error alignment",
                "authors: fc3 cos(B, W)",
            ],
            out,
        ),
        (
            "p",
            f"This run: {last} steps; error-signal alignment averaged over the last 1000 steps "
            "(all of them if fewer), cos(B, W) and test accuracy at the last step, means over "
            f"repetitions. The authors' values: {E4_PROVENANCE}; they did not record layer 2 "
            "(fc2), so its alignment has nothing to be compared with.",
        ),
    ]


def e5_blocks(e5: dict, max_steps: int | None) -> list[tuple]:
    """E5 in numbers: mean alignment per activation, q and width, the run lengths, and the
    settings of the authors' dropout runs."""
    from .profiles import DROPOUTS, E5_ACTIVATIONS

    rows = e5["rows"]
    ps = sorted({r["p"] for r in rows})
    table = []
    for act in E5_ACTIVATIONS:
        for q in DROPOUTS[act]:
            cells = []
            for p in ps:
                a = [
                    r["alignment"]
                    for r in rows
                    if (r["activation"], r["dropout"], r["p"]) == (act, q, p)
                ]
                cells.append(f"{sum(a) / len(a):.3f}" if a else "")
            steps = sorted(r["steps"] for r in rows if (r["activation"], r["dropout"]) == (act, q))
            span = f"{steps[0]}-{steps[-1]}" if steps else ""
            table.append([act_title(act), f"{q:g}", *cells, span])
    capped = (
        f" {e5['capped']} of {len(rows)} runs reached the profile's cap of {max_steps} steps "
        "(their alignment was still moving by more than the rule's 1e-4 between checks)."
        if max_steps
        else ""
    )
    return [
        ("h2", "E5: dropout instead of weight decay"),
        (
            "p",
            "The authors' dropout runs: E1's setting (n = 50, d = 150, a teacher of the same "
            "activation and width, fresh data, network and b for every repetition) with "
            "lambda = 0 and inverted dropout (torch.nn.Dropout) on the hidden activations "
            "psi(Wx) at every training step; the probabilities of one repetition share its "
            "data, network and b. Step sizes: "
            + ", ".join(f"{get_activation(a).dropout_lr:g} {act_title(a)}" for a in E5_ACTIVATIONS)
            + ". Stop rule: at least rint(N sqrt(p) // 14) steps (N = 5000, 10,000 linear), "
            "the alignment checked every N/5 steps, on until it changes by less than 1e-4 "
            "between checks." + capped,
        ),
        (
            "table",
            ["activation", "q", *[f"p = {p}" for p in ps], "steps (min-max)"],
            table,
        ),
    ]


def build_blocks(
    *, profile: Profile, meta: dict, verdicts, figures: dict, results: dict | None = None
) -> list[tuple]:
    results = results or {}
    cells = compare(results["E1"]["rows"]) if "E1" in results else None
    b: list[tuple] = [("h1", "Reproduction of Song, Xu & Lafferty (2021)")]
    b.append(
        (
            "p",
            "Convergence and Alignment of Gradient Descent with Random Backpropagation Weights "
            f"(NeurIPS 2021). Profile **{profile.name}** ({profile.purpose}), seed {meta['seed']}, "
            f"experiments {', '.join(meta['experiments'])}, executor {meta['executor']}. "
            f"Total wall time {meta['wall_seconds']:.1f} s.",
        )
    )
    if cells is not None:
        b.append(("p", f"**{headline(cells)}.**"))
    b.append(("h2", "Verdicts"))
    b.append(
        (
            "table",
            ["claim", "statement", "verdict"],
            [[v.claim, v.statement, f"**{v.verdict}**"] for v in verdicts],
        )
    )
    b.append(
        (
            "p",
            "Verdicts are computed from the data by the criteria below: 'holds', 'not shown at "
            "this profile' (the data cannot settle it at this size) or 'does not hold'. Claim 1b "
            "compares with the linearised theory and says 'agrees' or 'deviates'.",
        )
    )
    for v in verdicts:
        b.append(("h3", f"Claim {v.claim}: {v.verdict}"))
        b.append(("p", v.statement))
        b.append(("p", f"*Criterion.* {v.criterion}"))
        b.append(("ul", v.evidence or ["no data"]))
    b.append(("h2", "Figures"))
    for exp, (path, caption) in figures.items():
        b.append(("fig", path, f"{exp}: {caption}"))
    if cells is not None:
        b += e1_blocks(cells, {**results["E1"], "max_steps": profile.e1.max_steps})
    if "E3" in results:
        b += e3_blocks(results["E3"])
    if "E4" in results:
        b += e4_blocks(results["E4"])
    if "E5" in results:
        b += e5_blocks(results["E5"], profile.e5.max_steps)
    b.append(("h2", "Settings"))
    b.append(("p", STEP_SIZE_NOTE))
    b.append(
        (
            "p",
            f"Synthetic data (E1, E2): n = {N}, d = {D}; linear networks fit a linear teacher, "
            "ReLU/tanh networks a random teacher of the same activation and width; fresh data, "
            "network and feedback vector b for every repetition. Within a repetition the "
            "lambdas share the data, the initial network and b (paired comparisons). Lambda sets: "
            + ", ".join(f"{act_title(a)} {_set(LAMS[a])}" for a in ACTIVATIONS)
            + ". E3: 784 -> 1000 ReLU -> 10 (1/sqrt(1000) output scale), SGD lr 1e-2, "
            f"cross-entropy, 10 x 1000 feedback matrix B, lambda in {_set(E3_LAMS)} on the last "
            f"layer, the {len(E3_LAMS)} runs sharing initialisation, B and batch order. E4 (the "
            "authors' code, not in the paper): 784 -> 1000 ReLU -> 1000 ReLU -> 10, no biases, "
            "every layer FA with its own N(0, 1) feedback, output divided by 1000, SGD lr 1e-2, "
            f"batch 600, lambda in {_set(E3_LAMS)} on layers 2 and 3. Both networks are also "
            "trained by backprop (E3: the authors' two-layer baseline; E4: the same network "
            "from the same start) as a baseline for the accuracy.",
        )
    )
    red = profile.reductions()
    b.append(("p", "Reduced relative to the paper:" if red else "The paper's exact settings."))
    if red:
        b.append(("ul", red))
    b.append(("h2", "Wall times"))
    b.append(
        (
            "p",
            f"This command: {meta['wall_seconds']:.1f} s wall. Compute per experiment: the "
            "seconds its packs trained, summed over the packs (as the store records them, "
            "also those kept from an earlier, interrupted run; packs run side by side on the "
            "executor's workers).",
        )
    )
    b.append(
        (
            "table",
            ["experiment", "compute (s)", "member-steps"],
            [
                [e, f"{t['compute']:.1f}", t.get("member_steps", "")]
                for e, t in meta["times"].items()
            ],
        )
    )
    if meta.get("diverged"):
        b.append(("p", "Diverged members:"))
        b.append(("ul", meta["diverged"]))
    b.append(("h2", "Versions"))
    b.append(("ul", [f"{k}: {v}" for k, v in meta["versions"].items()]))
    b.append(("p", f"Command: `{meta['command']}`"))
    b.append(("h2", "Files"))
    b.append(("ul", [f"`{f}`" for f in meta["files"]]))
    return b


def to_markdown(blocks) -> str:
    out = []
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + blk[1])
        elif kind == "p":
            out.append(blk[1])
        elif kind == "ul":
            out.append("\n".join(f"- {x}" for x in blk[1]))
        elif kind == "table":
            out.append(_md_table(blk[1], blk[2]))
        elif kind == "fig":
            out.append(f"![{blk[2]}]({blk[1]})\n\n*{blk[2]}*")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escape, then the markdown marks the report uses: **bold**, `code` and *italics*."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"`(.+?)`", r"<code>\1</code>", t)
    t = re.sub(r"(?<![\w*])\*(\S.*?)\*(?![\w*])", r"<i>\1</i>", t)
    return t


def to_html(blocks, root: Path) -> str:
    body = []
    for blk in blocks:
        kind = blk[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{_inline(blk[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline(blk[1])}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in blk[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in blk[1])
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r) + "</tr>" for r in blk[2]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "fig":
            data = base64.b64encode((root / blk[1]).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(blk[2])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{_inline(blk[2])}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45;"
        "padding:0 1em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;vertical-align:top}img{max-width:100%}figure{margin:1.5em 0}"
        "figcaption{font-style:italic;color:#444}code{background:#f3f3f3}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Reproduction report</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
