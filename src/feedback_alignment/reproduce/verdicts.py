"""Verdicts on the paper's claims, computed from the long-form rows with stated criteria.

Every verdict is one of ``holds``, ``not shown at this profile`` (the trend points the
claimed way or is absent but the data cannot settle it) or ``does not hold`` (the data
significantly contradict the claim), with the numbers and the criterion that produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from .figures import group
from .profiles import ACTIVATIONS, E3_LAMS, LAMS
from .published import AGREE_RULE, PAPER_REPS, compare

HOLDS, NOT_SHOWN, FAILS = "holds", "not shown at this profile", "does not hold"
INFO_AGREES, INFO_DEVIATES = "agrees", "deviates"

# every threshold, defined once: the criteria's text and the code both read these
C1_FALL = 100  # 1a: the MSE must fall at least this many times over the run
C1_TAIL = 0.5  # 1a: the exponential rate is fitted over this last fraction of the steps
C1_RATE_LO, C1_RATE_HI = 0.67, 1.5  # 1b: measured/predicted rate counted as agreeing
C1_FLOOR_RATIO = 3  # 1c: lambda > 0 ends at least this many times above lambda = 0
C1_LEVEL_CHANGE = 0.10  # 1c: most relative change over the last C1_LEVEL_TAIL of the steps
C1_LEVEL_TAIL = 0.25  # 1c: ... the last fraction of the steps where "levelled off" is judged
C1_NO_FLOOR_GAP = 10  # 1c: lambda = 0 below the settle level by this factor ...
C1_NO_FLOOR_RATIO = 2  # ... while lambda > 0 ends within this factor of lambda = 0
C2_T = 2  # 2a: |t| of the slope of alignment on log2 p
C2B_KEEP = 0.5  # 2b: the widest width keeps at least this fraction of the narrowest's
C2B_T = 2  # 2b: t of (widest - KEEP x narrowest) needed either way
C2B_ZERO_SE = 3  # 2b: the widest width's mean above zero by this many standard errors
C2C_T = 3  # 2c: t of the paired difference (largest lambda - lambda 0)
C2C_RHO = 0.8  # 2c: mean Spearman rho of alignment against lambda over widths
C2D_SHARE = 0.9  # 2d: share of cells that must agree with the published values
C3A_T = 3  # 3a: t of the alignment difference
C3A_WINDOW = 0.1  # 3a: the alignment is averaged over this last fraction of the steps
C3B_T = 2  # 3b: t of the test-accuracy difference
C4_WINDOW = 0.1  # 4a, 4b: the alignment is averaged over this last fraction of the steps
C4_MARGIN = 0.05  # 4a, 4b: ... and must differ from lambda = 0's by at least this much
C4_T = 3  # 4a, 4b: ... and by this many standard errors


@dataclass
class Verdict:
    claim: str  # e.g. "1a"
    statement: str
    criterion: str
    verdict: str
    evidence: list[str] = field(default_factory=list)  # one line per activation / case

    def as_dict(self) -> dict:
        return asdict(self)


def _combine(vs: list[str]) -> str:
    """One case that does not hold decides; all must hold for 'holds'."""
    if FAILS in vs:
        return FAILS
    if NOT_SHOWN in vs or not vs:
        return NOT_SHOWN
    return HOLDS


def _combine_info(vs: list[str]) -> str:
    """Informational verdicts: 'agrees' only if there are cases and every one agrees."""
    return INFO_AGREES if vs and all(x == INFO_AGREES for x in vs) else INFO_DEVIATES


def _judge(v: Verdict, cases: list[tuple[str, str]], combine=_combine) -> Verdict:
    """Fill ``v`` from (outcome, evidence) pairs, one per activation or lambda."""
    v.evidence += [f"{text} -> {vd}" for vd, text in cases]
    v.verdict = combine([vd for vd, _ in cases])
    return v


def _outcome(holds: bool, fails: bool) -> str:
    """The verdict of one case from its two criteria, which never both apply."""
    return HOLDS if holds else FAILS if fails else NOT_SHOWN


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")


def _t(diff: float, se: float) -> float:
    """``diff`` in standard errors; +-inf (NaN for no difference) when there is no spread."""
    if se > 0:
        return diff / se
    with np.errstate(invalid="ignore"):  # inf * 0: no difference and no spread
        return np.inf * np.sign(diff)


def _e3_pairs() -> str:
    """E3's comparisons in words: "lambda = 0.1 vs 0 and lambda = 0.3 vs 0"."""
    return " and ".join(f"lambda = {lam:g} vs {E3_LAMS[0]:g}" for lam in E3_LAMS[1:])


