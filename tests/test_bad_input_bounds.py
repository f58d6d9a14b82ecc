"""Bad-input catalogue, part 4: every size bounded before work, one line for every bad value.

The cases of issue 23 that asked for time or memory without bound (``fa demo --steps 1e12``,
a plateau that cannot end, a 3.6-million-run spec, ``record_steps = "log:1000000000"``, TOML
nested 5000 deep, the API's ``fit(steps=10**18)``, ``h_monte_carlo(chunk=0)``, ...) and
those that raised raw exceptions (seeds of 2^64 or more, ``h_inf(order=0)``, ``lambda_min``
of an empty matrix, ``fit(steps=0)`` with ``delta_alignment``; a negative ``lam_min`` is kept
and documented: it predicts growth). The
CLI cases assert the one line, exit status 2 and that every file set up is unchanged; the
API cases one ConfigError line. The bounds are declared once in
``feedback_alignment.bounds.BOUNDS`` and docs/bounds.md's table is generated from them.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from _badinput import CONFIG, fa, refused
from feedback_alignment import TwoLayerEnsemble, theory
from feedback_alignment.bounds import BOUNDS, MAX_STEPS, markdown_table
from feedback_alignment.errors import ConfigError
from feedback_alignment.twolayer.data import linear_teacher, random_teacher
from feedback_alignment.twolayer.monitor import Plateau

pytestmark = pytest.mark.usefixtures("one_thread")
DOCS = Path(__file__).resolve().parents[1] / "docs"

X = np.random.default_rng(0).standard_normal((6, 5))
Y = np.random.default_rng(1).standard_normal(6)


def one_line(exc_info, *needles):
    text = str(exc_info.value)
    assert "\n" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


# ---------------------------------------------------------------- fa demo
@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--steps", "1e12"], "--steps = 1e12 is not accepted; accepted: an integer in [1, 1e6]"),
        (["--steps", "1000000000000"], "--steps = 1000000000000 is not accepted"),
        (["--steps", "0"], "--steps = 0 is not accepted; accepted: an integer in [1, 1e6]"),
        (["--steps", "2.5"], "--steps = 2.5 is not accepted"),
        (["--steps", "abc"], "--steps = abc is not accepted"),
        (["--reps", "1e8"], "--reps = 1e8 is not accepted; accepted: an integer in [1, 1000]"),
        (["--seed", "1e23"], "--seed = 1e23 is not accepted; accepted: an integer in [0, 2^64"),
        (["--seed", "-1"], "--seed = -1 is not accepted"),
        (["--seed", str(2**64 - 1)], "the demo's networks take seeds up to --seed + 1007"),
        (["--stepz", "3"], "unrecognized arguments: --stepz 3"),
    ],
)
def test_demo_sizes(tmp_path, capsys, argv, needle):
    line = refused(capsys, tmp_path, "demo", *argv, "--out", tmp_path / "o", match=needle)
    assert line.startswith("fa demo: error: ") or line.startswith("fa: error: ")
    assert not (tmp_path / "o").exists()


def test_demo_names_the_cost_of_a_size_beyond_its_bound(tmp_path, capsys):
    line = refused(capsys, tmp_path, "demo", "--steps", "1e12", match="(beyond: about an hour")
    assert line.endswith("the default 3000 takes seconds)")


def test_bad_command_line_is_one_line(tmp_path, capsys):
    refused(capsys, tmp_path, "sweep", match="the following arguments are required: spec")
    refused(capsys, tmp_path, "nonsense", match="invalid choice: 'nonsense'")


# ---------------------------------------------------------------- fa sweep specs
SPEC = """
[study]
name = "b"
{study}
[fixed]
n = 4
d = 3
{fixed}
"""


def _sweep(tmp_path, capsys, text, needle, name="spec.toml"):
    spec = tmp_path / name
    spec.write_text(text)
    store = tmp_path / "s.sqlite"
    line = refused(capsys, tmp_path, "sweep", spec, "--store", store, "--dry-run", match=needle)
    assert not store.exists()
    return line


@pytest.mark.parametrize(
    "fixed,needle",
    [
        (
            'stop = "plateau"\ntol = 0.0\ncheck_every = 1',
            'spec: stop = "plateau" with tol = 0 never ends',
        ),
        (
            'record_steps = "log:1000000000"',
            'spec key fixed.record_steps = "log:1000000000" is not accepted',
        ),
        ("record_steps = [1000000000000]", "fixed.record_steps = [1000000000000] is not accepted"),
        (
            'stop = "paper"\nrecord_every = 10',
            "spec: the fit would record up to 100000002 rows (record_every = 10 over up to "
            "1000000000 steps); accepted: at most 2^20 rows",
        ),
        ("steps = 10000000\nrecord_every = 1", "would record up to 10000002 rows"),
        (
            'steps = 0\nmetrics = ["mse", "delta_alignment"]',
            "spec: metric delta_alignment, cos(beta - beta(0), b), is undefined after steps = 0",
        ),
        ("check_every = 10000000000", "fixed.check_every = 10000000000 is not accepted"),
    ],
)
def test_spec_unbounded_work_refused_under_dry_run(tmp_path, capsys, fixed, needle):
    _sweep(tmp_path, capsys, SPEC.format(study="", fixed=fixed), needle)


def test_spec_plateau_with_tol_and_no_cap_is_planned(tmp_path, capsys):
    """A plateau that can end (tol > 0) plans without a cap: the bound 1e9 caps it."""
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.format(study="", fixed='stop = "plateau"\ntol = 1e-3'))
    rc, lines = fa(capsys, "sweep", spec, "--store", tmp_path / "s.sqlite", "--dry-run")
    assert (rc, lines) == (0, [])


def test_spec_of_millions_of_runs_refused_before_expanding(tmp_path, capsys):
    """The issue's 3.6 million runs (here 1200 x 3000 values): counted, not planned."""
    grid = "[grid]\nlam = [{}]\nlr = [{}]\n".format(
        ", ".join(f"{i / 1e4}" for i in range(1200)),
        ", ".join(f"{(i + 1) / 1e6}" for i in range(3000)),
    )
    t0 = time.perf_counter()
    line = _sweep(
        tmp_path,
        capsys,
        SPEC.format(study="", fixed="steps = 5") + grid,
        "spec expands to 3600000 runs (grid and zips 1200 x 3000, 1 repetition(s)); "
        "accepted: at most 1e5 runs",
    )
    assert time.perf_counter() - t0 < 30, "refused before planning"
    assert "(beyond: more than a few seconds to plan" in line


