"""In-run checkpoints of the reproduction's packs: DIR/checkpoints/PACK_ID.pt.

A pack that runs longer than :data:`EVERY_SECONDS` of compute saves its state (for the
two-layer packs the engine's fit state, :mod:`..twolayer.fitstate`) that often, so a kill
loses minutes, and the same command resumes the pack from it with exactly the numbers of
an uninterrupted run. Once the pack's runs are in the store its checkpoint is cleared.

A checkpoint file is a header line and a payload::

    FA-REPRODUCE-CHECKPOINT 1\\n
    {"tool": ..., "identity": {profile, seed, version}, "pack_id": ..., "sha256": ...,
     "size": ...}\\n
    torch.save(state) bytes

written to a temporary file beside it and renamed into place (a kill leaves the old
checkpoint or the new one), loaded with ``torch.load(..., weights_only=True)`` only after
the header names this reproduction and this pack and the payload's SHA-256 matches. The
header binds the file to the directory's manifest identity (:mod:`.outdir`): the manifest
lists every pack's checkpoint name among its planned files, and :func:`verify` proves a
file there to be this reproduction's own; only a proven checkpoint is ever deleted. A file
that is corrupt, or a checkpoint of another reproduction or pack, is refused with one line
naming it and how to start afresh; nothing is touched.

``FA_CHECKPOINT_SECONDS`` sets the interval (seconds of compute, default 300).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

from ..errors import ConfigError, WriteError
from ..outputs import atomic_write_bytes, kind

DIRECTORY = "checkpoints"
SUFFIX = ".pt"
MAGIC = b"FA-REPRODUCE-CHECKPOINT 1\n"
TOOL = "fa reproduce"
EVERY_SECONDS = 300.0  # the bound: a kill loses at most this much compute per pack
ENV = "FA_CHECKPOINT_SECONDS"
_MAX_EVERY = 86400.0
_MAX_HEADER = 1 << 16


def every_seconds() -> float:
    """The interval between checkpoints: ``FA_CHECKPOINT_SECONDS`` or :data:`EVERY_SECONDS`;
    a bad value is one ConfigError line."""
    text = os.environ.get(ENV)
    if text is None or text.strip() == "":
        return EVERY_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value <= _MAX_EVERY):
        raise ConfigError(
            f"{ENV}={text!r} is not an interval; accepted: seconds of compute between "
            f"checkpoints, a number > 0 and <= {_MAX_EVERY:g} (default {EVERY_SECONDS:g})"
        )
    return value


def relative(pack_id: str) -> str:
    """A pack's checkpoint, relative to the reproduction directory."""
    return f"{DIRECTORY}/{pack_id}{SUFFIX}"


def _afresh(path: Path) -> str:
    return (
        f"delete {str(path)!r} to recompute its pack from the start, or choose a new --out "
        "(nothing was touched)"
    )


def _header(path: Path) -> tuple[dict, bytes]:
    """(header, payload) of checkpoint ``path``, checked for form and SHA-256 only."""
    k = kind(path, "checkpoint")
    if k != "a regular file":
        raise ConfigError(f"checkpoint {str(path)!r} is {k}, not a regular file; {_afresh(path)}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"checkpoint {str(path)!r} cannot be read ({exc.strerror}); {_afresh(path)}"
        ) from None
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    try:
        if not data.startswith(MAGIC) or end < 0:
            raise ValueError("not a checkpoint of fa reproduce")
        head = json.loads(data[len(MAGIC) : end].decode("utf-8"))
        if not isinstance(head, dict) or head.get("tool") != TOOL:
            raise ValueError("not a checkpoint of fa reproduce")
        payload = data[end + 1 :]
        if len(payload) != head.get("size") or hashlib.sha256(payload).hexdigest() != head.get(
            "sha256"
        ):
            raise ValueError("its contents do not match their recorded SHA-256")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"checkpoint {str(path)!r} is corrupt ({exc}); {_afresh(path)}") from None
    return head, payload