# ------------------------------------------------------------------ E2 (claim 1)
def _per_rep_curves(rows, act, lam):
    g = group(rows, ("activation", "lam", "rep"), "mse")
    st = group(rows, ("activation", "lam", "rep"), "step")
    reps = sorted(k[2] for k in g if k[0] == act and k[1] == lam)
    return [(st[(act, lam, r)], g[(act, lam, r)]) for r in reps]


def claim1_convergence(rows) -> Verdict:
    v = Verdict(
        "1a",
        "Feedback alignment drives the training error to zero exponentially fast "
        "(lambda = 0, over-parameterised).",
        f"E2, lambda = 0: 'holds' if in every repetition the MSE falls at least {C1_FALL}-fold "
        "from step 0 to the last step and the least-squares slope of ln MSE over the last "
        f"{100 * C1_TAIL:g}% of training is negative (a positive exponential rate); 'does not "
        "hold' if the median rate is not positive (the loss stopped falling); otherwise 'not "
        f"shown at this profile' (falling, but too few steps to show a {C1_FALL}-fold fall).",
        NOT_SHOWN,
    )
    cases = []
    for act in ACTIVATIONS:
        curves = _per_rep_curves(rows, act, 0.0)
        if not curves:
            continue
        falls, rates = [], []
        for s, m in curves:
            falls.append(m[0] / max(m[-1], 1e-300))
            tail = s >= s[-1] * (1 - C1_TAIL)
            logm = np.log(np.maximum(m[tail], 1e-300))
            rates.append(-np.polyfit(s[tail].astype(float), logm, 1)[0])
        falls, rates = np.array(falls), np.array(rates)
        vd = _outcome(
            bool((falls >= C1_FALL).all() and (rates > 0).all()), bool(np.median(rates) <= 0)
        )
        text = (
            f"{act}: MSE fell {np.min(falls):.3g}x to {np.max(falls):.3g}x over "
            f"{int(curves[0][0][-1])} steps ({len(curves)} reps); rate over the last "
            f"{100 * C1_TAIL:g}% {rates.mean():.3g}/step (min {rates.min():.3g})"
        )
        cases.append((vd, text))
    return _judge(v, cases)


def claim1_theory(rows, prediction, kernels) -> Verdict:
    v = Verdict(
        "1b",
        "The loss follows the linearised (kernel) dynamics with K = H(0) + G(0), whose rate is "
        "set by lambda_min (lambda = 0).",
        "E2, lambda = 0: measured vs predicted MSE at the last step and the ratio of fitted "
        "rates (least-squares slope of ln MSE, whole run). 'agrees' where the mean rate ratio "
        f"lies in [{C1_RATE_LO}, {C1_RATE_HI}], else 'deviates' (finite-width drift of G(t); "
        "see docs/theory.md). "
        "Informational: the paper's claim is about the limit p -> infinity.",
        INFO_AGREES,
    )
    meas = group(rows, ("activation", "lam", "rep"), "mse")
    steps = group(rows, ("activation", "lam", "rep"), "step")
    pred = group(prediction, ("activation", "lam", "rep"), "predicted_mse")
    lmin = group(kernels, ("activation", "lam"), "lambda_min")
    cases = []
    for act in ACTIVATIONS:
        keys = sorted(k for k in meas if k[0] == act and k[1] == 0.0)
        if not keys:
            continue
        ratios, end_ratio, grows = [], [], 0
        for k in keys:
            s = steps[k].astype(float)
            m, p = np.maximum(meas[k], 1e-300), np.maximum(pred[k], 1e-300)
            rm = -np.polyfit(s, np.log(m), 1)[0]
            rp = -np.polyfit(s, np.log(p), 1)[0]
            ratios.append(rm / rp if rp > 0 else np.nan)
            grows += int(rp <= 0)
            end_ratio.append(m[-1] / p[-1])
        ratios = np.array(ratios)
        rr = float(np.nanmean(ratios)) if np.isfinite(ratios).any() else float("nan")
        rate_txt = (
            f"measured/predicted rate {rr:.3g} (reps {np.nanmin(ratios):.3g}.."
            f"{np.nanmax(ratios):.3g})"
            if np.isfinite(rr)
            else "no decaying prediction to compare"
        )
        if grows:
            rate_txt += (
                f"; in {grows} of {len(keys)} reps H(0)+G(0) is not positive definite and the "
                "predicted loss grows: the run is not in the lazy regime at this width"
            )
        text = (
            f"{act}: lambda_min(H(0)+G(0)) = {lmin[(act, 0.0)].mean():.3g}; {rate_txt}; "
            f"final MSE measured/predicted {np.exp(np.mean(np.log(end_ratio))):.3g} "
            "(geometric mean)"
        )
        cases.append((INFO_AGREES if C1_RATE_LO <= rr <= C1_RATE_HI else INFO_DEVIATES, text))
    return _judge(v, cases, _combine_info)


