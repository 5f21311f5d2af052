"""The checkpoint state file ``DIR/checkpoint``: which checkpoints exist, which is latest.

JSON with paths relative to ``DIR`` (a moved directory still resolves), written
atomically by one rank. Readers validate it and never trust a path that leaves
``DIR``. :func:`resolve_latest` is THE walk back from the state file's latest
entry to the newest committed checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import CorruptCheckpointError, InvalidStateFileError
from .fsutil import atomic_write, read_bounded
from .paths import (
    STATE_FILE,
    check_inside,
    check_relative,
    checkpoint_exists,
    new_token,
    relative_to,
)

__all__ = [
    "MAX_STATE_BYTES",
    "STATE_FILE",
    "CheckpointState",
    "latest_checkpoint",
    "parse_state",
    "read_state",
    "resolve_latest",
    "state_from_paths",
    "write_state",
]

_FORMAT = "hpckpt-state"
MAX_STATE_BYTES = 1 << 26


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
        """The state file's text."""
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


def parse_state(text: bytes | str, source: str = "state file") -> CheckpointState:
    """Parse and validate the text of a state file.

    Raises:
        InvalidStateFileError: The text is not a valid state file (empty, not JSON,
            another format), or names a path that leaves the directory.
    """
    try:
        return _parse_state(text, source)
    except InvalidStateFileError:
        raise
    except CorruptCheckpointError as e:
        raise InvalidStateFileError(str(e)) from None


def _parse_state(text: bytes | str, source: str) -> CheckpointState:
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidStateFileError(f"state file {source!r} is not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT or doc.get("version") != 1:
        raise InvalidStateFileError(f"state file {source!r} is not an hpckpt state file")
    ckpts = doc.get("checkpoints")
    if not isinstance(ckpts, list):
        raise InvalidStateFileError(f"state file {source!r} has no checkpoint list")
    out = []
    for c in ckpts:
        t = c.get("time") if isinstance(c, dict) else None
        if isinstance(t, bool) or not isinstance(t, (int, float)):
            raise InvalidStateFileError(f"state file {source!r} has a bad entry {c!r:.120}")
        out.append((check_relative(c.get("path")), float(t)))
    latest = doc.get("latest")
    if latest is not None:
        check_relative(latest)
    lpt = doc.get("last_preserved_timestamp", time.time())
    if isinstance(lpt, bool) or not isinstance(lpt, (int, float)):
        raise InvalidStateFileError(f"state file {source!r} has a bad last_preserved_timestamp")
    return CheckpointState(out, latest, float(lpt))


def read_state(directory: str) -> CheckpointState | None:
    """Read ``directory/checkpoint``; ``None`` if there is none.

    Raises:
        InvalidStateFileError: The state file is damaged, hostile, or not a regular file,
            or names a checkpoint outside ``directory`` (``..``, an absolute path, or a
            symbolic link to a directory elsewhere).
    """
    path = os.path.join(directory, STATE_FILE)
    try:
        text = read_bounded(path, MAX_STATE_BYTES, "state file")
    except CorruptCheckpointError as e:
        raise InvalidStateFileError(str(e)) from None
    if text is None:
        return None
    state = parse_state(text, path)
    try:
        for rel in [p for p, _ in state.checkpoints] + [state.latest]:
            if rel is not None:
                check_inside(directory, rel, f"state file {path!r}")
    except CorruptCheckpointError as e:
        raise InvalidStateFileError(str(e)) from None
    return state


def state_from_paths(
    directory: str,
    latest: str,
    paths: Sequence[str],
    timestamps: Sequence[float] | None,
    last_preserved_timestamp: float | None,
) -> CheckpointState:
    """The state TF's ``update_checkpoint_state(directory, latest, paths, ...)`` records.

    Paths are taken as TensorFlow takes them: an absolute path as it is; a relative
    path relative to the current directory when ``directory`` is relative too, else
    relative to ``directory``. Each is stored relative to ``directory``, where it must
    lie. ``latest`` is appended to ``paths`` unless it is their last entry. Without
    ``timestamps``, every entry gets ``last_preserved_timestamp`` (default 0), so that
    no ``CheckpointManager`` adopts them (TF: entries without timestamps are never
    managed). Pure: the same arguments give the same state on every process.

    Raises:
        ValueError: A path lies outside ``directory``, or the number of timestamps
            differs from the number of paths.
    """
    paths = list(paths)
    if not paths or paths[-1] != latest:
        paths.append(latest)
    lpt = 0.0 if last_preserved_timestamp is None else float(last_preserved_timestamp)
    times = [lpt] * len(paths) if not timestamps else [float(t) for t in timestamps]
    if len(times) != len(paths):
        raise ValueError(
            f"checkpoint timestamps must match checkpoint paths (got paths {paths} and "
            f"timestamps {list(timestamps or ())})"
        )

    def rel(p: str) -> str:
        if not os.path.isabs(p):
            if os.path.isabs(directory):
                p = os.path.join(directory, p)
        out = relative_to(directory, p)
        try:
            return check_relative(os.path.normpath(out))
        except CorruptCheckpointError:
            raise ValueError(f"checkpoint {p!r} is not inside directory {directory!r}") from None

    return CheckpointState(
        [(rel(p), t) for p, t in zip(paths, times, strict=True)], rel(latest), lpt
    )


def write_state(directory: str, state: CheckpointState) -> None:
    """Write ``directory/checkpoint`` atomically (tmp + fsync + rename + dir fsync)."""
    os.makedirs(directory, exist_ok=True)
    atomic_write(os.path.join(directory, STATE_FILE), state.to_json().encode(), new_token())


def resolve_latest(directory: str, state: CheckpointState | None) -> str | None:
    """The relative path of the newest committed checkpoint the state names, or ``None``.

    The state's ``latest`` if it is committed, else the newest committed one of its
    list (a crash between commit and state update, or a deleted checkpoint).
    """
    if state is None:
        return None
    candidates = [p for p, _ in state.checkpoints]
    if state.latest is not None:
        candidates = [p for p in candidates if p != state.latest] + [state.latest]
    for rel in reversed(candidates):
        if checkpoint_exists(os.path.join(directory, rel)):
            return rel
    return None


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> str | None:
    """The path of the newest committed checkpoint in ``checkpoint_dir``, or ``None``.

    Reads the state file; if its latest checkpoint is gone or uncommitted, walks
    back to the newest one that is committed. Runs on one process (no MPI needed).
    """
    directory = os.fspath(checkpoint_dir)
    rel = resolve_latest(directory, read_state(directory))
    return None if rel is None else os.path.join(directory, rel)
