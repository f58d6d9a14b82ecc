"""The study store and the driver: what a run records, atomic writes, resume, failures,
packing equivalence, CSV/Parquet export and plots."""

import csv
import io
import sqlite3

import numpy as np
import pytest

from feedback_alignment import TwoLayerEnsemble, linear_teacher
from feedback_alignment.experiments import Store, export, run_study
from feedback_alignment.experiments import runner as runner_mod
from feedback_alignment.experiments.plots import plot_curves, plot_final

SPEC = {
    "study": {"name": "tiny", "repetitions": 3, "seed": 3},
    "fixed": {"n": 8, "d": 12, "steps": 120, "record_every": 40, "activation": "relu"},
    "grid": {"p": [8, 16], "lam": [0.0, 0.2]},
}


def _values(path):
    with Store(path, create=False) as st:
        return {
            r["run_id"]: (
                r["final.mse"],
                r["final.alignment"],
                st.series(r["run_id"], "mse")[1].tobytes(),
            )
            for r in st.runs()
        }


def test_records_every_run_with_provenance(tmp_path):
    path = tmp_path / "s.sqlite"
    rep = run_study(SPEC, path, executor="inline")
    assert rep.ok and rep.total == 12 and rep.ran == 12 and rep.done == 12
    with Store(path, create=False) as st:
        rows = st.runs()
        assert len(rows) == 12 and st.counts() == {"done": 12}
        r = rows[0]
        assert r["package_version"] and r["torch_version"] and r["executor"] == "inline"
        assert r["stop_step"] == 120 and r["engine_seconds"] > 0 and r["attempts"] == 1
        assert r["config"]["p"] == r["p"] in (8, 16)
        steps, mse = st.series(r["run_id"], "mse")
        assert steps.tolist() == [0, 40, 80, 120]
        assert mse[-1] == r["final.mse"] and mse[-1] < mse[0]
        assert st.meta()["study"] == "tiny"
    # the stored numbers are the engine's for that seed, run alone
    ens = TwoLayerEnsemble(12, r["p"], seeds=[r["net_seed"]], activation="relu")
    X, y = linear_teacher(8, 12, seed=r["data_seed"])
    h = ens.fit(X, y, lr=1e-2, lam=r["lam"], steps=120, metrics=("mse", "alignment"))
    assert h.final["mse"][0] == pytest.approx(r["final.mse"], rel=1e-12, abs=1e-14)
    assert h.final["alignment"][0] == pytest.approx(r["final.alignment"], rel=1e-12)


def test_packed_equals_one_run_per_task(tmp_path):
    run_study(SPEC, tmp_path / "a.sqlite", executor="inline")
    run_study(SPEC, tmp_path / "b.sqlite", executor="inline", pack=1)
    a, b = _values(tmp_path / "a.sqlite"), _values(tmp_path / "b.sqlite")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][0] == pytest.approx(b[k][0], rel=1e-12, abs=1e-14)
        assert a[k][1] == pytest.approx(b[k][1], rel=1e-12, abs=1e-14)