def claim1_settle(rows, kernels) -> Verdict:
    v = Verdict(
        "1c",
        "A constant lambda > 0 makes the loss level off instead of reaching zero, near the level "
        "the linearised dynamics predict.",
        f"E2, every lambda > 0: 'holds' if the final mean MSE is at least {C1_FLOOR_RATIO}x the "
        "lambda = 0 final mean MSE and changed by less than "
        f"{100 * C1_LEVEL_CHANGE:g}% over the last {100 * C1_LEVEL_TAIL:g}% of training "
        "(levelled off); 'does "
        f"not hold' if the lambda = 0 loss has fallen {C1_NO_FLOOR_GAP}x below this lambda's "
        f"predicted settle level yet this lambda ends within {C1_NO_FLOOR_RATIO}x of lambda = 0 "
        "(no floor); "
        "otherwise 'not shown at this profile' (too few steps to reach the floor). The ratio of "
        "the final MSE to the predicted settle level is reported (geometric mean over reps).",
        NOT_SHOWN,
    )
    meas = group(rows, ("activation", "lam", "step"), "mse")
    settle = group(kernels, ("activation", "lam"), "settle_mse")
    final = group(kernels, ("activation", "lam"), "measured_final_mse")
    cases = []
    for act in ACTIVATIONS:
        steps = np.array(sorted({k[2] for k in meas if k[0] == act}))
        if steps.size == 0:
            continue
        T = steps[-1]
        q = steps[np.argmin(np.abs(steps - (1 - C1_LEVEL_TAIL) * T))]
        base = meas[(act, 0.0, T)].mean()
        for lam in LAMS[act][1:]:
            end = meas[(act, lam, T)].mean()
            change = abs(end / meas[(act, lam, q)].mean() - 1)
            level = settle[(act, lam)].mean()
            vd = _outcome(
                end >= C1_FLOOR_RATIO * base and change < C1_LEVEL_CHANGE,
                base < level / C1_NO_FLOOR_GAP and end < C1_NO_FLOOR_RATIO * base,
            )
            ratio = np.exp(np.mean(np.log(final[(act, lam)] / settle[(act, lam)])))
            text = (
                f"{act}, lambda = {lam:g}: final MSE {end:.3g} vs {base:.3g} at lambda = 0 "
                f"({end / base:.3g}x); change over the last {100 * C1_LEVEL_TAIL:g}% "
                f"{100 * change:.2g}%; predicted settle level {level:.3g}, "
                f"measured/predicted {ratio:.3g}"
            )
            cases.append((vd, text))
    return _judge(v, cases)


