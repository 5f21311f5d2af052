"""Exception types raised by hpckpt."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CheckpointChangedError",
    "CheckpointError",
    "CorruptCheckpointError",
    "NotFoundError",
    "RankFailure",
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


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's files are damaged, hostile, or fail their checksums."""


class CheckpointChangedError(CheckpointError):
    """A checkpoint was replaced (``write(P)`` again) while it was being read, again and
    again: the reader gave up. Nothing is wrong with the files; read again later."""


class NotFoundError(FileNotFoundError):
    """A checkpoint path or directory does not exist."""