def test_spec_repetitions_count_toward_the_runs(tmp_path, capsys):
    _sweep(
        tmp_path,
        capsys,
        SPEC.format(study="repetitions = 1000", fixed="") + f"[grid]\np = {list(range(1, 102))}",
        "spec expands to 101000 runs (grid and zips 101, 1000 repetition(s))",
    )


def test_spec_file_of_megabytes_refused_before_reading(tmp_path, capsys):
    big = "# " + "x" * 100 + "\n"
    text = SPEC.format(study="", fixed="") + big * 12_000
    _sweep(tmp_path, capsys, text, "MB; accepted: at most 1 MB (specs and configs are a few KB)")


@pytest.mark.parametrize(
    "nest,needle",
    [
        ("record_steps = " + "[" * 5000 + "]" * 5000, "nests arrays and tables 5000 deep"),
        ("x = " + "{a = " * 3000 + "1" + "}" * 3000, "nests arrays and tables 3000 deep"),
        (".".join(["a"] * 2000) + " = 1", "nests arrays and tables 2000 deep"),
    ],
)
def test_spec_nested_5000_deep_is_one_line(tmp_path, capsys, nest, needle):
    line = _sweep(tmp_path, capsys, SPEC.format(study="", fixed=nest), needle)
    assert line.endswith("accepted: at most 32 (a spec or config nests 4 deep)")


def test_nesting_counts_brackets_outside_strings_and_comments():
    from feedback_alignment.tomlfile import nesting

    assert nesting("a = \"[[[[\"\nb = '{{{{'\n# [[[[\nc = [[1], [2]]\n") == 2
    assert nesting('a = """\n[[[[ "" \\""" ]]]]"""\n[[zip]]\n') == 2
    assert nesting("a = '''[[[['''\n") == 0