# ------------------------------------------------------------------ E1 (claim 2)
def claim2_width(rows) -> Verdict:
    v = Verdict(
        "2a",
        "Without regularisation (lambda = 0) the alignment cos(beta, b) decreases as the width p "
        "grows (towards zero).",
        "E1, lambda = 0: least-squares slope of alignment (every repetition) on log2 p; 'holds' "
        f"if slope < 0 with t = slope/SE < -{C2_T}, 'does not hold' if t > {C2_T}, else 'not "
        "shown'. "
        "Spearman rho of the mean alignment against p is reported.",
        NOT_SHOWN,
    )
    cases = []
    for act in ACTIVATIONS:
        pts = [(r["p"], r["alignment"]) for r in rows if r["activation"] == act and r["lam"] == 0]
        if not pts:
            continue
        x = np.log2([p for p, _ in pts])
        y = np.array([a for _, a in pts])
        if len(set(x)) < 2:
            cases.append((NOT_SHOWN, f"{act}: one width only"))
            continue
        res = stats.linregress(x, y)
        t = _t(res.slope, res.stderr)
        ps = sorted({p for p, _ in pts})
        means = [np.mean([a for p, a in pts if p == q]) for q in ps]
        rho = stats.spearmanr(ps, means).statistic if len(ps) > 2 else np.sign(means[-1] - means[0])
        text = (
            f"{act}: mean alignment {means[0]:.3g} at p = {ps[0]} -> {means[-1]:.3g} at p = "
            f"{ps[-1]}; slope {res.slope:.3g} per doubling (t = {t:.3g}); Spearman rho "
            f"{rho:.3g}"
        )
        cases.append((_outcome(t < -C2_T, t > C2_T), text))
    return _judge(v, cases)


def _widths(rows):
    """(activation, its widths in ascending order) for every activation E1 ran."""
    for act in ACTIVATIONS:
        ps = sorted({r["p"] for r in rows if r["activation"] == act})
        if ps:
            yield act, ps


def _paired(rows, act, p, lam):
    return {
        r["rep"]: r["alignment"]
        for r in rows
        if r["activation"] == act and r["p"] == p and r["lam"] == lam
    }


def claim2_bounded(rows) -> Verdict:
    v = Verdict(
        "2b",
        "With lambda > 0 the alignment stays bounded away from zero as p grows (it does not "
        "fall towards zero: the paper's lines stay flat or rise).",
        "E1, every lambda > 0, narrowest vs widest width: 'holds' if the widest width keeps at "
        f"least {C2B_KEEP:g} of the narrowest width's mean alignment with t > {C2B_T} (t of "
        f"mean(widest) - {C2B_KEEP:g} mean(narrowest), independent repetitions) and its mean is "
        f"{C2B_ZERO_SE} standard errors above zero; 'does not hold' if t < -{C2B_T} (the "
        "alignment falls towards zero) or the widest mean is not above zero; otherwise 'not "
        "shown at this profile' (one width only, or too few repetitions to tell).",
        NOT_SHOWN,
    )
    cases = []
    for act, ps in _widths(rows):
        for lam in LAMS[act][1:]:
            wide = np.array(list(_paired(rows, act, ps[-1], lam).values()))
            narrow = np.array(list(_paired(rows, act, ps[0], lam).values()))
            if len(ps) < 2 or wide.size == 0 or narrow.size == 0:
                cases.append((NOT_SHOWN, f"{act}, lambda = {lam:g}: one width only"))
                continue
            cases.append(_kept(f"{act}, lambda = {lam:g}", narrow, wide, ps[0], ps[-1]))
    return _judge(v, cases)


def _kept(label: str, narrow: np.ndarray, wide: np.ndarray, p0: int, p1: int) -> tuple[str, str]:
    """(outcome, evidence) of claim 2b's test on the alignments at the narrowest width
    ``p0`` and the widest ``p1``: does the widest keep at least C2B_KEEP of the narrowest's
    mean, above zero (E1 and E5)?"""
    d = wide.mean() - C2B_KEEP * narrow.mean()
    se_w, se_n = _se(wide), _se(narrow)
    t = _t(d, float(np.sqrt(se_w**2 + (C2B_KEEP * se_n) ** 2)))
    vd = NOT_SHOWN
    if not np.isnan(t):
        vd = _outcome(
            t > C2B_T and wide.mean() > C2B_ZERO_SE * se_w,
            t < -C2B_T or wide.mean() <= 0,
        )
    text = (
        f"{label}: alignment {narrow.mean():.3g} at p = {p0} -> {wide.mean():.3g} +- "
        f"{se_w:.2g} (SE) at p = {p1} (kept {wide.mean() / narrow.mean():.2f}; t = {t:.3g})"
    )
    return vd, text


