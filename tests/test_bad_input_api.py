"""Bad-input catalogue, part 3: the Python API, ``fa train`` configs, data, study specs,
bounds and divergence. The API raises ConfigError with one line naming the value (never a
raw TypeError, never a string iterated letter by letter); the CLI cases assert the line,
the exit status and that every file set up is unchanged."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from _badinput import CONFIG, fa, refused
from feedback_alignment import TwoLayerEnsemble
from feedback_alignment.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

X = np.random.default_rng(0).standard_normal((2, 6, 5))
Y = np.random.default_rng(1).standard_normal((2, 6))


# ---------------------------------------------------------------- API: TwoLayerEnsemble
@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"seeds": None}, "seeds = None is not accepted; accepted: a non-negative integer or a"),
        ({"seeds": "12"}, 'seeds = "12" is not accepted'),
        ({"seeds": [0, -1]}, "seed = -1 is not accepted; accepted: a non-negative integer"),
        ({"seeds": []}, "seeds must hold at least one seed"),
        ({"p": 10**12}, "p = 1000000000000 needs"),
        ({"d": 10**7, "p": 10**6}, "of memory, more than the"),
        ({"p": 0}, "p = 0 is not accepted; accepted: an integer >= 1"),
        ({"d": 2.5}, "d = 2.5 is not accepted; accepted: an integer >= 1"),
        (
            {"init_scale": "big"},
            "init_scale['W'] = \"big\" is not accepted; accepted: a finite number > 0",
        ),
        ({"activation": "sigmoidal"}, "sigmoidal"),
    ],
)
def test_ensemble_constructor(kwargs, needle):
    args = {"d": 5, "p": 4, "seeds": [0, 1], **kwargs}
    with pytest.raises(ConfigError) as err:
        TwoLayerEnsemble(args.pop("d"), args.pop("p"), **args)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"lr": ["a", "b"]}, 'lr = ["a", "b"] is not accepted; accepted: a finite number > 0'),
        ({"lr": "0.1"}, 'lr = "0.1" is not accepted'),
        ({"lam": "big"}, 'lam = "big" is not accepted; accepted: a finite number >= 0; or 2 such'),
        ({"lam": [0.1, 0.2, 0.3]}, "2 such numbers, one per member (got shape (3,))"),
        ({"lr": float("nan")}, "lr = nan is not accepted; accepted: a finite number > 0"),
        ({"w_decay": -1.0}, "w_decay = -1.0 is not accepted; accepted: a finite number >= 0"),
        ({"metrics": "mse,alignment"}, 'metric = "mse,alignment" is not accepted'),
        ({"metrics": 3}, "metrics = 3 is not accepted; accepted: a name or a sequence of names"),
        (
            {"record_steps": [-1, 3]},
            "record_steps = [-1, 3] is not accepted; accepted: a sequence of integers >= 0",
        ),
        ({"record_steps": "10"}, 'record_steps = "10" is not accepted'),
        ({"blowup": "huge"}, 'blowup = "huge" is not accepted; accepted: a number > 1'),
        ({"rule": "fb"}, 'rule = "fb" is not accepted'),
        ({"loss": "mae"}, 'loss = "mae" is not accepted'),
        ({"steps": -1}, "steps = -1 is not accepted; accepted: an integer in [0, 1e9]"),
        ({"steps": None}, "give exactly one of steps or stop"),
        (
            {"record_every": -1},
            "record_every = -1 is not accepted; accepted: an integer >= 0 and <= 1e9",
        ),
    ],
)
def test_fit_arguments(kwargs, needle):
    ens = TwoLayerEnsemble(5, 4, seeds=[0, 1])
    args = {"steps": 2, **kwargs}
    with pytest.raises(ConfigError) as err:
        ens.fit(X, Y, **args)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_fit_metric_as_one_string_is_one_name():
    h = TwoLayerEnsemble(5, 4, seeds=[0, 1]).fit(X, Y, steps=2, metrics="mse")
    assert list(h.final) == ["mse"]


# ---------------------------------------------------------------- fa train configs


@pytest.mark.parametrize(
    "sets,needle",
    [
        (
            ["threads=-1"],
            "config key threads = -1 is not accepted; accepted: an integer in [0, 4096]",
        ),
        (["train.lr=nan"], "config key train.lr = nan is not accepted; accepted: a number > 0"),
        (["train.steps=1000000000000000"], "train.steps = 1000000000000000 is not accepted"),
        (["model.hidden=[1000000000000]"], "parameters) needs"),
        (["model.hidden=[0]"], "config key model.hidden = [0] is not accepted"),
        (["train.batch_size=true"], "batch_size = true is not accepted; accepted: an integer in"),
        (["data.train_limit=0"], "data.train_limit = 0 is not accepted"),
    ],
)
def test_train_config_out_of_bounds(tmp_path, capsys, sets, needle):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    argv = [a for s in sets for a in ("--set", s)]
    refused(capsys, tmp_path, "train", cfg, "--out", tmp_path / "r.json", *argv, match=needle)


def test_train_config_is_a_directory(tmp_path, capsys):
    (tmp_path / "cfg.toml").mkdir()
    refused(
        capsys,
        tmp_path,
        "train",
        tmp_path / "cfg.toml",
        match="config file '" + str(tmp_path / "cfg.toml") + "' is a directory",
    )


def test_train_divergence_exit_1_and_no_result_file(tmp_path, capsys):
    """lr = 1e8: the loss explodes against its start; exit 1 with the step, no --out."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(CONFIG.replace("steps = 3", "steps = 40"))
    line = refused(
        capsys,
        tmp_path,
        "train",
        cfg,
        "--out",
        tmp_path / "r.json",
        "--set",
        "train.lr=1e8",
        match="training diverged at step",
        rc=1,
    )
    assert "likely cause: learning rate 1e+08" in line
    assert not (tmp_path / "r.json").exists()


