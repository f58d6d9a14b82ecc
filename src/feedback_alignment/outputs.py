"""Output safety: every command checks all of its outputs before any work starts.

The rules (docs: README, "Files the commands write"):

* an output is a regular file or a new path, nothing else: a symbolic link (dangling or
  not), a device, a FIFO or a socket is refused with one line, ``--force`` or not (the
  atomic rename would replace the node itself); its nearest existing ancestor is a
  writable directory, nothing on the way is a file, and the file system must accept
  its name (and the temporary name beside it);
* an output that is the same file as one of the command's inputs (same device and inode)
  is refused;
* an existing file is overwritten only with ``force`` (``--force``); a directory must be
  empty or a previous output of the same command, recognised by its manifest;
* every file is written to a temporary name in its own directory and renamed into place,
  so an interrupted write leaves the old file or the new one, never half of one; a new
  file gets the mode the user's umask gives (as ``open`` would), a replaced one keeps its
  mode; a write that fails (a full disk) raises :class:`~feedback_alignment.errors.WriteError`
  naming the path and the cause.

Manifests (:func:`read_manifest`) may only name plain relative paths inside their
directory, each with the SHA-256 recorded when it was written; a command deletes only a
file whose bytes still match its recorded hash. Anything else is a
:class:`~feedback_alignment.errors.ConfigError` and nothing is touched. A directory that
is not the command's own is refused at the first foreign entry, without walking the rest
(``--out /`` or ``--out $HOME`` is refused at once).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from .errors import ConfigError, WriteError


def _q(path) -> str:
    return repr(str(path))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISREG, "a regular file"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
# the temporary name beside an output: ".NAME." + mkstemp's 8 characters + ".tmp"
_TEMP_EXTRA = 14


def describe(mode: int) -> str:
    """What a file of ``st_mode`` ``mode`` is, in words ("a FIFO (named pipe)", ...)."""
    for test, words in _KINDS:
        if test(mode):
            return words
    return "a special file"


def kind(path, what: str = "--out") -> str | None:
    """What is at ``path`` (not following a final symlink): ``None`` where nothing is,
    else :func:`describe`'s words. A name the file system refuses (too long, a loop of
    links, an unreadable directory on the way) is a one-line ConfigError."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None  # something on the way is a file: check_writable_location says so
    except OSError as exc:
        raise ConfigError(
            f"{what} {_q(path)}: the file system refuses it ({_cause(exc)}); accepted: a "
            "path that can be created"
        ) from None
    return describe(st.st_mode)