def claim2_published(rows) -> Verdict:
    v = Verdict(
        "2d",
        f"E1 agrees with the published values (the authors' means over {PAPER_REPS} repetitions).",
        f"E1, every cell the paper reports: agree if {AGREE_RULE}. 'holds' if at least "
        f"{100 * C2D_SHARE:g}% of the cells agree, 'does not hold' if fewer do, 'not shown at "
        "this profile' if no cell of the profile is among the published ones.",
        NOT_SHOWN,
    )
    cells = compare(rows)
    if not cells:
        v.evidence.append("no cell of this profile is among the published ones")
        return v
    n = sum(c.agree for c in cells)
    v.verdict = HOLDS if n >= C2D_SHARE * len(cells) else FAILS
    v.evidence.append(f"{n} of {len(cells)} cells agree ({100 * n / len(cells):.0f}%)")
    for c in cells:
        if not c.agree:
            v.evidence.append(
                f"disagrees: {c.activation}, lambda = {c.lam:g}, p = {c.p}: {c.mean:.3f} vs "
                f"{c.paper_mean:.3f} (difference {c.diff:+.3f}, tolerance {c.tolerance:.3f})"
            )
    return v


def claim2_lambda(rows) -> Verdict:
    v = Verdict(
        "2c",
        "Higher lambda, higher alignment.",
        "E1, at every width: the mean alignment at the largest lambda exceeds that at lambda = 0 "
        f"by {C2C_T} standard errors of the paired difference, and the Spearman rho of mean "
        f"alignment against lambda averages >= {C2C_RHO} over widths. 'does not hold' if the "
        f"largest lambda is significantly below lambda = 0 at some width (t < -{C2C_T}).",
        NOT_SHOWN,
    )
    cases = []
    for act, ps in _widths(rows):
        lams = LAMS[act]
        rhos, ts = [], []
        for p in ps:
            means = [np.mean(list(_paired(rows, act, p, lam).values())) for lam in lams]
            rhos.append(stats.spearmanr(lams, means).statistic)
            top, base = _paired(rows, act, p, lams[-1]), _paired(rows, act, p, 0.0)
            d = np.array([top[r] - base[r] for r in sorted(set(top) & set(base))])
            ts.append(_t(d.mean(), _se(d)))
        rho = float(np.mean(rhos))
        text = (
            f"{act}: mean Spearman rho(lambda, alignment) {rho:.3g} over widths {ps}; "
            f"t of (largest lambda - lambda 0) per width {', '.join(f'{t:.3g}' for t in ts)}"
        )
        cases.append(
            (_outcome(all(t > C2C_T for t in ts) and rho >= C2C_RHO, min(ts) < -C2C_T), text)
        )
    return _judge(v, cases)


# ------------------------------------------------------------------ E3 (claim 3)
def _e3_window(rows, key, lam):
    """Per rep: ``key`` over the last C3A_WINDOW of the steps (alignment) or at the last
    evaluation (test accuracy)."""
    by = group(rows, ("lam", "rep"), key)
    st = group(rows, ("lam", "rep"), "step") if key == "alignment" else None
    out = {}
    for (lm, rep), vals in by.items():
        if lm != lam:
            continue
        if st is not None:
            s = st[(lm, rep)]
            out[rep] = vals[s >= s.max() * (1 - C3A_WINDOW)]
        else:
            out[rep] = vals[-1:]
    return out


def claim3_alignment(rows) -> Verdict:
    v = Verdict(
        "3a",
        "On MNIST (SGD, cross-entropy) regularisation raises the alignment of the hidden-layer "
        "error signals.",
        f"E3: mean hidden-error alignment over the last {100 * C3A_WINDOW:g}% of steps, "
        f"{_e3_pairs()}; 'holds' if both differences exceed {C3A_T} standard errors (across "
        "repetitions when there are >= 2, otherwise across the steps of the window, which "
        f"understates the error), 'does not hold' if a difference is below -{C3A_T} SE.",
        NOT_SHOWN,
    )
    base = _e3_window(rows, "alignment", E3_LAMS[0])
    if not base:
        return v
    cases = []
    for lam in E3_LAMS[1:]:
        top = _e3_window(rows, "alignment", lam)
        reps = sorted(set(top) & set(base))
        if len(reps) >= 2:
            d = np.array([top[r].mean() - base[r].mean() for r in reps])
        else:
            d = top[reps[0]] - base[reps[0]]
        t = _t(d.mean(), _se(d))
        text = (
            f"lambda = {lam:g}: alignment {np.mean([top[r].mean() for r in reps]):.3g} vs "
            f"{np.mean([base[r].mean() for r in reps]):.3g} at lambda = 0 (difference "
            f"{d.mean():.3g}, t = {t:.3g}, {len(reps)} rep(s))"
        )
        cases.append((_outcome(t > C3A_T, t < -C3A_T), text))
    return _judge(v, cases)


