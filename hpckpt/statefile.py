"""The checkpoint state file ``DIR/checkpoint``: which checkpoints exist, which is latest.

JSON with paths relative to ``DIR`` (a moved directory still resolves), written
atomically by one rank. Readers validate it and never trust a path that leaves
``DIR``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field

from .errors import CorruptCheckpointError
from .io import checkpoint_exists
from .io._fsutil import atomic_write

__all__ = ["STATE_FILE", "CheckpointState", "latest_checkpoint", "read_state", "write_state"]

STATE_FILE = "checkpoint"
_FORMAT = "hpckpt-state"


@dataclass
class CheckpointState:
    """The content of the state file.

    Attributes:
        checkpoints: ``(relative path, save time)`` of every kept checkpoint, oldest first.
        latest: The relative path of the latest checkpoint (or ``None``).
        last_preserved_timestamp: Time of the last checkpoint kept by
            ``keep_checkpoint_every_n_hours``.
    """

    checkpoints: list[tuple[str, float]] = field(default_factory=list)
    latest: str | None = None
    last_preserved_timestamp: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "version": 1,
                "latest": self.latest,
                "checkpoints": [{"path": p, "time": t} for p, t in self.checkpoints],
                "last_preserved_timestamp": self.last_preserved_timestamp,
            },
            indent=1,
        )


def _check_rel(p: object) -> str:
    if not isinstance(p, str) or not p or "\x00" in p or os.path.isabs(p) or "\\" in p:
        raise CorruptCheckpointError(f"state file: bad checkpoint path {p!r:.120}")
    if ".." in p.split("/"):
        raise CorruptCheckpointError(f"state file: checkpoint path {p!r:.120} leaves the directory")
    return p


def relative_to(directory: str, path: str) -> str:
    """``path`` relative to ``directory`` (it must lie inside it)."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(directory))
    if rel.startswith(".."):
        raise ValueError(f"checkpoint {path!r} is not inside directory {directory!r}")
    return rel


def read_state(directory: str) -> CheckpointState | None:
    """Read ``directory/checkpoint``; ``None`` if there is none.

    Raises:
        CorruptCheckpointError: The state file is damaged or hostile.
    """
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 26)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        raise CorruptCheckpointError(f"state file {path!r} is a directory") from None
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise CorruptCheckpointError(f"state file {path!r} is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("version") != 1:
        raise CorruptCheckpointError(f"state file {path!r} is not an hpckpt state file")
    ckpts = doc.get("checkpoints")
    if not isinstance(ckpts, list):
        raise CorruptCheckpointError(f"state file {path!r} has no checkpoint list")
    out = []
    for c in ckpts:
        if not isinstance(c, dict) or not isinstance(c.get("time"), (int, float)):
            raise CorruptCheckpointError(f"state file {path!r} has a bad entry {c!r:.120}")
        out.append((_check_rel(c.get("path")), float(c["time"])))
    latest = doc.get("latest")
    if latest is not None:
        _check_rel(latest)
    lpt = doc.get("last_preserved_timestamp", time.time())
    if not isinstance(lpt, (int, float)):
        raise CorruptCheckpointError(f"state file {path!r} has a bad last_preserved_timestamp")
    return CheckpointState(out, latest, float(lpt))


def write_state(directory: str, state: CheckpointState) -> None:
    """Write ``directory/checkpoint`` atomically (tmp + fsync + rename + dir fsync)."""
    os.makedirs(directory, exist_ok=True)
    atomic_write(
        os.path.join(directory, STATE_FILE), state.to_json().encode(), secrets.token_hex(4)
    )


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> str | None:
    """The path of the newest committed checkpoint in ``checkpoint_dir``, or ``None``.

    Reads the state file; if its latest checkpoint is gone or uncommitted, walks
    back to the newest one that is committed. Runs on one process (no MPI needed).
    """
    directory = os.fspath(checkpoint_dir)
    state = read_state(directory)
    if state is None:
        return None
    candidates = [p for p, _ in state.checkpoints]
    if state.latest is not None:
        candidates = [p for p in candidates if p != state.latest] + [state.latest]
    for rel in reversed(candidates):
        full = os.path.join(directory, rel)
        if checkpoint_exists(full):
            return full
    return None
