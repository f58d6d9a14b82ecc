"""Output safety: every command checks all of its outputs before any work starts.

The rules (docs: README, "Files the commands write"):

* an output is resolved (symlinks followed) and must be writable: its nearest existing
  ancestor is a writable directory, and nothing on the way is a file;
* an output that is the same file as one of the command's inputs (same device and inode)
  is refused;
* an existing file is overwritten only with ``force`` (``--force``); a directory must be
  empty or a previous output of the same command, recognised by its manifest;
* every file is written to a temporary name in its own directory and renamed into place,
  so an interrupted write leaves the old file or the new one, never half of one.

Manifests (:func:`read_manifest`) may only name plain relative paths inside their
directory, each with the SHA-256 recorded when it was written; a command deletes only a
file whose bytes still match its recorded hash. Anything else is a
:class:`~feedback_alignment.errors.ConfigError` and nothing is touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from .errors import ConfigError


def _q(path) -> str:
    return repr(str(path))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable_location(path: Path, what: str) -> None:
    """Raise unless ``path`` could be created: its nearest existing ancestor is a writable
    directory (missing directories in between are created later)."""
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise ConfigError(f"{what} {_q(path)}: {_q(parent)} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {_q(path)}: directory {_q(parent)} is not writable")


def check_output_file(path, *, inputs: Iterable = (), force: bool = False, what: str = "--out"):
    """Check one output file before any work; return its :class:`Path`.

    Refuses: the same file as an input, an existing directory, an existing file without
    ``force``, a location that cannot be written."""
    p = Path(path)
    ident = _identity(p)
    if ident is not None:
        for i in inputs:
            if i is not None and _identity(Path(i)) == ident:
                raise ConfigError(
                    f"{what} {_q(p)} is the same file as the input {_q(i)}; "
                    "accepted: a different path"
                )
    if p.is_dir():
        raise ConfigError(f"{what} {_q(p)} is a directory; accepted: a file path")
    if p.exists() or p.is_symlink():
        if not force:
            raise ConfigError(
                f"{what} {_q(p)} exists; accepted: a new path, or --force to overwrite it"
            )
        if not os.access(p.parent if p.parent != Path("") else Path("."), os.W_OK):
            raise ConfigError(f"{what} {_q(p)}: its directory is not writable")
        return p
    check_writable_location(p, what)
    return p


def check_output_files(paths, *, inputs: Iterable = (), force: bool = False, what="--out"):
    """Check every output of a command (several ``--out`` included) before writing any."""
    inputs = list(inputs)
    out = [check_output_file(p, inputs=inputs, force=force, what=what) for p in paths]
    seen: dict = {}
    for p in out:
        key = os.path.abspath(p)
        if key in seen:
            raise ConfigError(f"{what} {_q(p)} is given twice; accepted: distinct paths")
        seen[key] = p
    return out


def check_output_dir(path, *, inputs: Iterable = (), what: str = "--out") -> Path:
    """Check an output directory that must be new or empty (no manifest logic here)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {_q(p)} exists and is not a directory; choose a new path")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(f"{what} {_q(p)}: directory is not writable")
    else:
        check_writable_location(p, what)
    ident = _identity(p)
    for i in inputs:
        if i is not None and ident is not None and _identity(Path(i)) == ident:
            raise ConfigError(f"{what} {_q(p)} is the input {_q(i)}; accepted: another path")
    return p


# ---------------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; rename it to ``path`` on success,
    remove it on failure (so ``path`` holds the old bytes or the new, never a mix)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


# ---------------------------------------------------------------------- manifests
_HEX = set("0123456789abcdef")


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _own_temp(rel: str, names: Iterable[str]) -> bool:
    """A leftover temporary file of an interrupted write of one of ``names``:
    ``.NAME.tmp`` or ``.NAME.XXXX.tmp`` in the same directory."""
    pp = PurePosixPath(rel)
    if not (pp.name.startswith(".") and pp.name.endswith(".tmp")):
        return False
    for n in names:
        np_ = PurePosixPath(n)
        if np_.parent == pp.parent and pp.name.startswith(f".{np_.name}."):
            return True
    return False