def _cause(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _refuse_special(p: Path, what: str, k: str | None, accepted: str) -> None:
    """Refuse a symlink, device, FIFO or socket at ``p`` (``--force`` or not)."""
    if k == "a symbolic link":
        target = os.readlink(p)
        state = "" if p.exists() else ", dangling"
        raise ConfigError(
            f"{what} {_q(p)} is a symbolic link (to {target!r}{state}); accepted: {accepted} "
            "(links are never followed or replaced, --force or not)"
        )
    if k not in (None, "a regular file", "a directory"):
        raise ConfigError(f"{what} {_q(p)} is {k}; accepted: {accepted} (--force or not)")


def check_name(path: Path, what: str) -> None:
    """Refuse a name the file system of its directory would refuse (with the temporary
    name beside it), before any work."""
    parent = _nearest_existing(path.parent)
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in [*path.relative_to(parent).parts] if path.is_relative_to(parent) else [path.name]:
        extra = _TEMP_EXTRA if part == path.name else 0
        if len(os.fsencode(part)) + extra > limit:
            raise ConfigError(
                f"{what} {_q(path)}: the name {part[:40]!r}... is longer than this file "
                f"system takes ({limit} bytes, less {_TEMP_EXTRA} for the temporary name); "
                "accepted: a shorter name"
            )
    if "\x00" in str(path):
        raise ConfigError(f"{what} {_q(path)} holds a NUL byte; accepted: a plain path")


def _nearest_existing(path: Path) -> Path:
    p = path
    while not os.path.exists(p) and p != p.parent:
        p = p.parent
    return p


def check_input_file(path, what: str) -> None:
    """Refuse an input that is not a regular file (through links) before anything opens
    it: a FIFO would block, a device would be read without end. A missing path passes
    (the reader says it does not exist); a dangling link is named as one."""
    p = Path(path)
    k = kind(p, what)
    if k is None or k == "a directory":
        return
    if k == "a symbolic link":
        try:
            mode = os.stat(p).st_mode
        except OSError:
            raise ConfigError(
                f"{what} {_q(p)} is a dangling symbolic link (to {os.readlink(p)!r}); "
                "accepted: a regular file"
            ) from None
        k = describe(mode)
    if k not in ("a regular file", "a directory"):
        raise ConfigError(f"{what} {_q(p)} is {k}; accepted: a regular file")


def check_writable_location(path: Path, what: str) -> None:
    """Raise unless ``path`` could be created: its nearest existing ancestor is a writable
    directory (missing directories in between are created later) and the file system
    takes its name."""
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise ConfigError(f"{what} {_q(path)}: {_q(parent)} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {_q(path)}: directory {_q(parent)} is not writable")
    check_name(path, what)


def add_out_flags(parser, help: str, *, what: str = "--out file", **out) -> None:
    """``--out`` (``help``; ``out``: its other add_argument keywords) and ``--force``, which
    lets it overwrite an existing ``what`` (the ``force`` of :func:`check_output_file`)."""
    parser.add_argument("--out", help=help, **out)
    parser.add_argument("--force", action="store_true", help=f"overwrite an existing {what}")


def check_output_file(path, *, inputs: Iterable = (), force: bool = False, what: str = "--out"):
    """Check one output file before any work; return its :class:`Path`.

    Refuses: the same file as an input, a symlink, device, FIFO or socket (``force`` or
    not), an existing directory, an existing file without ``force``, a location that
    cannot be written, a name the file system refuses."""
    p = Path(path)
    k = kind(p, what)
    ident = _identity(p)
    if ident is not None:
        for i in inputs:
            if i is not None and _identity(Path(i)) == ident:
                raise ConfigError(
                    f"{what} {_q(p)} is the same file as the input {_q(i)}; "
                    "accepted: a different path"
                )
    _refuse_special(p, what, k, "a regular file or a new path")
    if k == "a directory":
        raise ConfigError(f"{what} {_q(p)} is a directory; accepted: a file path")
    if k is not None:
        if not force:
            raise ConfigError(
                f"{what} {_q(p)} exists; accepted: a new path, or --force to overwrite it"
            )
        if not os.access(p.parent if p.parent != Path("") else Path("."), os.W_OK):
            raise ConfigError(f"{what} {_q(p)}: its directory is not writable")
        check_name(p, what)
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
    """Check an output directory's path: new, or an existing writable directory (not a
    symlink to one); its contents are :func:`previous_output`'s business."""
    p = Path(path)
    k = kind(p, what)
    _refuse_special(p, what, k, "a directory or a new path")
    if k is not None and k != "a directory":
        raise ConfigError(f"{what} {_q(p)} exists and is not a directory; choose a new path")
    ident = _identity(p)
    for i in inputs:
        if i is not None and ident is not None and _identity(Path(i)) == ident:
            raise ConfigError(f"{what} {_q(p)} is the input {_q(i)}; accepted: another path")
    if k == "a directory":
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(f"{what} {_q(p)}: directory is not writable")
    else:
        check_writable_location(p, what)
    return p


# ---------------------------------------------------------------------- atomic writes
def new_file_mode() -> int:
    """The mode ``open`` gives a new file under this process's umask (0666 less umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; rename it to ``path`` on success,
    remove it on failure (so ``path`` holds the old bytes or the new, never a mix).

    The file gets the mode ``open`` would give it (0666 less the umask), or keeps the
    mode of the regular file it replaces. Something other than a regular file appearing
    at ``path`` meanwhile is refused (ConfigError); an OSError while writing (a full disk)
    becomes :class:`WriteError` naming ``path`` and the cause."""
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        os.close(fd)
    except OSError as exc:
        raise WriteError(f"cannot write {_q(p)}: {_cause(exc)}") from None
    try:
        try:
            yield Path(tmp)
            k = kind(p)
            _refuse_special(p, "output", k, "a regular file or a new path")
            mode = stat.S_IMODE(os.stat(p).st_mode) if k == "a regular file" else new_file_mode()
            os.chmod(tmp, mode)
            os.replace(tmp, p)
        except OSError as exc:
            raise WriteError(f"cannot write {_q(p)}: {_cause(exc)}") from None
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


def _entries(root: Path, what: str) -> Iterator[tuple[str, os.DirEntry]]:
    """Every non-directory entry under ``root`` (relative POSIX path, entry), depth first,
    never following links, lazily: a caller that stops at the first foreign entry reads
    no further. An unreadable directory is a ConfigError."""
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise ConfigError(
                f"{what} {_q(root)}: cannot read {_q(d)} ({_cause(exc)}); choose a new or "
                "empty directory"
            ) from None
        subdirs = []
        for e in items:
            if e.is_dir(follow_symlinks=False):
                subdirs.append(Path(e.path))
            else:
                yield Path(e.path).relative_to(root).as_posix(), e
        stack.extend(reversed(subdirs))


def previous_output(root, name: str, tool: str, *, what: str = "--out") -> dict[str, str]:
    """For an output directory ``root`` that a command may reuse: check that it is new,
    empty or holds only regular files its manifest proves (hash matches) plus leftover
    temporary files of listed or planned names; return ``{relative path: sha256}`` of the
    proven files ("" for a temporary file). Touches nothing, and stops at the first
    foreign entry: without a manifest that is the first file found."""
    root = Path(root)
    check_output_dir(root, what=what)
    if not root.exists():
        return {}
    entries = _entries(root, what)
    first = next(entries, None)
    if first is None:
        return {}
    if kind(root / name, what) != "a regular file":
        raise ConfigError(
            f"{what} {_q(root)} holds files not written by {tool!r} (e.g. {first[0]!r}; "
            "it has no manifest of them); accepted: a new or empty directory, or one "
            f"{tool!r} wrote"
        )
    names: list[str] = []
    hashes = read_manifest(root, name, tool, planned=names)
    names += [*hashes, name]  # the manifest's own interrupted write leaves a temp file too
    proven: dict[str, str] = {}
    for rel, entry in [first, *entries]:
        if rel == name:
            continue
        regular = entry.is_file(follow_symlinks=False)
        if regular and _own_temp(rel, names):
            proven[rel] = ""
            continue
        if not (regular and rel in hashes and sha256(root / rel) == hashes[rel]):
            what_it_is = (
                "" if regular else f", {describe(entry.stat(follow_symlinks=False).st_mode)}"
            )
            raise ConfigError(
                f"{what} {_q(root)} holds a file that its manifest does not prove to be "
                f"{tool!r} output ({rel!r}{what_it_is}: unlisted or changed since); move it "
                "or choose another directory (nothing was touched)"
            )
        proven[rel] = hashes[rel]
    return proven
