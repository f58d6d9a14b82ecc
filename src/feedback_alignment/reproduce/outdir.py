"""The output directory of ``fa reproduce``: whose it is, and the manifest that proves it.

A reproduction directory holds one reproduction: one profile, one seed, one package
version, recorded in its manifest ``.fa-reproduce.json`` (``identity``) and in its store's
meta. The manifest lists every file the command wrote with its SHA-256; a file about to be
written is first listed as ``pending`` with the hash of the bytes about to land, so a kill
between the rename and the manifest's update still leaves a file the manifest proves. The
store (``store.sqlite`` and SQLite's ``-wal``/``-shm`` beside it) changes with every pack,
so it is proven by its meta instead of a hash.

:func:`inspect` reads a directory and refuses, touching nothing, anything but a new or
empty directory or a reproduction of the same identity whose every file is proven. Nothing
is ever deleted: a rerun keeps the store (resume), another experiment adds to it, and
outputs are replaced atomically by a file of the same name. The packs' in-run checkpoints
(``checkpoints/PACK_ID.pt``, :mod:`.checkpoints`) are named among the manifest's planned
files and proven by their own header (this identity, their pack, their SHA-256); one is
deleted only so proven, once its pack's runs are in the store.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from ..errors import ConfigError
from ..outputs import (
    _entries,
    _own_temp,
    atomic_write_bytes,
    check_output_dir,
    kind,
    read_manifest,
    sha256,
    write_manifest,
)
from . import checkpoints
from .checkpoints import describe
from .pipeline import STORE, STUDY

MANIFEST = ".fa-reproduce.json"
TOOL = "fa reproduce"
LIVE = tuple(STORE + x for x in ("", "-wal", "-shm", "-journal"))
_HEX = set("0123456789abcdef")
FRESH = "a new or empty --out to start afresh"


def identity(profile: str, seed: int) -> dict:
    """What a reproduction directory is bound to."""
    from .. import __version__

    return {"profile": profile, "seed": int(seed), "version": __version__}


def _q(p) -> str:
    return repr(str(p))


def held(out) -> dict | None:
    """The identity recorded in ``out``'s manifest (None: no reproduction there). Reads only;
    :func:`inspect` checks the rest."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    ident = data.get("identity") if isinstance(data, dict) else None
    return ident if isinstance(ident, dict) else None


def inspect(out, want: dict) -> dict[str, str]:
    """Check ``out`` for a reproduction bound to ``want``; return the manifest's proven
    ``{relative path: sha256}`` (empty for a new or empty directory). Raises ConfigError,
    touching nothing, for a directory holding anything else."""
    out = Path(out)
    check_output_dir(out)
    if not out.exists():
        return {}
    entries = _entries(out, "--out")  # lazy: a foreign directory is refused at its first entry
    first = next(entries, None)
    if first is None:
        return {}
    if kind(out / MANIFEST) != "a regular file":
        raise ConfigError(
            f"--out {_q(out)} holds files not written by {TOOL!r} (e.g. {first[0]!r}; it has "
            f"no manifest of them); accepted: {FRESH} (nothing was touched)"
        )
    planned: list[str] = []
    hashes = read_manifest(out, MANIFEST, TOOL, planned=planned)
    data = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    ident = data.get("identity")
    if not isinstance(ident, dict) or set(ident) != set(want):
        raise ConfigError(
            f"--out {_q(out)} holds a reproduction by an earlier version of {TOOL} (its "
            f"manifest records no profile, seed and version); asked: {describe(want)}; "
            f"accepted: {FRESH} (nothing was touched)"
        )
    if ident != want:
        raise ConfigError(
            f"--out {_q(out)} holds {describe(ident)}; asked: {describe(want)}; accepted: the "
            f"same profile, seed and version to resume or add experiments, or {FRESH} "
            "(nothing was touched)"
        )
    pending = data.get("pending", {})
    if not isinstance(pending, dict) or not all(
        isinstance(h, str) and len(h) == 64 and set(h) <= _HEX for h in pending.values()
    ):
        raise ConfigError(
            f"the manifest in {_q(out)} has a malformed 'pending' list; nothing was touched"
        )
    for live in LIVE:
        if (out / live).is_symlink():
            raise ConfigError(
                f"--out {_q(out)}: {live!r} is a symbolic link, not the store this command "
                "wrote; accepted: a regular file (nothing was touched)"
            )
    check_store(out / STORE, want)
    # the manifest's own atomic write leaves a temporary file too, if killed in it
    names = [MANIFEST, *planned, *hashes, *pending]
    for rel, entry in [first, *entries]:
        regular = entry.is_file(follow_symlinks=False)
        if rel == MANIFEST or rel in LIVE or (regular and _own_temp(rel, names)):
            continue  # a leftover temporary file is left alone (never deleted by name)
        if regular and _is_checkpoint(rel):
            # changes every few minutes, in any worker: proven by its header instead of
            # a hash (this identity, its pack, its payload's SHA-256); corrupt or another
            # run's: one line, nothing touched
            checkpoints.verify(out / rel, want)
            if rel in planned:
                continue
        listed = {hashes.get(rel), pending.get(rel)} - {None}
        if not (regular and listed and sha256(out / rel) in listed):
            raise ConfigError(
                f"--out {_q(out)} holds a file that its manifest does not prove to be "
                f"{TOOL!r} output ({rel!r}: unlisted or changed since); move it or choose "
                "another directory (nothing was touched)"
            )
    return {rel: h for rel, h in hashes.items() if (out / rel).is_file()}