def claim3_accuracy(rows, n_test: int) -> Verdict:
    v = Verdict(
        "3b",
        "On MNIST regularisation raises test accuracy.",
        f"E3: final test accuracy, {_e3_pairs()}, averaged over repetitions; "
        f"'holds' if both gains exceed {C3B_T} standard errors (binomial error of each accuracy "
        "on the test set, combined, divided by sqrt(reps)), 'does not hold' if a difference is "
        f"below -{C3B_T} SE, else 'not shown at this profile'.",
        NOT_SHOWN,
    )
    base = _e3_window(rows, "test_accuracy", E3_LAMS[0])
    if not base or n_test < 1:
        return v
    cases = []
    for lam in E3_LAMS[1:]:
        top = _e3_window(rows, "test_accuracy", lam)
        reps = sorted(set(top) & set(base))
        a1 = float(np.mean([top[r][-1] for r in reps]))
        a0 = float(np.mean([base[r][-1] for r in reps]))
        t = _t(a1 - a0, np.sqrt((a1 * (1 - a1) + a0 * (1 - a0)) / n_test / len(reps)))
        text = (
            f"lambda = {lam:g}: test accuracy {a1:.4f} vs {a0:.4f} at lambda = 0 "
            f"(difference {a1 - a0:+.4f}, t = {t:.3g}, {len(reps)} rep(s), {n_test} test "
            "samples)"
        )
        cases.append((_outcome(t > C3B_T, t < -C3B_T), text))
    return _judge(v, cases)


# ------------------------------------------------------------------ E4 (the authors' code)
def claim4_alignment(rows, layer: str) -> Verdict:
    """4a (``fc3``, the output layer) or 4b (``fc2``): lambda raises the layer's
    error-signal alignment in the authors' three-layer network."""
    which = {"fc3": ("4a", "the output layer's"), "fc2": ("4b", "layer 2's")}
    claim, words = which[layer]
    v = Verdict(
        claim,
        f"In the authors' three-layer MNIST network (E4) weight decay on layers 2 and 3 raises "
        f"{words} error-signal alignment"
        + (" (the authors recorded only the output layer: a new measurement)." if layer == "fc2"
           else "."),
        f"E4, {layer}: mean error-signal alignment over the last {100 * C4_WINDOW:g}% of steps, "
        f"{_e3_pairs()}; 'holds' if both differences exceed {C4_MARGIN:g} and {C4_T} standard "
        "errors (across repetitions when there are >= 2, otherwise across the steps of the "
        f"window, which understates the error), 'does not hold' if a difference is below "
        f"-{C4_MARGIN:g} and -{C4_T} SE, else 'not shown at this profile'.",
        NOT_SHOWN,
    )  # fmt: skip
    key = f"{layer}_alignment"
    by = group(rows, ("lam", "rep"), key)
    st = group(rows, ("lam", "rep"), "step")

    def window(lam):
        out = {}
        for (lm, rep), vals in by.items():
            if lm == lam:
                s = st[(lm, rep)]
                out[rep] = vals[s >= s.max() * (1 - C4_WINDOW)]
        return out

    base = window(E3_LAMS[0])
    if not base:
        return v
    cases = []
    for lam in E3_LAMS[1:]:
        top = window(lam)
        reps = sorted(set(top) & set(base))
        if len(reps) >= 2:
            d = np.array([top[r].mean() - base[r].mean() for r in reps])
        else:
            d = top[reps[0]] - base[reps[0]]
        diff, t = float(d.mean()), _t(float(d.mean()), _se(d))
        text = (
            f"lambda = {lam:g}: {layer} alignment {np.mean([top[r].mean() for r in reps]):.3g} "
            f"vs {np.mean([base[r].mean() for r in reps]):.3g} at lambda = 0 (difference "
            f"{diff:.3g}, t = {t:.3g}, {len(reps)} rep(s))"
        )
        cases.append(
            (_outcome(diff > C4_MARGIN and t > C4_T, diff < -C4_MARGIN and t < -C4_T), text)
        )
    return _judge(v, cases)