def describe(ident: dict) -> str:
    """A reproduction's identity in words: its profile, seed and package version."""
    return (
        f"profile {ident.get('profile')!s}, seed {ident.get('seed')!s}, "
        f"feedback-alignment {ident.get('version')!s}"
    )


def verify(path, identity: dict, pack_id: str | None = None) -> tuple[dict, bytes]:
    """(header, payload) of checkpoint ``path`` after proving it a checkpoint of the
    reproduction ``identity`` (and of pack ``pack_id``, default: the one its name says);
    one ConfigError line otherwise. Reads only."""
    path = Path(path)
    head, payload = _header(path)
    pack_id = path.name.removesuffix(SUFFIX) if pack_id is None else pack_id
    if head.get("identity") != identity or head.get("pack_id") != pack_id:
        held = head.get("identity") if isinstance(head.get("identity"), dict) else {}
        raise ConfigError(
            f"checkpoint {str(path)!r} is from another run (pack {head.get('pack_id')!r} of "
            f"{describe(held)}); asked: pack {pack_id!r} of {describe(identity)}; "
            f"{_afresh(path)}"
        )
    return head, payload


class Checkpoint:
    """One pack's in-run checkpoint (a regular file in DIR/checkpoints/, written by a
    temporary file + os.replace, loaded with torch.load(..., weights_only=True)).

    Picklable: the executor sends it with the pack to the worker, whose clock counts the
    compute between saves."""

    def __init__(self, out, identity: dict, pack_id: str, every: float | None = None):
        self.out = Path(out)
        self.path = self.out / relative(pack_id)
        self.identity, self.pack_id = dict(identity), pack_id
        self.every_seconds = every_seconds() if every is None else float(every)
        self._since: float | None = None  # when the compute since the last save began

    def __getstate__(self):
        return {**self.__dict__, "_since": None}  # another process: its own clock

    def load(self) -> dict | None:
        """The state saved last, or None when there is none."""
        self._since = time.monotonic()
        if kind(self.path, "checkpoint") is None:
            return None
        _, payload = verify(self.path, self.identity, self.pack_id)
        import torch

        try:
            state = torch.load(io.BytesIO(payload), weights_only=True)
        except Exception as exc:  # noqa: BLE001 -- whatever the unpickler says: one line
            raise ConfigError(
                f"checkpoint {str(self.path)!r} cannot be loaded ({type(exc).__name__}); "
                f"{_afresh(self.path)}"
            ) from None
        if not isinstance(state, dict):
            raise ConfigError(f"checkpoint {str(self.path)!r} holds no state; {_afresh(self.path)}")
        return state

    def due(self) -> bool:
        """True when >= every_seconds of compute since the last save (or load)."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        return now - self._since >= self.every_seconds

    def save(self, state: dict) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        payload = buf.getvalue()
        head = {
            "tool": TOOL,
            "identity": self.identity,
            "pack_id": self.pack_id,
            "sha256": hashlib.sha256(payload).hexdigest(),
            "size": len(payload),
        }
        folder = self.path.parent
        if kind(folder, "checkpoint") not in (None, "a directory"):
            raise WriteError(
                f"cannot write checkpoint {str(self.path)!r}: {str(folder)!r} is "
                f"{kind(folder, 'checkpoint')}, not a directory"
            )
        data = MAGIC + json.dumps(head, sort_keys=True).encode() + b"\n" + payload
        atomic_write_bytes(self.path, data)
        self._since = time.monotonic()

    def clear(self) -> None:
        """Delete the checkpoint (after the pack's runs are in the store), only once it is
        proven this reproduction's checkpoint of this pack; a file that is not is left."""
        if kind(self.path, "checkpoint") != "a regular file":
            return
        try:
            verify(self.path, self.identity, self.pack_id)
        except ConfigError:
            return  # not provably ours: never deleted
        self.path.unlink(missing_ok=True)
