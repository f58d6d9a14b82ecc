"""The reproduction's in-run checkpoints (reproduce/checkpoints.py): a regular file written
atomically and loaded with weights_only; a corrupt one or another run's is refused with
one line, touching nothing; only a proven one is ever deleted. (The SIGKILL test of a
pack resumed from its checkpoint is in test_reproduce.py, beside the smoke fixture.)"""

from __future__ import annotations

import pytest
import torch

from feedback_alignment.cli import main
from feedback_alignment.errors import ConfigError
from feedback_alignment.reproduce import checkpoints, outdir
from feedback_alignment.reproduce.checkpoints import Checkpoint
from feedback_alignment.reproduce.pipeline import plan
from feedback_alignment.reproduce.profiles import EXPERIMENTS, get_profile

IDENT = outdir.identity("smoke", 3)


def _snapshot(d):
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_save_load_round_trip_and_the_interval(tmp_path, monkeypatch):
    ck = Checkpoint(tmp_path, IDENT, "abc", every=3600)
    assert ck.load() is None and not ck.due()  # nothing saved; the hour has not passed
    state = {"t": 7, "x": torch.arange(5, dtype=torch.float32), "rows": [None, "a", 1.5]}
    ck.save(state)
    assert ck.path == tmp_path / "checkpoints" / "abc.pt" and ck.path.is_file()
    assert [p.name for p in ck.path.parent.iterdir()] == ["abc.pt"]  # no temporary left
    got = Checkpoint(tmp_path, IDENT, "abc").load()
    assert got["t"] == 7 and torch.equal(got["x"], state["x"]) and got["rows"] == state["rows"]
    assert Checkpoint(tmp_path, IDENT, "abc", every=0.0).due()
    monkeypatch.setenv(checkpoints.ENV, "0.5")
    assert Checkpoint(tmp_path, IDENT, "abc").every_seconds == 0.5
    for bad in ("0", "-1", "soon", "nan", "1e9"):
        monkeypatch.setenv(checkpoints.ENV, bad)
        with pytest.raises(ConfigError, match=checkpoints.ENV) as exc:
            checkpoints.every_seconds()
        assert "\n" not in str(exc.value)


def test_a_state_that_weights_only_refuses_is_not_loaded(tmp_path):
    """A payload with a pickled object (what weights_only=True refuses) is never run."""

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    ck = Checkpoint(tmp_path, IDENT, "abc")
    ck.save({"x": Evil()})
    with pytest.raises(ConfigError, match="cannot be loaded") as exc:
        ck.load()
    assert "\n" not in str(exc.value) and "delete" in str(exc.value)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage", "empty"])
def test_a_corrupt_checkpoint_is_one_line(tmp_path, damage):
    ck = Checkpoint(tmp_path, IDENT, "abc")
    ck.save({"t": torch.ones(100)})
    data = ck.path.read_bytes()
    ck.path.write_bytes(
        {
            "truncated": data[: len(data) // 2],
            "flipped": data[:-10] + bytes([data[-10] ^ 1]) + data[-9:],
            "garbage": b"\x00" * 64,
            "empty": b"",
        }[damage]
    )
    with pytest.raises(ConfigError, match="is corrupt") as exc:
        ck.load()
    assert "\n" not in str(exc.value) and str(ck.path) in str(exc.value)
    before = ck.path.read_bytes()
    ck.clear()  # not provably ours: left where it is
    assert ck.path.read_bytes() == before


def test_another_runs_checkpoint_is_refused_and_never_deleted(tmp_path):
    Checkpoint(tmp_path, outdir.identity("smoke", 4), "abc").save({"t": 1})
    ck = Checkpoint(tmp_path, IDENT, "abc")
    with pytest.raises(ConfigError, match="from another run") as exc:
        ck.load()
    assert "seed 4" in str(exc.value) and "seed 3" in str(exc.value)
    ck.clear()
    assert ck.path.is_file()
    Checkpoint(tmp_path, IDENT, "abc").clear()  # ... while the same run's own is cleared
    Checkpoint(tmp_path, IDENT, "abc").save({"t": 1})
    Checkpoint(tmp_path, IDENT, "abc").clear()
    assert not ck.path.exists()


def _reproduction_dir(tmp_path):
    """A reproduction directory of smoke seed 3 killed before any pack finished: its
    manifest, which names every pack's checkpoint, and one pack's checkpoint."""
    out = tmp_path / "R"
    out.mkdir()
    packs = plan(EXPERIMENTS, get_profile("smoke"), 3)
    names = [checkpoints.relative(pk.pack_id) for pk in packs]
    outdir.Manifest(out, IDENT, {}, names).save()
    return out, packs[0].pack_id


@pytest.mark.parametrize("bad", ["corrupt", "another run", "another pack"])
def test_fa_reproduce_refuses_a_bad_checkpoint_touching_nothing(tmp_path, capsys, bad):
    out, pack_id = _reproduction_dir(tmp_path)
    ck = Checkpoint(out, IDENT, pack_id)
    ck.save({"t": 1})
    if bad == "corrupt":
        ck.path.write_bytes(ck.path.read_bytes()[:-3])
    elif bad == "another run":
        Checkpoint(out, outdir.identity("smoke", 4), pack_id).save({"t": 1})
    else:
        Checkpoint(out, IDENT, "0" * 20).save({"t": 1})
        ck.path.write_bytes((out / checkpoints.relative("0" * 20)).read_bytes())
        (out / checkpoints.relative("0" * 20)).unlink()
    before = _snapshot(out)
    rc = main(["reproduce", "E1", "--profile", "smoke", "--seed", "3", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert str(ck.path) in err and "delete" in err and "new --out" in err
    assert ("is corrupt" if bad == "corrupt" else "from another run") in err
    assert _snapshot(out) == before


def test_a_proven_checkpoint_is_accepted_and_an_unplanned_one_refused(tmp_path):
    out, pack_id = _reproduction_dir(tmp_path)
    Checkpoint(out, IDENT, pack_id).save({"t": 1})
    assert outdir.inspect(out, IDENT) == {}  # proven by its header: the directory is ours
    Checkpoint(out, IDENT, "f" * 20).save({"t": 1})  # ours in form, but no planned pack's
    with pytest.raises(ConfigError, match="does not prove"):
        outdir.inspect(out, IDENT)
