"""``fa train`` end to end: results file, overrides, one-line errors and exit codes."""

from __future__ import annotations

import json

import pytest

from feedback_alignment.cli import main

CONFIG = """
seed = 2
[data]
source = "digits"
[model]
name = "mlp"
hidden = [24]
[rule]
name = "usf"
[train]
optimizer = "adam"
lr = 0.01
batch_size = 64
steps = 30
eval_every = 10
weight_decay = { last = 0.001 }
[metrics]
record_every = 5
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def test_fa_train_writes_results(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "res" / "r.json"
    assert main(["train", str(cfg), "--out", str(out), "--set", "rule.name=kp"]) == 0
    printed = capsys.readouterr().out
    assert "rule kp" in printed and "test accuracy" in printed
    res = json.loads(out.read_text())
    assert res["config"]["rule"]["name"] == "kp" and res["config"]["seed"] == 2
    assert res["eval_step"] == [0, 10, 20, 30] and res["record_step"] == [5, 10, 15, 20, 25, 30]
    assert res["final_test_accuracy"] > 0.5
    assert len(res["cosine/fc2"]) == 6


@pytest.mark.parametrize(
    "text,extra,needle",
    [
        ("bogus = 1\n" + CONFIG, [], "unknown config key 'bogus'"),
        (CONFIG + "bogus = 1\n", [], "metrics.bogus"),
        (CONFIG, ["--set", "train.lr=-1"], "train.lr = -1 is not accepted; accepted: a number > 0"),
        (CONFIG, ["--set", "data.source=idx", "--set", "data.path=/nonexistent"], "/nonexistent"),
        (CONFIG, ["--set", "nodots"], "KEY=VALUE"),
        ("[train\n", [], "not valid TOML"),
    ],
)
def test_fa_train_bad_input_is_one_line_exit_2(tmp_path, capsys, text, extra, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    assert main(["train", str(cfg), *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and err.startswith("fa train: error:")


def test_fa_train_missing_file_and_divergence(tmp_path, capsys):
    assert main(["train", str(tmp_path / "none.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG)
    assert main(["train", str(cfg), "--set", "train.optimizer=sgd", "--set", "train.lr=1e38"]) == 1
    err = capsys.readouterr().err
    assert "diverged at step" in err and err.count("\n") == 1
