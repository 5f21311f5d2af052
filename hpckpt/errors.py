"""Exception types raised by hpckpt."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CheckpointChangedError",
    "CheckpointError",
    "CheckpointValueError",
    "CorruptCheckpointError",
    "InvalidStateFileError",
    "KeyNotFoundError",
    "NotFoundError",
    "RankFailure",
    "WriteCallbackError",
]


@dataclass(frozen=True)
class RankFailure:
    """What went wrong on one rank.

    Attributes:
        rank: The rank (in the checkpoint's communicator) that failed.
        type: The exception's class name, e.g. ``"OSError"``.
        message: The exception's message.
    """

    rank: int
    type: str
    message: str

    def __str__(self) -> str:
        return f"rank {self.rank}: {self.type}: {self.message}"


class CheckpointError(RuntimeError):
    """A collective checkpoint operation failed.

    Raised identically on every rank. ``failures`` lists each failing rank with
    the type and message of the exception it saw.
    """

    def __init__(self, message: str, failures: tuple[RankFailure, ...] = ()) -> None:
        self.failures = tuple(failures)
        if self.failures:
            details = "; ".join(str(f) for f in self.failures)
            message = f"{message} ({details})"
        super().__init__(message)


class CheckpointValueError(CheckpointError, ValueError):
    """A collective operation failed on a bad value, where TensorFlow raises ``ValueError``.

    For example a shape or dtype mismatch between a checkpoint and a variable on
    restore, or a tracked list that cannot be saved after an untracked mutation.
    Raised identically on every rank; catch it as :class:`CheckpointError` or as
    ``ValueError``.
    """


class WriteCallbackError(CheckpointError):
    """A write callback (``CheckpointOptions(write_callbacks=...)``) raised.

    The checkpoint was committed (and the state file updated) before the callbacks
    ran: it is complete and counted. Raised identically on every rank.
    """


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's files are damaged, hostile, or fail their checksums."""


class CheckpointChangedError(CheckpointError):
    """A checkpoint was replaced (``write(P)`` again) while it was being read, again and
    again: the reader gave up. Nothing is wrong with the files; read again later."""


class InvalidStateFileError(CorruptCheckpointError, ValueError):
    """The state file ``DIR/checkpoint`` is empty, damaged or not an hpckpt state file.

    A :class:`CorruptCheckpointError` that is also a ``ValueError``, as TensorFlow's
    ``get_checkpoint_state`` raises for an invalid state file.
    """


class NotFoundError(FileNotFoundError):
    """A checkpoint path or directory does not exist."""


class KeyNotFoundError(NotFoundError, KeyError):
    """A key is not in a checkpoint (TensorFlow's ``NotFoundError``; also a ``KeyError``)."""