def confined(root: Path, rel, where: str) -> Path:
    """``root / rel`` for a plain relative path ``rel`` that stays inside ``root`` (no
    ``..``, not absolute, no symlink leading out); ConfigError otherwise."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise ConfigError(
            f"{where} names {rel!r}; accepted: plain relative paths inside the directory"
        )
    pp = PurePosixPath(rel)
    if pp.is_absolute() or any(part in ("..", ".", "") for part in rel.split("/")):
        raise ConfigError(
            f"{where} names {rel!r}, which leads outside its directory; accepted: plain "
            "relative paths inside it (nothing was touched)"
        )
    full = root / pp
    real_root = root.resolve()
    real = full.resolve()
    if real != real_root and real_root not in real.parents:
        raise ConfigError(
            f"{where} names {rel!r}, which resolves outside its directory (a symlink?); "
            "nothing was touched"
        )
    return full


def read_manifest(root, name: str, tool: str, *, planned: list | None = None) -> dict[str, str]:
    """Read ``root/name`` written by :func:`write_manifest` for ``tool``; return
    ``{relative path: sha256}`` after checking every entry (confined, hash well formed).

    Raises ConfigError on anything else; reads only."""
    root = Path(root)
    where = f"the manifest {_q(root / name)}"
    try:
        data = json.loads((root / name).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        raise ConfigError(f"{where} is unreadable; choose a new or empty directory") from None
    if not isinstance(data, dict) or data.get("tool") != tool:
        raise ConfigError(f"{where} was not written by {tool!r}; choose a new or empty directory")
    files = data.get("hashes")
    if not isinstance(files, dict):
        raise ConfigError(
            f"{where} records no file hashes (an older or foreign manifest); nothing can be "
            "proven to be its output: move the directory's files or choose another directory"
        )
    out = {}
    for rel, digest in files.items():
        confined(root, rel, where)
        if rel == name:
            raise ConfigError(f"{where} lists itself; nothing was touched")
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX):
            raise ConfigError(f"{where} records {digest!r} for {rel!r}; accepted: a SHA-256")
        out[rel] = digest
    if planned is not None:  # files the run meant to write (their temporary files are ours)
        names = data.get("planned", [])
        if not isinstance(names, list):
            raise ConfigError(f"{where} has a malformed 'planned' list; nothing was touched")
        for rel in names:
            confined(root, rel, where)
            planned.append(rel)
    return out


def write_manifest(root, name: str, tool: str, hashes: dict[str, str], **extra) -> None:
    data = {"tool": tool, **extra, "files": sorted(hashes), "hashes": dict(sorted(hashes.items()))}
    atomic_write_text(Path(root) / name, json.dumps(data, indent=1))


def previous_output(root, name: str, tool: str, *, what: str = "--out") -> dict[str, str]:
    """For an output directory ``root`` that a command may reuse: check that it is new,
    empty or holds only files its manifest proves (hash matches) plus leftover temporary
    files of listed or planned names; return ``{relative path: sha256}`` of the proven
    files ("" for a temporary file). Touches nothing."""
    root = Path(root)
    check_output_dir(root, what=what)
    if not root.exists():
        return {}
    present = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )
    if not present:
        return {}
    if not (root / name).is_file():
        raise ConfigError(
            f"{what} {_q(root)} holds {len(present)} file(s) not written by {tool!r} "
            f"(e.g. {present[0]!r}); choose a new or empty directory"
        )
    names: list[str] = []
    hashes = read_manifest(root, name, tool, planned=names)
    names += list(hashes)
    foreign = []
    for rel in present:
        if rel == name or _own_temp(rel, names):
            continue
        full = root / rel
        if rel not in hashes or full.is_symlink() or sha256(full) != hashes[rel]:
            foreign.append(rel)
    if foreign:
        raise ConfigError(
            f"{what} {_q(root)} holds {len(foreign)} file(s) that its manifest does not prove "
            f"to be {tool!r} output (e.g. {foreign[0]!r}: unlisted or changed since); move "
            "them or choose another directory (nothing was touched)"
        )
    temps = [rel for rel in present if _own_temp(rel, names)]
    return {
        **{rel: h for rel, h in hashes.items() if (root / rel).is_file()},
        **dict.fromkeys(temps, ""),
    }


def remove_proven(root, hashes: dict[str, str]) -> None:
    """Delete the files :func:`previous_output` proved (re-checking each hash just before
    deleting) and the leftover temporary files it recognised (recorded with hash "")."""
    root = Path(root)
    for rel, digest in hashes.items():
        full = root / rel
        if not full.is_file() or full.is_symlink():
            continue
        if digest == "":  # a leftover temporary file that previous_output recognised
            if full.name.startswith(".") and full.name.endswith(".tmp"):
                full.unlink()
        elif sha256(full) == digest:
            full.unlink()