def test_resume_skips_finished_and_redoes_failed(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite"
    real = runner_mod._twolayer

    def flaky(pack):
        if pack.runs[0].config["p"] == 16:
            raise RuntimeError("node lost")
        return real(pack)

    monkeypatch.setattr(runner_mod, "_twolayer", flaky)
    rep = run_study(SPEC, path, executor="inline")
    assert not rep.ok and rep.failed == 6 and rep.done == 6
    assert "RuntimeError: node lost" in rep.failures[0]
    with Store(path, create=False) as st:
        failed = st.runs(status="failed")
        assert len(failed) == 6 and failed[0]["reason"] == "RuntimeError: node lost"
        assert not st.run_metrics(failed[0]["run_id"])
    monkeypatch.setattr(runner_mod, "_twolayer", real)
    rep = run_study(SPEC, path, executor="inline")
    assert rep.ok and rep.skipped == 6 and rep.ran == 6
    with Store(path, create=False) as st:
        assert st.counts() == {"done": 12}
        assert sorted(r["attempts"] for r in st.runs()) == [1] * 6 + [2] * 6
    rep = run_study(SPEC, path, executor="inline")
    assert rep.skipped == 12 and rep.ran == 0
    run_study(SPEC, tmp_path / "ref.sqlite", executor="inline")
    assert _values(path) == _values(tmp_path / "ref.sqlite")


def test_write_is_atomic(tmp_path, monkeypatch):
    """A failure in the middle of writing a pack leaves none of its runs."""
    path = tmp_path / "s.sqlite"
    st = Store(path)
    calls = {"n": 0}
    real_write = Store.write

    def crashing(self, runs, results, prov):
        calls["n"] += 1
        if calls["n"] == 2:
            results = list(results)
            results[-1] = dict(results[-1], finals={"mse": object()})  # unstorable: raises
        return real_write(self, runs, results, prov)

    monkeypatch.setattr(Store, "write", crashing)
    with pytest.raises(Exception):  # noqa: B017 - whatever sqlite raises
        run_study(SPEC, st, executor="inline")
    monkeypatch.setattr(Store, "write", real_write)
    db = sqlite3.connect(path)
    n_runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    assert n_runs == 6  # the first pack only
    # every stored run has all of its finals and series
    for (run_id,) in db.execute("SELECT run_id FROM runs"):
        assert db.execute("SELECT COUNT(*) FROM series WHERE run_id=?", (run_id,)).fetchone() == (
            2,
        )
    st.close()


def test_diverged_runs_are_recorded_with_reason(tmp_path):
    spec = {
        "study": {"name": "div", "repetitions": 2},
        "fixed": {"n": 8, "d": 12, "p": 16, "steps": 200, "activation": "relu"},
        "grid": {"lr": [1e-2, 50.0]},
    }
    rep = run_study(spec, tmp_path / "d.sqlite", executor="inline")
    assert rep.ok and rep.diverged == 2 and rep.done == 2
    with Store(tmp_path / "d.sqlite", create=False) as st:
        bad = st.runs(status="diverged")
        assert {r["lr"] for r in bad} == {50.0}
        assert "diverged at step" in bad[0]["reason"] and bad[0]["diverged_at"] >= 0
    again = run_study(spec, tmp_path / "d.sqlite", executor="inline")
    assert again.skipped == 4  # diverged is a result, not redone


def test_export_csv_and_parquet(tmp_path):
    path = tmp_path / "s.sqlite"
    run_study(SPEC, path, executor="inline")
    text = export(path, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 12
    assert {"run_id", "status", "seed", "p", "lam", "final.mse", "git_commit"} <= set(rows[0])
    with Store(path, create=False) as st:
        ref = {r["run_id"]: r["final.mse"] for r in st.runs()}
    assert all(float(r["final.mse"]) == ref[r["run_id"]] for r in rows)  # repr round-trips
    pq = pytest.importorskip("pyarrow.parquet")
    export(path, "parquet", tmp_path / "runs.parquet")
    tbl = pq.read_table(tmp_path / "runs.parquet").to_pydict()
    assert len(tbl["run_id"]) == 12
    assert dict(zip(tbl["run_id"], tbl["final.mse"], strict=True)) == ref
    assert export(path, "parquet") == str(tmp_path / "s.parquet")  # default: beside the store
    assert pq.read_table(tmp_path / "s.parquet").num_rows == 12
    export(path, "parquet", tmp_path / "series.parquet", table="series")
    series = pq.read_table(tmp_path / "series.parquet").to_pydict()
    assert len(series["step"]) == 12 * 2 * 4  # runs x metrics x recorded steps


def test_plots_from_store(tmp_path):
    path = tmp_path / "s.sqlite"
    run_study(SPEC, path, executor="inline")
    drawn = plot_final(path, "alignment", "p", "lam", out=[tmp_path / "a.png", tmp_path / "a.pdf"])
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "a.pdf").read_bytes()[:4] == b"%PDF"
    assert set(drawn) == {0.0, 0.2} and drawn[0.2]["x"] == [8, 16]
    with Store(path, create=False) as st:
        al = [r["final.alignment"] for r in st.runs(p=16, lam=0.2)]
    assert drawn[0.2]["mean"][1] == pytest.approx(np.mean(al))
    assert drawn[0.2]["sd"][1] == pytest.approx(np.std(al, ddof=1))
    curves = plot_curves(path, "mse", "lam", where={"p": [16]}, out=tmp_path / "c.png")
    assert curves[0.0]["steps"].tolist() == [0, 40, 80, 120]
    assert (curves[0.0]["n"] == 3).all() and curves[0.0]["mean"][-1] < curves[0.0]["mean"][0]
    from feedback_alignment.errors import ConfigError

    with pytest.raises(ConfigError, match="--metric 'accuracy' was not recorded"):
        plot_final(path, "accuracy", "p", out=tmp_path / "x.png")
    with pytest.raises(ConfigError, match="--x 'width' is not a field"):
        plot_final(path, "mse", "width", out=tmp_path / "x.png")


def test_a_schedule_string_runs_as_the_schedule_object(tmp_path):
    """A spec's lam_schedule ("cutoff:T", "exp:GAMMA") reaches fit as text and is parsed
    there, once (schedules.parse): the stored runs equal fits given CutOff / ExpDecay."""
    from feedback_alignment.twolayer.schedules import CutOff, ExpDecay

    spec = {
        "study": {"name": "schedules", "seed": 5},
        "fixed": {"n": 8, "d": 12, "p": 16, "steps": 60, "activation": "tanh", "lam": 0.3},
        "grid": {"lam_schedule": ["cutoff:20", "exp:0.95", "constant"]},
    }
    rep = run_study(spec, tmp_path / "s.sqlite", executor="inline")
    assert rep.ok and rep.done == 3
    objects = {"cutoff:20": CutOff(20), "exp:0.95": ExpDecay(0.95), "constant": None}
    finals = set()
    with Store(tmp_path / "s.sqlite", create=False) as st:
        for r in st.runs():
            ens = TwoLayerEnsemble(12, 16, seeds=[r["net_seed"]], activation="tanh")
            X, y = linear_teacher(8, 12, seed=r["data_seed"])
            h = ens.fit(
                X, y, lr=0.1, lam=0.3, lam_schedule=objects[r["config"]["lam_schedule"]],
                steps=60, metrics=("mse", "alignment"),
            )  # fmt: skip
            assert h.final["mse"][0] == pytest.approx(r["final.mse"], rel=1e-12, abs=1e-14)
            finals.add(round(float(r["final.alignment"]), 12))
    assert len(finals) == 3  # the three schedules trained three different networks