def _is_checkpoint(rel: str) -> bool:
    folder, _, name = rel.partition("/")
    return folder == checkpoints.DIRECTORY and "/" not in name and name.endswith(checkpoints.SUFFIX)


def check_store(path: Path, want: dict) -> None:
    """Refuse a store that is not this reproduction's (another profile, seed or version,
    another tool's file). A store killed while it was being created (no tables, or no
    meta and no runs yet) is accepted: the manifest named it before it was made."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    from ..experiments.store import Store

    try:
        with Store(path, create=False) as st:
            meta = st.meta()
            n = sum(st.counts().values())
    except ConfigError as exc:
        if _no_tables(path):
            return
        raise ConfigError(f"{exc}; the reproduction's store cannot be used") from None
    if meta.get("study") is None and n == 0:
        return
    got = {k: meta.get(k) for k in want}
    got["seed"] = int(got["seed"]) if str(got.get("seed", "")).isdigit() else got.get("seed")
    if meta.get("study") != STUDY or got != want:
        raise ConfigError(
            f"store {_q(path)} holds {describe(got)} (study {meta.get('study')!r}); asked: "
            f"{describe(want)}; accepted: {FRESH} (nothing was touched)"
        )


def _no_tables(path: Path) -> bool:
    try:
        from urllib.parse import quote

        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        try:
            return not db.execute("SELECT name FROM sqlite_master").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return False


class Manifest:
    """The manifest of a reproduction directory, rewritten (atomically) around every file
    the command writes: the new hash goes in as ``pending`` before the file lands, and into
    ``hashes`` after, so whatever moment a kill strikes, every file is proven."""

    def __init__(self, out: Path, ident: dict, hashes: dict[str, str], planned: list[str]):
        self.out, self.ident, self.planned = out, ident, planned
        self.hashes, self.pending = dict(hashes), {}

    def save(self, complete: bool = False) -> None:
        write_manifest(
            self.out,
            MANIFEST,
            TOOL,
            self.hashes,
            identity=self.ident,
            store=STORE,
            complete=complete,
            planned=self.planned,
            pending=self.pending,
        )

    def write(self, path, data: bytes) -> None:
        """Write ``data`` to ``path`` (inside the directory) atomically, proven throughout."""
        rel = Path(path).relative_to(self.out).as_posix()
        digest = hashlib.sha256(data).hexdigest()
        if self.hashes.get(rel) == digest and (self.out / rel).is_file():
            if sha256(self.out / rel) == digest:
                return  # the same bytes are there already
        self.pending[rel] = digest
        self.save()
        atomic_write_bytes(self.out / rel, data)
        self.hashes[rel] = digest
        del self.pending[rel]
        self.save()
