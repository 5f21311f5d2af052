"""Checkpoint-management helpers of TensorFlow: the state file, existence, removal, waiting.

The counterparts of ``tf.train.get_checkpoint_state``, ``update_checkpoint_state``,
``checkpoint_exists``, ``remove_checkpoint``, ``checkpoints_iterator`` and
``wait_for_new_checkpoint``. They run on one process, without an MPI launcher.

Called from every rank of a job they stay correct: the functions that change files
are idempotent and atomic (the state file is replaced atomically with the same
content whoever writes it; removal skips files another rank removed first), and the
functions that wait take an optional communicator with which rank 0 alone watches
the directory and every rank gets the same answer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from mpi4py import MPI

from . import _dist
from .errors import InvalidStateFileError
from .io import (
    checkpoint_exists as _index_exists,
)
from .io import (
    latest_checkpoint,
    normalize_prefix,
    read_state,
    remove_checkpoint_files,
    state_from_paths,
    write_state,
)

__all__ = [
    "CheckpointStateInfo",
    "checkpoint_exists",
    "checkpoints_iterator",
    "get_checkpoint_state",
    "remove_checkpoint",
    "update_checkpoint_state",
    "wait_for_new_checkpoint",
]

log = logging.getLogger("hpckpt")


@dataclass(frozen=True)
class CheckpointStateInfo:
    """The state file of a directory, with TensorFlow's ``CheckpointState`` field names.

    Paths are the directory joined with the paths the state file records.

    Attributes:
        model_checkpoint_path: The latest checkpoint.
        all_model_checkpoint_paths: The managed checkpoints, oldest first.
        all_model_checkpoint_timestamps: Their save times (seconds since the epoch).
        last_preserved_timestamp: The time of the last checkpoint preserved by
            ``keep_checkpoint_every_n_hours`` (or of the last ``Checkpoint.save``).
    """

    model_checkpoint_path: str
    all_model_checkpoint_paths: list[str]
    all_model_checkpoint_timestamps: list[float]
    last_preserved_timestamp: float


def get_checkpoint_state(checkpoint_dir: str | os.PathLike) -> CheckpointStateInfo | None:
    """The state file of ``checkpoint_dir``, or ``None`` if it has none.

    Raises:
        InvalidStateFileError: (a ``ValueError``) The state file is empty, damaged, not
            an hpckpt state file, or names no latest checkpoint.
    """
    directory = os.fspath(checkpoint_dir)
    state = read_state(directory)
    if state is None:
        return None
    if state.latest is None:
        raise InvalidStateFileError(f"invalid checkpoint state loaded from {directory!r}")
    return CheckpointStateInfo(
        os.path.join(directory, state.latest),
        [os.path.join(directory, p) for p, _ in state.checkpoints],
        [t for _, t in state.checkpoints],
        state.last_preserved_timestamp,
    )


def update_checkpoint_state(
    save_dir: str | os.PathLike,
    model_checkpoint_path: str | os.PathLike,
    all_model_checkpoint_paths: Sequence[str | os.PathLike] | None = None,
    all_model_checkpoint_timestamps: Sequence[float] | None = None,
    last_preserved_timestamp: float | None = None,
) -> None:
    """Replace the state file of ``save_dir`` (atomically), as TensorFlow's function does.

    ``model_checkpoint_path`` becomes the latest checkpoint and is appended to
    ``all_model_checkpoint_paths`` unless it is their last entry. A relative path is
    relative to the current directory when ``save_dir`` is relative, else to
    ``save_dir``. The state file stores every path relative to ``save_dir``, in which
    they must lie. Without timestamps, a later ``CheckpointManager`` does not manage
    (nor delete) the listed checkpoints, as in TensorFlow.

    Idempotent and atomic: several ranks may call it with the same arguments.

    Raises:
        ValueError: A path lies outside ``save_dir``, or the timestamps do not match
            the paths.
    """
    directory = os.fspath(save_dir)
    paths = [os.fspath(p) for p in all_model_checkpoint_paths or ()]
    state = state_from_paths(
        directory,
        os.fspath(model_checkpoint_path),
        paths,
        all_model_checkpoint_timestamps,
        last_preserved_timestamp,
    )
    write_state(directory, state)


def checkpoint_exists(checkpoint_prefix: str | os.PathLike) -> bool:
    """Whether a committed checkpoint exists at ``checkpoint_prefix`` (its index exists)."""
    return _index_exists(normalize_prefix(checkpoint_prefix))


def remove_checkpoint(checkpoint_prefix: str | os.PathLike) -> None:
    """Remove the files of the checkpoint at ``checkpoint_prefix`` (not the state file).

    Its index goes first, so the checkpoint is no longer committed even if removing
    its data is interrupted. Idempotent, and safe from several ranks at once.
    """
    remove_checkpoint_files(normalize_prefix(checkpoint_prefix))


def _wait(
    directory: str, last: str | None, seconds_to_sleep: float, timeout: float | None
) -> str | None:
    log.info("Waiting for new checkpoint at %s", directory)
    stop = None if timeout is None else time.time() + timeout
    while True:
        path = latest_checkpoint(directory)
        if path is not None and path != last:
            log.info("Found new checkpoint at %s", path)
            return path
        if stop is not None and time.time() + seconds_to_sleep > stop:
            return None
        time.sleep(seconds_to_sleep)


def _on_root(comm: MPI.Comm | None, what: str, fn: Callable[[], object]) -> object:
    """``fn()``; with ``comm``, rank 0's result on every rank (agreed)."""
    if comm is None:
        return fn()
    got = _dist.run_agreed(comm, what, lambda: fn() if comm.Get_rank() == 0 else None)
    return _dist.bcast_json(comm, got)