def test_trainer_judges_explosion_against_the_start():
    """The loss growing by the blowup factor is divergence even while finite."""
    import torch

    from feedback_alignment.deep.data import digits
    from feedback_alignment.deep.models import build_model
    from feedback_alignment.deep.trainer import Trainer
    from feedback_alignment.errors import DivergenceError

    data = digits().limit(200, 50)
    model = build_model("mlp", sizes=[64, 8, 10], seed=0)
    tr = Trainer(model, data, lr=10.0, steps=30, batch_size=50, eval_every=0, blowup=3.0)
    torch.manual_seed(0)
    with pytest.raises(DivergenceError, match=r"training diverged at step \d+: the loss is"):
        tr.fit()
    with pytest.raises(ConfigError, match="blowup = 1 is not accepted; accepted: a number > 1"):
        Trainer(model, data, blowup=1)


# ---------------------------------------------------------------- data (IDX)
def _idx(path, array):
    array = np.asarray(array)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _idx_set(d, train=(8, 4, 4), test=(4, 4, 4), train_labels=None, test_labels=None):
    d.mkdir()
    rng = np.random.default_rng(0)
    _idx(d / "train-images-idx3-ubyte", rng.integers(0, 256, train))
    _idx(
        d / "train-labels-idx1-ubyte",
        train_labels if train_labels is not None else np.arange(train[0]) % 3,
    )
    _idx(d / "t10k-images-idx3-ubyte", rng.integers(0, 256, test))
    _idx(
        d / "t10k-labels-idx1-ubyte",
        test_labels if test_labels is not None else np.arange(test[0]) % 3,
    )


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"train": (0, 4, 4)}, "hold no train samples"),
        ({"test": (0, 4, 4)}, "hold no test samples"),
        ({"test": (4, 5, 5)}, "test images are 5x5, train images 4x4; accepted: the same size"),
        ({"test_labels": [0, 1, 2, 7]}, "IDX test labels in"),
    ],
)
def test_idx_data(tmp_path, capsys, kwargs, needle):
    _idx_set(tmp_path / "data", **kwargs)
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        CONFIG.replace('source = "digits"', f'source = "idx"\npath = "{tmp_path / "data"}"')
        .replace("train_limit = 200\n", "")
        .replace("test_limit = 100\n", "")
    )
    refused(capsys, tmp_path, "train", cfg, match=needle)