def test_spec_seeds_beyond_64_bits():
    from feedback_alignment.experiments.spec import parse_spec

    with pytest.raises(ConfigError) as err:
        parse_spec({"study": {"seeds": [2**70]}})
    one_line(err, "spec key study.seeds = [1180591620717411303424] is not accepted")
    with pytest.raises(ConfigError) as err:
        parse_spec({"study": {"seed": 2**64}})
    one_line(err, "spec key study.seed = 18446744073709551616 is not accepted")
    assert parse_spec({"study": {"seeds": [2**64 - 1]}}).runs()[0].seed == 2**64 - 1


# ---------------------------------------------------------------- fa train configs
def test_train_config_nested_5000_deep(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG + "[rule.options]\nx = " + "[" * 5000 + "]" * 5000 + "\n")
    refused(capsys, tmp_path, "train", cfg, match="nests arrays and tables 5000 deep")


def test_train_set_value_nested_5000_deep(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    deep = "[" * 5000 + "]" * 5000
    line = refused(
        capsys, tmp_path, "train", cfg, "--set", f"train.milestones={deep}", match="5000 deep"
    )
    assert line.startswith("fa train: error: --set value '[[[[")


def test_train_config_of_megabytes(tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG + ("# " + "x" * 100 + "\n") * 12_000)
    refused(capsys, tmp_path, "train", cfg, match="MB; accepted: at most 1 MB (specs and configs")


# ---------------------------------------------------------------- the API
def _fit_error(**kwargs):
    ens = TwoLayerEnsemble(5, 4, seeds=[0])
    with pytest.raises(ConfigError) as err:
        ens.fit(X, Y, **kwargs)
    return err


def test_fit_steps_beyond_the_bound():
    one_line(
        _fit_error(steps=10**18),
        "steps = 1000000000000000000 is not accepted; accepted: an integer in [0, 1e9]",
        "(beyond: weeks of work",
    )


def test_fit_steps_zero_with_delta_alignment():
    """It returned NaN for delta_alignment; now refused, and without it steps=0 works."""
    one_line(
        _fit_error(steps=0, metrics=("mse", "delta_alignment")),
        "metric delta_alignment, cos(beta - beta(0), b), is undefined after steps = 0",
    )
    h = TwoLayerEnsemble(5, 4, seeds=[0]).fit(X, Y, steps=0, metrics=("mse", "alignment"))
    assert np.isfinite(h.final["mse"]).all() and np.isfinite(h.final["alignment"]).all()


def test_plateau_that_cannot_end_and_its_default_cap():
    with pytest.raises(ConfigError) as err:
        Plateau(0, 1, 0.0)
    one_line(err, "Plateau tol = 0 never ends", "accepted: tol > 0, or a max_steps cap")
    assert Plateau(0, 1, 0.0, max_steps=10).max_steps == 10
    for bad, needle in [
        ({"min_steps": 10**12}, "Plateau min_steps = 1000000000000 is not accepted"),
        ({"min_steps": 0, "max_steps": 10**12}, "Plateau max_steps = 1000000000000"),
        (
            {"min_steps": 0, "check_every": 0},
            "Plateau check_every = 0 is not accepted; accepted: an integer >= 1",
        ),
        (
            {"min_steps": 0, "tol": float("nan")},
            "Plateau tol = nan is not accepted; accepted: a finite number >= 0",
        ),
    ]:
        with pytest.raises(ConfigError) as err:
            Plateau(**bad)
        one_line(err, needle)
    # no cap given: the fit stops at the bound on steps, never runs without end
    from feedback_alignment.twolayer.options import FitOptions

    ens = TwoLayerEnsemble(5, 4, seeds=[0])
    o = FitOptions(ens, X, Y, lr=0.01, stop=Plateau(0, 10, 1e-3), metrics=("mse",))
    assert o.max_steps == MAX_STEPS


def test_fit_records_bounded():
    one_line(
        _fit_error(stop=Plateau(0, 10, 1e-3), record_every=1),
        "the fit would record up to 1000000002 rows (record_every = 1 over up to 1000000000 "
        "steps); accepted: at most 2^20 rows",
    )
    one_line(
        _fit_error(steps=10**7, record_steps=range(2_000_000)),
        "the fit would record up to 2000001 rows (2000000 record_steps)",
    )
    # steps past the end are never recorded, so they cost nothing
    h = TwoLayerEnsemble(5, 4, seeds=[0]).fit(X, Y, steps=3, record_steps=range(2_000_000))
    assert h.steps.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda: theory.h_monte_carlo(X, samples=10, chunk=0), "chunk = 0 is not accepted"),
        (lambda: theory.h_monte_carlo(X, samples=10**12), "samples = 1000000000000 is not"),
        (lambda: theory.g_bp_monte_carlo(X, samples=10, chunk=10**9), "chunk = 1000000000"),
        (lambda: theory.h_inf(X, "tanh", levels=10**9), "levels = 1000000000 is not accepted"),
        (lambda: theory.h_inf(X, "tanh", order=0), "order = 0 is not accepted"),
        (lambda: theory.g_inf_bp(X, "tanh", order=10**6), "order = 1000000 is not accepted"),
        (lambda: theory.lambda_min(np.zeros((0, 0))), "kernel must hold at least one entry"),
        (lambda: theory.lambda_min(np.zeros((3, 0, 0))), "got shape (3, 0, 0)"),
        (
            lambda: theory.predict_loss_curve(np.eye(6), Y, np.zeros(6), 1e-2, steps=10**12),
            "steps = 1000000000000 is not accepted",
        ),
        (
            lambda: theory.predict_loss_curve(
                np.eye(6), Y, np.zeros(6), 1e-2, steps=10**9, errors=True
            ),
            "of memory, more than the",
        ),
        (lambda: linear_teacher(n=10**7, d=10**7), "linear_teacher(n=10000000, d=10000000) needs"),
        (lambda: linear_teacher(n=10**9, d=1), "n = 1000000000 is not accepted"),
        (lambda: random_teacher(n=10, d=10**6, p=10**6), "needs 8 TB of memory"),
        (lambda: linear_teacher(n=3, d=2, seed=2**64), "seed = 18446744073709551616 is not"),
        (lambda: TwoLayerEnsemble(5, 4, seeds=[2**70]), "seed = 1180591620717411303424 is not"),
        (lambda: TwoLayerEnsemble(5, 4, seeds=2**64), "accepted: an integer in [0, 2^64 - 1]"),
    ],
)
def test_api_sizes_and_values(call, needle):
    with pytest.raises(ConfigError) as err:
        call()
    one_line(err, needle)