def wait_for_new_checkpoint(
    checkpoint_dir: str | os.PathLike,
    last_checkpoint: str | None = None,
    seconds_to_sleep: float = 1,
    timeout: float | None = None,
    *,
    comm: MPI.Comm | None = None,
) -> str | None:
    """Wait until ``checkpoint_dir`` has a latest checkpoint other than ``last_checkpoint``.

    Polls the state file every ``seconds_to_sleep`` seconds.

    Args:
        checkpoint_dir: The directory.
        last_checkpoint: The path already seen (``None``: any checkpoint is new).
        seconds_to_sleep: Seconds between polls.
        timeout: Give up after this many seconds (``None``: wait forever).
        comm: With a communicator, rank 0 polls and every rank returns its answer
            (collective: call on all ranks); without, this process polls.

    Returns:
        The new checkpoint's path, or ``None`` on timeout.
    """
    directory = os.fspath(checkpoint_dir)
    if not seconds_to_sleep > 0:
        raise ValueError(f"seconds_to_sleep must be positive, got {seconds_to_sleep!r}")
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be a non-negative number or None, got {timeout!r}")
    found = _on_root(
        comm,
        f"waiting for a checkpoint in {directory!r}",
        lambda: _wait(directory, last_checkpoint, seconds_to_sleep, timeout),
    )
    return None if found is None else str(found)


def checkpoints_iterator(
    checkpoint_dir: str | os.PathLike,
    min_interval_secs: float = 0,
    timeout: float | None = None,
    timeout_fn: Callable[[], bool] | None = None,
    *,
    comm: MPI.Comm | None = None,
) -> Iterator[str]:
    """Yield each new latest checkpoint of ``checkpoint_dir`` as it appears (for evaluation jobs).

    Waits (``timeout`` seconds at most each time, ``None``: forever) for a latest
    checkpoint other than the one yielded last, then yields its path; yields at
    most one path per ``min_interval_secs``. On a timeout it stops, unless
    ``timeout_fn`` is given: then it stops when ``timeout_fn()`` returns true, and
    waits again otherwise. Checkpoints saved while the caller works on the last one
    are skipped: only the latest is yielded.

    Args:
        checkpoint_dir: The directory.
        min_interval_secs: The least time between two yields.
        timeout: Seconds to wait for each new checkpoint.
        timeout_fn: Called after each timeout; true ends the iteration.
        comm: With a communicator, rank 0 watches the directory (and calls
            ``timeout_fn``) and every rank yields the same paths (collective: iterate
            on all ranks); without, this process watches.
    """
    directory = os.fspath(checkpoint_dir)
    if not min_interval_secs >= 0:
        raise ValueError(f"min_interval_secs must be non-negative, got {min_interval_secs!r}")
    path = None
    while True:
        new = wait_for_new_checkpoint(directory, path, timeout=timeout, comm=comm)
        if new is None:
            if timeout_fn is None:
                log.info("Timed out waiting for a checkpoint in %s", directory)
                return
            done = _on_root(
                comm,
                f"timeout_fn of checkpoints_iterator({directory!r})",
                lambda: bool(timeout_fn()),
            )
            if done:
                return
            continue
        start = time.time()
        path = new
        yield path
        left = start + min_interval_secs - time.time()
        if left > 0:
            time.sleep(left)