def test_idx_named_data_set_labels_beyond_its_classes(tmp_path):
    from feedback_alignment.deep.data import idx_directory

    _idx_set(tmp_path / "mnist", train_labels=[0, 1, 2, 3, 4, 5, 6, 12])
    with pytest.raises(ConfigError, match=r"include 12; accepted: integers in \[0, 10\)"):
        idx_directory(tmp_path / "mnist", "mnist")


# ---------------------------------------------------------------- study specs and bounds
SPEC = """
[study]
name = "b"
{study}
[fixed]
n = 4
{fixed}
[grid]
{grid}
"""


def _spec(root, study="", fixed="d = 3\nsteps = 5", grid="lam = [0.0]"):
    p = root / "spec.toml"
    p.write_text(SPEC.format(study=study, fixed=fixed, grid=grid))
    return p


@pytest.mark.parametrize(
    "parts,needle",
    [
        ({"fixed": "p = 1000000000000"}, "spec key fixed.p = 1000000000000 is not accepted"),
        ({"fixed": "p = 10000000\nd = 100000"}, "of memory, more than the"),
        ({"fixed": "d = 3\nsteps = 1000000000000000"}, "fixed.steps = 1000000000000000"),
        ({"study": "repetitions = 1000000000"}, "study.repetitions = 1000000000 is not accepted"),
        ({"study": "threads = -1"}, "spec key study.threads = -1 is not accepted"),
        ({"fixed": "record_steps = [-1, 3]"}, "spec key fixed.record_steps = [-1, 3]"),
        ({"fixed": 'metrics = "mse"'}, 'spec key fixed.metrics = "mse" is not accepted'),
        ({"fixed": "n = 5"}, "not valid TOML"),
    ],
)
def test_spec_bounds_under_dry_run(tmp_path, capsys, parts, needle):
    spec = _spec(tmp_path, **parts)
    refused(
        capsys, tmp_path, "sweep", spec, "--store", tmp_path / "s.sqlite", "--dry-run", match=needle
    )
    assert not (tmp_path / "s.sqlite").exists()


def test_empty_spec_file_is_not_a_default_study(tmp_path, capsys):
    (tmp_path / "spec.toml").write_text("# nothing yet\n")
    refused(
        capsys,
        tmp_path,
        "sweep",
        tmp_path / "spec.toml",
        "--store",
        tmp_path / "s.sqlite",
        match="spec file '" + str(tmp_path / "spec.toml") + "' is empty",
    )


def test_spec_is_a_directory(tmp_path, capsys):
    (tmp_path / "spec.toml").mkdir()
    refused(
        capsys,
        tmp_path,
        "sweep",
        tmp_path / "spec.toml",
        "--store",
        tmp_path / "s.sqlite",
        match="is a directory; accepted: a TOML file",
    )


def test_many_runs_warns_under_dry_run(tmp_path, capsys):
    """400 x 30 = 12000 runs: planned, with a warning line; nothing written (more than
    1e5 runs is refused: tests/test_bad_input_bounds.py)."""
    grid = "lam = [{}]\nlr = [{}]".format(
        ", ".join(f"{i / 1000}" for i in range(400)),
        ", ".join(f"{(i + 1) / 1e4}" for i in range(30)),
    )
    spec = _spec(tmp_path, grid=grid)
    rc, lines = fa(capsys, "sweep", spec, "--store", tmp_path / "s.sqlite", "--dry-run")
    assert rc == 0
    assert lines == ["fa sweep: warning: 12000 runs is more than 1e+04; check the grid"]
    assert not (tmp_path / "s.sqlite").exists()


def test_a_day_of_work_warns(monkeypatch):
    from feedback_alignment.experiments import planner
    from feedback_alignment.experiments.spec import parse_spec

    spec = parse_spec({"fixed": {"n": 1000, "d": 1000, "p": 10000, "steps": 10**6}})
    runs = spec.runs()
    monkeypatch.setattr(planner, "machine_flops", lambda: 1e10)
    (line,) = planner.warnings_for(runs, planner.plan(runs, spec))
    # 3 * p (d + n) n steps = 6e16 multiply-adds at 1e10/s: 6e6 s, 69.4 days
    assert line.startswith("1e+06 member-steps of planned work, about 69.4 days")
