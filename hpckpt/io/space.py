"""Disk space for a collectively written data file (parallel HDF5).

HDF5's collective flush and close diverge between ranks when a metadata write fails
on some of them (a full disk), and then wait forever. So before any data moves, rank 0
reserves the new file's blocks with ``fallocate`` (:func:`reserve`; every contiguous
dataset, the worst case of every compressed one, the metadata): afterwards no write
inside HDF5 can run out of space, and a full disk is an ordinary, agreed error.
HDF5 trims the file to its end of allocation when it closes it. On file systems
without ``fallocate`` nothing is reserved. :func:`check_free_space` refuses to start
on a file system without room for the metadata alone.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
from collections.abc import Sequence

from .hdf5 import DatasetSpec

__all__ = [
    "METADATA_MARGIN",
    "METADATA_PER_DATASET",
    "check_free_space",
    "reservation",
    "reserve",
]

METADATA_MARGIN = 1 << 20  # bytes of HDF5 metadata reserved per file, plus per dataset:
METADATA_PER_DATASET = 4096


def check_free_space(path: str, need: int) -> None:
    """Refuse to start on a file system without room for the file's metadata.

    Raises:
        OSError: ``ENOSPC``, naming the bytes needed and free.
    """
    st = os.statvfs(os.path.dirname(path) or ".")
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise OSError(
            errno.ENOSPC,
            f"no space for the data file's metadata: {need} bytes needed, {free} free",
            os.path.dirname(path) or ".",
        )


def reservation(specs: Sequence[DatasetSpec], offsets: Sequence[int | None]) -> int:
    """Bytes to reserve for a new file: every contiguous dataset, the worst case of every
    compressed one (deflate never grows data by more than 0.1%, plus per chunk the
    early-allocated compressed fill that HDF5 replaces), and the metadata. HDF5 trims
    the file to its end of allocation when it closes it."""
    end = max((o + _nbytes(s) for s, o in zip(specs, offsets, strict=True) if o), default=0)
    chunked = 0
    for s in specs:
        if s.chunks is not None:
            nchunks = math.prod(-(-n // c) for n, c in zip(s.shape, s.chunks, strict=True))
            chunked += _nbytes(s) + _nbytes(s) // 1000 + 8192 * nchunks
    return end + chunked + METADATA_MARGIN + METADATA_PER_DATASET * len(specs)


def _nbytes(spec: DatasetSpec) -> int:
    return math.prod(spec.shape) * spec.dtype.itemsize


def reserve(path: str, size: int) -> None:
    """Allocate the first ``size`` bytes of ``path`` (``fallocate``), where the file system
    supports it (elsewhere: nothing, and a full disk is found by the writes).

    Raises:
        OSError: ``ENOSPC`` (or another error of ``fallocate``).
    """
    fallocate = getattr(_libc(), "fallocate", None)
    if fallocate is None:
        return
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int
    fd = os.open(path, os.O_RDWR)
    try:
        if fallocate(fd, 0, 0, size) != 0:
            err = ctypes.get_errno()
            if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return
            raise OSError(err, f"cannot reserve {size} bytes: {os.strerror(err)}", path)
    finally:
        os.close(fd)


_LIBC: list[ctypes.CDLL] = []


def _libc() -> ctypes.CDLL:
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]