def test_negative_lam_min_predicts_growth():
    """Not refused: FA's H(0) + G(0) has negative eigenvalues (E2 meets them), and the
    negative rate is the linearised prediction that the loss grows."""
    import math

    assert theory.predicted_rate(-1.0, 0.5, "sse") == pytest.approx(-2 * math.log(1.5))
    assert theory.steps_to_reduce(10, -1.0, 0.5, "sse") == math.inf
    with pytest.raises(ConfigError) as err:
        theory.predicted_rate(float("nan"), 0.5, "sse")
    one_line(err, "lam_min contains 1 NaN/inf value(s)")


def test_seed_at_the_bound_is_accepted():
    X1, _ = linear_teacher(3, 2, seed=2**64 - 1)
    assert TwoLayerEnsemble(2, 3, seeds=[2**64 - 1]).W.shape == (1, 3, 2)
    assert X1.shape == (3, 2)


# ---------------------------------------------------------------- the declaration
def test_bounds_table_in_the_docs_is_generated_from_the_declaration():
    """docs/bounds.md's table is markdown_table() of BOUNDS to the letter; after changing a
    bound, paste ``feedback_alignment.bounds.markdown_table()`` below the marker."""
    marker = "<!-- generated: feedback_alignment.bounds.markdown_table() -->\n"
    text = (DOCS / "bounds.md").read_text()
    assert text.count(marker) == 1
    assert text.split(marker)[1].split("\n\n")[0] + "\n" == markdown_table()
    assert all(f"| `{name}` |" in text for name in BOUNDS)
