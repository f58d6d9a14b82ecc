"""Study specs: expansion (grid, zip, repetitions, profiles), derived seeds, the planner's
packing, and one-line validation errors through the CLI (exit 2, nothing written)."""

import subprocess
import sys
import textwrap

import pytest

from feedback_alignment.activations import paper_lr
from feedback_alignment.errors import ConfigError
from feedback_alignment.experiments import load_spec, parse_spec, plan
from feedback_alignment.experiments.spec import derived_seeds

BASE = textwrap.dedent(
    """
    [study]
    name = "t"
    repetitions = 3
    seed = 7

    [fixed]
    n = 10
    d = 20
    steps = 50

    [grid]
    p = [16, 32]
    lam = [0.0, 0.1]

    [[zip]]
    activation = ["linear", "relu"]
    lr = [1e-3, 1e-2]

    [profiles.small]
    study = { repetitions = 1 }
    grid = { p = [8] }
    fixed = { lam = 0.5 }
    """
)


def _spec(tmp_path, text=BASE, profile=None):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return load_spec(path, profile)


def test_grid_zip_repetitions_expand(tmp_path):
    spec = _spec(tmp_path)
    runs = spec.runs()
    assert len(runs) == 2 * 2 * 2 * 3
    combos = {
        (r.config["p"], r.config["lam"], r.config["activation"], r.config["lr"]) for r in runs
    }
    assert len(combos) == 8
    # zipped fields vary together, never crossed
    assert {(r.config["activation"], r.config["lr"]) for r in runs} == {
        ("linear", 1e-3),
        ("relu", 1e-2),
    }
    assert all(r.config["n"] == 10 and r.config["steps"] == 50 for r in runs)
    # defaults filled in, ids unique and stable
    assert all(r.config["rule"] == "fa" and r.config["dtype"] == "float64" for r in runs)
    assert len({r.run_id for r in runs}) == len(runs)
    assert [r.run_id for r in _spec(tmp_path).runs()] == [r.run_id for r in runs]


def test_seeds_derive_from_repetition(tmp_path):
    runs = _spec(tmp_path).runs()
    by_rep = {}
    for r in runs:
        by_rep.setdefault(r.rep, set()).add(r.seed)
        assert (r.net_seed, r.data_seed) == derived_seeds(r.seed)
        assert r.net_seed != r.data_seed
    # seed_by = "repetition": every grid point of a repetition shares its seed (paired)
    assert all(len(s) == 1 for s in by_rep.values())
    assert len({s.pop() for s in by_rep.values()}) == 3
    other = parse_spec({"study": {"name": "t", "repetitions": 3, "seed": 8}}).runs()
    assert {r.seed for r in other}.isdisjoint({r.seed for r in runs})
    per_run = parse_spec(
        {"study": {"name": "t", "repetitions": 2, "seed_by": "run"}, "grid": {"p": [4, 8]}}
    ).runs()
    assert len({r.seed for r in per_run}) == 4
    explicit = parse_spec({"study": {"name": "t", "seeds": [11, 12]}}).runs()
    assert [r.seed for r in explicit] == [11, 12]


def test_paper_lr_default_per_activation():
    runs = parse_spec({"grid": {"activation": ["linear", "relu", "tanh"]}}).runs()
    assert [r.config["lr"] for r in runs] == [1e-3, 1e-2, 1e-1]


def test_profile_merges_over_base(tmp_path):
    spec = _spec(tmp_path, profile="small")
    runs = spec.runs()
    assert len(runs) == 1 * 1 * 2  # p=[8], lam fixed by the profile, zip of 2, 1 repetition
    assert {r.config["p"] for r in runs} == {8}
    assert {r.config["lam"] for r in runs} == {0.5}
    with pytest.raises(ConfigError, match='profile .big. is not defined; accepted: "small"'):
        _spec(tmp_path, profile="big")


def test_planner_packs_same_shapes(tmp_path):
    runs = _spec(tmp_path).runs()
    packs = plan(runs)
    # one ensemble per shape group (p, activation); lr and lam are per member
    assert sum(len(pk) for pk in packs) == len(runs)
    for pk in packs:
        shapes = {(r.config["p"], r.config["activation"]) for r in pk.runs}
        assert len(shapes) == 1
    assert len(packs) == 4  # p x activation; lam and lr vary inside an ensemble
    assert len(plan(runs, pack=1)) == len(runs)
    capped = plan(runs, pack=4)
    assert max(len(pk) for pk in capped) <= 4 and len(capped) == 4 * 2
    assert [pk.pack_id for pk in plan(runs)] == [pk.pack_id for pk in packs]


def test_deep_spec_flattens_sections():
    spec = parse_spec(
        {
            "study": {"name": "d", "system": "deep", "repetitions": 2},
            "fixed": {"data": {"source": "digits"}, "train": {"steps": 3}},
            "grid": {"rule": {"name": ["fa", "bp"]}, "train.lr": [0.01, 0.1]},
        }
    )
    runs = spec.runs()
    assert len(runs) == 8
    assert runs[0].config["data.source"] == "digits"
    assert {r.config["rule.name"] for r in runs} == {"fa", "bp"}
    with pytest.raises(ConfigError, match=r"grid.rule.name = \"nope\""):
        parse_spec({"study": {"system": "deep"}, "grid": {"rule.name": ["nope"]}})
    with pytest.raises(ConfigError, match="fixed.train.bogus is unknown"):
        parse_spec({"study": {"system": "deep"}, "fixed": {"train": {"bogus": 1}}})


