"""Reading one committed version of a checkpoint while ``write(P)`` may replace it.

An overwrite of ``P`` commits a new index (atomically) and then removes the data file
the old index named. A reader that read the old index may then find its data file
gone: that is no damage, the checkpoint changed. Two defences, used by every reader
outside a job (the reader, the command line) and, for the first, by the collective
restore:

* a reader notes the index file's identity (inode, modification time, size) before
  it reads; when it fails, it looks again: if the index was replaced meanwhile, it
  starts again (at most :data:`RETRIES` times), and then raises
  :class:`~hpckpt.errors.CheckpointChangedError`, never a false "damaged";
* the data file is opened once, right after it was validated, and every tensor is
  read through that descriptor: once open, a removal of the file does not disturb
  the reads (the version read is the one the index named).
"""

from __future__ import annotations

import os
import stat
import weakref
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from ..errors import CheckpointChangedError, CorruptCheckpointError, NotFoundError
from .index import CheckpointIndex, TensorEntry
from .load import check_data_file, read_index_file, read_tensor_serial
from .paths import data_file_path, index_path

__all__ = [
    "RETRIES",
    "OpenCheckpoint",
    "index_identity",
    "open_checkpoint",
    "retry_if_changed",
]

RETRIES = 8
T = TypeVar("T")

Identity = tuple[int, int, int]


def index_identity(prefix: str) -> Identity | None:
    """``(inode, mtime_ns, size)`` of ``P.index.json``; ``None`` if there is none.

    Each commit of ``P`` renames a new file over the index: a new identity.
    """
    try:
        st = os.stat(index_path(prefix))
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def retry_if_changed(prefix: str, attempt: Callable[[], T], what: str = "read") -> T:
    """``attempt()``, started again when it fails because ``P`` was replaced meanwhile.

    Raises:
        CheckpointChangedError: ``P`` was replaced during each of :data:`RETRIES` + 1 attempts.
        Exception: What ``attempt`` raised, when ``P`` did not change meanwhile.
    """
    for _ in range(RETRIES + 1):
        before = index_identity(prefix)
        try:
            return attempt()
        except (CorruptCheckpointError, NotFoundError, FileNotFoundError):
            if index_identity(prefix) == before:
                raise
    raise CheckpointChangedError(
        f"checkpoint {prefix!r} was replaced while being read, {RETRIES + 1} times in a row "
        f"({what}); nothing is wrong with it: read it again later"
    )


class OpenCheckpoint:
    """One committed version of a checkpoint: its validated index and its open data file.

    Attributes:
        prefix: The checkpoint path.
        index: The validated index.
        identity: The index file's identity when it was read.
    """

    def __init__(
        self, prefix: str, index: CheckpointIndex, fd: int, identity: Identity | None
    ) -> None:
        self.prefix = prefix
        self.index = index
        self.identity = identity
        self._fd = fd
        self._close = weakref.finalize(self, os.close, fd)

    @classmethod
    def of(
        cls,
        prefix: str,
        index: CheckpointIndex,
        identity: Identity | None,
        *,
        check_size: bool = True,
    ) -> OpenCheckpoint:
        """Open the data file of ``index`` (already read and validated by the caller).

        Raises:
            NotFoundError: The data file is missing.
            CorruptCheckpointError: It is not a regular file (of the size the index says,
                unless not ``check_size``).
        """
        return cls(prefix, index, _open_data(prefix, index, check_size), identity)

    @property
    def data_path(self) -> str:
        """The data file's path (it may be gone since it was opened)."""
        return data_file_path(self.prefix, self.index.data_file)

    def read(
        self,
        entry: TensorEntry,
        *,
        verify: bool = True,
        on_bytes: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """One whole tensor of this version (checksums verified unless ``verify`` is false;
        ``on_bytes(n)`` is told of each chunk read, see :func:`.load.read_tensor_serial`).

        Raises:
            CorruptCheckpointError: Short read or checksum mismatch.
        """
        if not self._close.alive:
            raise ValueError(f"checkpoint {self.prefix!r} was closed")
        return read_tensor_serial(
            self.prefix, self.index, entry, verify=verify, on_bytes=on_bytes, fd=self._fd
        )

    def close(self) -> None:
        """Close the data file (idempotent)."""
        self._close()


def _open_data(prefix: str, index: CheckpointIndex, check_size: bool = True) -> int:
    path = data_file_path(prefix, index.data_file)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NotFoundError(f"data file {path!r} is missing") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (check_size and st.st_size != index.data_size):
        os.close(fd)
        raise CorruptCheckpointError(
            f"data file {path!r} is not a regular file of {index.data_size} bytes"
        )
    return fd


def open_checkpoint(prefix: str, *, check_data: bool = True) -> OpenCheckpoint:
    """Read and validate ``P.index.json``, validate and open its data file.

    Started again if ``P`` is replaced meanwhile (see :func:`retry_if_changed`).

    Raises:
        NotFoundError: No committed checkpoint at ``prefix``, or its data file is gone.
        CorruptCheckpointError: The index or the data file is damaged or hostile.
        CheckpointChangedError: ``P`` kept being replaced.
    """

    def attempt() -> OpenCheckpoint:
        identity = index_identity(prefix)
        index, _ = read_index_file(prefix)
        fd = _open_data(prefix, index)
        try:
            if check_data:
                check_data_file(prefix, index)
        except BaseException:
            os.close(fd)
            raise
        return OpenCheckpoint(prefix, index, fd, identity)

    return retry_if_changed(prefix, attempt, "open")
