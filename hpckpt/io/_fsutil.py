"""Durable file-system steps: atomic replace, fsync of files and directories."""

from __future__ import annotations

import contextlib
import os

__all__ = ["atomic_write", "fsync_dir", "fsync_path", "remove_quietly"]


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
    tmp = f"{path}.tmp-{tmp_suffix}"
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


def remove_quietly(path: str) -> None:
    """Remove a file if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