BAD = [
    ("[fixed]\nwidth = 3\n", "fixed.width", "accepted: task, n, d, p"),
    ('[fixed]\np = "big"\n', "fixed.p", "an integer >= 1"),
    ("[grid]\np = []\n", "grid.p", "a non-empty array"),
    ("[fixed]\nlr = -0.1\n", "fixed.lr", "a finite number > 0"),
    ('[fixed]\nactivation = "swish"\n', "fixed.activation", '"linear"'),
    ("[grid]\nlam = [0.1, -1.0]\n", "grid.lam", "a finite number >= 0"),
    ("[study]\nrepetitions = 0\n", "study.repetitions", "an integer >= 1"),
    ("[study]\nbogus = 1\n", "study.bogus", "accepted: name"),
    ("[[zip]]\np = [1, 2]\nlam = [0.0]\n", "zip[0].p", "arrays of one length"),
    ("[fixed]\np = 4\n[grid]\np = [8]\n", "grid.p", "each field in one place"),
    ('[fixed]\nmetrics = ["mse", "accuracy"]\n', "fixed.metrics", "alignment"),
    ('[fixed]\nlam_schedule = "cutoff:x"\n', "fixed.lam_schedule", '"cutoff:T"'),
    ('[study]\nsystem = "deep"\n[fixed]\ntrain.lr = 0\n', "fixed.train.lr", "> 0"),
    ("[grid]\nseed = [1, 2]\n", "grid.seed", "study.seed or study.seeds"),
    ("[fixed\n", "not valid TOML", ""),
]


def _fa(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "feedback_alignment.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_bad_specs_one_line_exit_2_nothing_written(tmp_path):
    """Every bad spec through the real CLI: one line naming the key, exit 2, no store."""
    # one process for all cases (each `fa` start costs ~2 s); one CLI call below as well
    script = textwrap.dedent(
        """
        import contextlib, io, json, sys
        from feedback_alignment.cli import main
        out = []
        for i, text in enumerate(json.loads(sys.argv[1])):
            path = f"bad{i}.toml"
            open(path, "w").write(text)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                code = main(["sweep", path, "--store", f"bad{i}.sqlite", "--executor", "inline"])
            out.append([code, err.getvalue()])
        print(json.dumps(out))
        """
    )
    import json

    texts = [t for t, _, _ in BAD]
    res = subprocess.run(
        [sys.executable, "-c", script, json.dumps(texts)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    for (text, key, accepted), (code, err) in zip(BAD, json.loads(res.stdout), strict=True):
        assert code == 2, (text, err)
        assert err.count("\n") == 1 and err.startswith("fa sweep: error: "), err
        assert key in err and accepted in err, (key, accepted, err)
    assert not list(tmp_path.glob("*.sqlite*"))  # nothing written
    # and once through a real `fa sweep` process
    (tmp_path / "bad.toml").write_text("[grid]\np = []\n")
    res = _fa("sweep", "bad.toml", "--store", "x.sqlite", cwd=tmp_path)
    assert res.returncode == 2 and "grid.p" in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "x.sqlite").exists()
    res = _fa("sweep", "bad.toml", "--store", "x.sqlite", "--executor", "slurm", cwd=tmp_path)
    assert res.returncode == 2 and not (tmp_path / "x.sqlite").exists()


def test_two_layer_fields_come_from_the_schema(monkeypatch):
    """Defaults and checks are the schema's; rule names are read from the rules registry
    when a spec is checked (a rule added there is accepted), not frozen in the spec."""
    from feedback_alignment.twolayer import rules, schema

    (run,) = parse_spec({}).runs()
    defaults = {k: f.default for k, f in schema.FIELDS.items()}
    assert run.config == defaults | {"lr": paper_lr("linear")}
    with pytest.raises(ConfigError, match='fixed.rule = "scaled" is not accepted'):
        parse_spec({"fixed": {"rule": "scaled"}})
    monkeypatch.setitem(rules.RULES, "scaled", rules.RULES["fa"])
    assert parse_spec({"fixed": {"rule": "scaled"}}).fixed["rule"] == "scaled"
    with pytest.raises(ConfigError, match=r"^lr = -1 is not accepted; accepted: a finite"):
        schema.FIELDS["lr"].validate(-1)
    assert schema.FIELDS["lam"].validate(0) == 0.0 and schema.FIELDS["lr"].default == "paper"


@pytest.mark.parametrize(
    ("grid", "accepted"),
    [
        ({"train.lr": [-1]}, "a number > 0"),
        ({"train.batch_size": [0]}, "an integer in [1, 1e+07]"),
        ({"train.momentum": [1.5]}, "a number in [0, 1)"),
        ({"train.epochs": [1e9]}, "a number in [0, 1e+06] (or absent)"),
        ({"rule.init": ["zeros"]}, '"gaussian", "uniform", "orthogonal", "copy"'),
    ],
)
def test_deep_values_are_checked_by_their_one_declaration(grid, accepted):
    """A sweep asks deep.config.FIELDS (type, names, bounds, condition) before any run."""
    with pytest.raises(ConfigError) as err:
        parse_spec({"study": {"system": "deep"}, "grid": grid})
    assert str(err.value).endswith(f"accepted: {accepted}"), str(err.value)


def test_every_deep_default_is_accepted_by_its_field():
    from feedback_alignment.deep.config import FIELDS

    for section, keys in FIELDS.items():
        for key, f in keys.items():
            assert f.check.test(f.default), (section, key)
