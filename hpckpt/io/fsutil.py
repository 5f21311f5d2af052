"""File-system steps: bounded reads, atomic replace, fsync of files and directories."""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from .. import _faults
from ..errors import CorruptCheckpointError, NotFoundError
from .paths import tmp_path

__all__ = [
    "atomic_write",
    "read_bounded",
    "read_required",
    "fsync_dir",
    "fsync_path",
    "remove_later",
    "remove_quietly",
    "wait_removals",
]

_remover: ThreadPoolExecutor | None = None
_pending: list[Future] = []
_remover_lock = threading.Lock()


def fsync_path(path: str) -> None:
    """fsync an existing file by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """fsync a directory so that renames and creations in it are durable."""
    fd = os.open(path or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, tmp_suffix: str) -> None:
    """Write ``data`` to ``path`` atomically: temporary file, fsync, rename, fsync dir.

    A reader sees either the old file or the new one, never a partial file.
    """
    tmp = tmp_path(path, tmp_suffix)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        remove_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(os.path.dirname(path))


def read_bounded(path: str, limit: int, what: str) -> bytes | None:
    """Read a small file that may be hostile: regular files only, at most ``limit`` bytes.

    The file is opened without blocking (a FIFO in its place neither blocks nor is
    read) and checked with ``fstat`` before a byte is read: anything but a regular
    file (a FIFO, a device such as ``/dev/zero`` behind a symlink, a directory) and
    anything larger than ``limit`` is refused.

    Returns:
        The content, or ``None`` when there is no such file.

    Raises:
        CorruptCheckpointError: Not a regular file, or larger than ``limit``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        raise CorruptCheckpointError(f"{what} {path!r} is a directory") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise CorruptCheckpointError(f"{what} {path!r} is {kind}")
        if st.st_size > limit:
            raise CorruptCheckpointError(
                f"{what} {path!r} has {st.st_size} bytes, more than the limit of {limit}"
            )
        # one buffer of the announced size (+1 to see growth): no second copy in memory
        buf = bytearray(min(st.st_size, limit) + 1)
        view = memoryview(buf)
        n = 0
        while n < len(buf):
            k = os.readv(fd, [view[n : n + (1 << 24)]])
            if not k:
                break
            n += k
        view.release()
        if n == len(buf):  # it grew while being read: read on, up to the limit
            rest = []
            total = n
            while total <= limit:
                b = os.read(fd, min(limit + 1 - total, 1 << 24))
                if not b:
                    break
                rest.append(b)
                total += len(b)
            if total > limit:
                raise CorruptCheckpointError(
                    f"{what} {path!r} grew beyond the limit of {limit} bytes"
                )
            return bytes(buf) + b"".join(rest)
        del buf[n:]
        # a large content stays in its buffer (bytes-like: json and MPI read it as it is)
        return bytes(buf) if n < (1 << 20) else buf  # type: ignore[return-value]
    finally:
        os.close(fd)


def read_required(path: str, limit: int, what: str, missing: str) -> bytes:
    """:func:`read_bounded` that raises :class:`NotFoundError` (``missing``) when absent."""
    data = read_bounded(path, limit, what)
    if data is None:
        raise NotFoundError(missing)
    return data


def remove_quietly(path: str) -> None:
    """Remove a file if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _remove_in_background(path: str) -> None:
    _faults.point("remove", 0)
    remove_quietly(path)


def remove_later(path: str) -> None:
    """Remove a file in a background thread (it no longer matters to any reader).

    Unlinking a large file costs about 0.3 s per GiB on ext4: deleting old data
    files after the commit must not hold up the save. Pending removals finish
    before the interpreter exits; after a crash the file is an orphan that the
    next save removes.
    """
    global _remover
    with _remover_lock:
        if _remover is None:
            _remover = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpckpt-remove")
        # finished removals are forgotten, failed ones kept for wait_removals() to report
        _pending[:] = [f for f in _pending if not f.done() or f.exception() is not None]
        _pending.append(_remover.submit(_remove_in_background, path))


def wait_removals() -> None:
    """Wait until every removal started by :func:`remove_later` has finished.

    Raises:
        OSError: The first removal that failed since the last call (each is reported once).
    """
    with _remover_lock:
        pending, _pending[:] = list(_pending), []
    first: BaseException | None = None
    for f in pending:
        e = f.exception()
        if e is not None and first is None:
            first = e
    if first is not None:
        raise first