# ------------------------------------------------------------------ E5 (dropout)
def claim5_dropout(rows, max_steps: int | None = None) -> list[Verdict]:
    """One verdict per activation (claims 5a-5d in E5's activation order): does dropout
    keep the alignment away from zero as p grows, as weight decay does (claim 2b)?"""
    from .profiles import DROPOUTS, E5_ACTIVATIONS

    out = []
    for i, act in enumerate(E5_ACTIVATIONS):
        v = Verdict(
            f"5{'abcd'[i]}",
            f"{act}: with dropout in place of weight decay (lambda = 0, dropout probability q > "
            "0) the alignment stays bounded away from zero as p grows, as it does with weight "
            "decay (claim 2b).",
            "E5, every q > 0, narrowest vs widest width, claim 2b's test: 'holds' if the "
            f"widest width keeps at least {C2B_KEEP:g} of the narrowest width's mean alignment "
            f"with t > {C2B_T} and its mean is {C2B_ZERO_SE} standard errors above zero; 'does "
            f"not hold' if t < -{C2B_T} or the widest mean is not above zero; otherwise 'not "
            "shown at this profile'. A q whose widest-width runs reached the profile's step cap "
            "(the alignment still moving by more than the rule's 1e-4 per check) cannot show a "
            "fall: 'does not hold' becomes 'not shown at this profile' there. All q > 0 must "
            "hold. The q = 0 line (no regulariser) is given for contrast.",
            NOT_SHOWN,
        )
        ps = sorted({r["p"] for r in rows if r["activation"] == act})
        if not ps:
            continue

        def align(p, q, act=act):
            return np.array(
                [
                    r["alignment"]
                    for r in rows
                    if (r["activation"], r["p"], r["dropout"]) == (act, p, q)
                ]
            )

        cases = []
        for q in DROPOUTS[act][1:]:
            narrow, wide = align(ps[0], q), align(ps[-1], q)
            if len(ps) < 2 or wide.size == 0 or narrow.size == 0:
                cases.append((NOT_SHOWN, f"q = {q:g}: one width only"))
                continue
            vd, text = _kept(f"q = {q:g}", narrow, wide, ps[0], ps[-1])
            capped = max_steps is not None and any(
                r["steps"] >= max_steps
                for r in rows
                if (r["activation"], r["p"], r["dropout"]) == (act, ps[-1], q)
            )
            if capped:
                text += f"; runs at p = {ps[-1]} capped at {max_steps} steps"
                vd = NOT_SHOWN if vd == FAILS else vd
            cases.append((vd, text))
        base_n, base_w = align(ps[0], 0.0), align(ps[-1], 0.0)
        if len(ps) > 1 and base_n.size and base_w.size:
            v.evidence.append(
                f"q = 0 (contrast): alignment {base_n.mean():.3g} at p = {ps[0]} -> "
                f"{base_w.mean():.3g} at p = {ps[-1]}"
            )
        out.append(_judge(v, cases))
    return out


def all_verdicts(results: dict) -> list[Verdict]:
    out = []
    if "E2" in results:
        r = results["E2"]
        out += [
            claim1_convergence(r["rows"]),
            claim1_theory(r["rows"], r["prediction"], r["kernels"]),
            claim1_settle(r["rows"], r["kernels"]),
        ]
    if "E1" in results:
        r = results["E1"]["rows"]
        out += [claim2_width(r), claim2_bounded(r), claim2_lambda(r), claim2_published(r)]
    if "E3" in results:
        r = results["E3"]
        out += [claim3_alignment(r["rows"]), claim3_accuracy(r["rows"], r["n_test"])]
    if "E4" in results:
        r = results["E4"]["rows"]
        out += [claim4_alignment(r, "fc3"), claim4_alignment(r, "fc2")]
    if "E5" in results:
        out += claim5_dropout(results["E5"]["rows"], results["E5"].get("max_steps"))
    return out
