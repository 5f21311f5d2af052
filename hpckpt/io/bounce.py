"""Reads into memory that the kernel copies slowly, through a page-aligned bounce buffer.

A read from the page cache is a kernel copy (``rep movsb`` on x86) from the cached
page to the caller's memory. When the destination address is 1 to 63 bytes past the
source's modulo the page size, that copy runs 2.5-3.5x slower (4K aliasing of the
loads and stores; measured here on AMD EPYC: a warm 512 MiB ``pread`` takes 90 ms
into memory at the same page offset as the file and 220-340 ms 16 bytes past it).
That is the common case of a legacy code's arrays: numpy's large arrays start 16
bytes past a page boundary, and every dataset of a data file starts at a page-aligned
offset. hpckpt's own arrays are page-aligned (``variable.aligned_empty``); arrays that
the caller owns (``Variable.from_local(..., copy=False)``, the launcher-free reader's
outputs) are not.

:func:`read_into` reads such a destination through a small bounce buffer at the
file's page offset (so the kernel copy runs at full speed, into the cache) and copies
from there in user space, where the copy does not mind the offset: a restore into the
caller's arrays runs at the speed of one into page-aligned ones. Other destinations
are read directly. Pure logic over a file descriptor: no MPI, no HDF5.
"""

from __future__ import annotations

import os
import threading

import numpy as np

__all__ = ["BOUNCE_BYTES", "MIN_BOUNCE_READ", "read_into", "slow_distance"]

PAGE = 4096
BOUNCE_BYTES = 2 << 20
"""Size of the bounce buffer (one per thread): a few of the L2/L3 cache's worth."""

MIN_BOUNCE_READ = 64 << 10
"""Shorter reads go directly whatever their alignment (the slowdown is microseconds)."""

_local = threading.local()


def slow_distance(address: int, offset: int) -> bool:
    """Whether the kernel's copy of file ``offset`` to memory ``address`` is the slow one.

    That is when the destination lies 1 to 63 bytes (less than a cache line) past
    the source modulo the page size; a page-aligned destination for a page-aligned
    offset (distance 0) is the fast case.
    """
    return 0 < (address - offset) % PAGE < 64


def _bounce(offset: int) -> memoryview:
    """This thread's bounce buffer, positioned at the page offset of file ``offset``."""
    raw = getattr(_local, "raw", None)
    if raw is None:
        raw = _local.raw = np.empty(BOUNCE_BYTES + 2 * PAGE, dtype=np.uint8)
    skip = (offset - raw.ctypes.data) % PAGE
    return memoryview(raw[skip : skip + BOUNCE_BYTES])  # type: ignore[arg-type]


def _address(view: memoryview) -> int:
    return int(np.frombuffer(view, dtype=np.uint8).ctypes.data) if len(view) else 0


def read_into(fd: int, view: memoryview, offset: int) -> int:
    """``preadv`` file bytes ``[offset, offset + len(view))`` into ``view`` until full or EOF.

    A destination at a slow distance from the file (:func:`slow_distance`) of at
    least ``MIN_BOUNCE_READ`` bytes goes through the bounce buffer.

    Args:
        fd: The file, open for reading.
        view: A writable, contiguous byte view (``memoryview.cast("B")``).
        offset: The file offset of its first byte.

    Returns:
        The number of bytes read: ``len(view)``, or fewer at the end of the file.
    """
    n = len(view)
    done = 0
    if n >= MIN_BOUNCE_READ and slow_distance(_address(view), offset):
        while done < n:
            bounce = _bounce(offset + done)
            k = os.preadv(fd, [bounce[: min(BOUNCE_BYTES, n - done)]], offset + done)
            if k <= 0:
                return done
            view[done : done + k] = bounce[:k]
            done += k
        return done
    while done < n:
        k = os.preadv(fd, [view[done:]], offset + done)
        if k <= 0:
            return done
        done += k
    return done
