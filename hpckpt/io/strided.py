"""Strided (non-contiguous) numpy arrays as IO buffers, without copying them whole.

A Variable may alias the caller's array (``from_local(..., copy=False)``): a view
such as ``u[1:-1, 1:-1]`` of a field with ghost cells. Saves read from it and
restores write into it directly:

* :func:`memory_split` finds the dimensions whose index selects a contiguous block
  of memory (a row of the interior), so that file runs can be cut to match;
* :func:`c_order_blocks` walks the array's C-order bytes as contiguous buffers:
  views of its contiguous blocks, or, when they are small, copies of a few rows
  into one scratch buffer of at most ``max_bytes`` (checksums of strided arrays);
* :func:`strided_type` describes the array's memory as an MPI datatype (nested
  ``hvector`` over its strides), so that MPI-IO and point-to-point transfers move
  the bytes from and to it without a packing copy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
from mpi4py import MPI

__all__ = [
    "BLOCK_BYTES",
    "MIN_VIEW_BYTES",
    "COrderCursor",
    "c_order_blocks",
    "crc_of",
    "memory_split",
    "run_bytes",
    "strided_type",
]

BLOCK_BYTES = 4 << 20
"""Most bytes :func:`c_order_blocks` copies at a time (the scratch bound)."""
MIN_VIEW_BYTES = 4096
"""Contiguous blocks at least this large are used in place; smaller ones are copied
a few at a time (one call per tiny block would cost more than the copy)."""


def memory_split(a: np.ndarray) -> int:
    """The smallest ``m`` such that every ``a[i_0, ..., i_{m-1}]`` is C-contiguous.

    0 for a C-contiguous array; ``a.ndim`` when even the last dimension is strided.
    """
    if a.flags.c_contiguous:
        return 0
    expect = a.dtype.itemsize
    m = a.ndim
    for d in range(a.ndim - 1, -1, -1):
        if a.shape[d] != 1 and a.strides[d] != expect:
            break
        expect *= a.shape[d]
        m = d
    return m


def run_bytes(a: np.ndarray) -> int:
    """Bytes of each contiguous block of ``a`` (all of it when it is C-contiguous)."""
    m = memory_split(a)
    return math.prod(a.shape[m:]) * a.dtype.itemsize


def c_order_blocks(a: np.ndarray, max_bytes: int = BLOCK_BYTES) -> Iterator[np.ndarray]:
    """``a``'s bytes in C order, as 1-D uint8 contiguous buffers of at most ``max_bytes``.

    Views where ``a``'s memory is contiguous; otherwise copies of a few rows in one
    reused scratch buffer of at most ``max_bytes`` (use each block before the next).
    """
    if a.flags.c_contiguous:
        flat = a.reshape(-1).view(np.uint8)
        for lo in range(0, flat.size, max_bytes):
            yield flat[lo : lo + max_bytes]
        return
    n = a.shape[0]
    row = a.nbytes // n if n else 0
    if not row:
        return
    first = a[0, ...]
    if row > max_bytes or (row >= MIN_VIEW_BYTES and first.flags.c_contiguous):
        for i in range(n):
            yield from c_order_blocks(a[i, ...], max_bytes)
        return
    k = max(1, max_bytes // row)
    scratch = np.empty(min(k, n) * row, dtype=np.uint8)
    for i in range(0, n, k):
        part = a[i : i + k]
        buf = scratch[: part.nbytes]
        np.copyto(buf.view(a.dtype).reshape(part.shape), part)
        yield buf


def crc_of(a: np.ndarray, fn: Callable[..., int], value: int = 0) -> int:
    """The checksum ``fn`` of ``a``'s C-order bytes, in bounded chunks (any strides)."""
    for blk in c_order_blocks(a):
        value = fn(blk, value)
    return value


class COrderCursor:
    """Consumes a strided array's C-order bytes in order, checksumming as it goes."""

    def __init__(self, a: np.ndarray, fn: Callable[..., int]) -> None:
        self._blocks = c_order_blocks(a)
        self._cur: np.ndarray | None = None
        self._pos = 0
        self.fn = fn
        self.crc = 0

    def feed(self, nbytes: int) -> None:
        """Checksum the next ``nbytes`` bytes."""
        while nbytes > 0:
            if self._cur is None or self._pos >= self._cur.size:
                self._cur = next(self._blocks)
                self._pos = 0
            take = min(nbytes, self._cur.size - self._pos)
            self.crc = self.fn(self._cur[self._pos : self._pos + take], self.crc)
            self._pos += take
            nbytes -= take


def strided_type(a: np.ndarray, owned: list[MPI.Datatype]) -> tuple[int, MPI.Datatype]:
    """``(address, committed datatype)`` describing ``a``'s memory (one element of it).

    C-contiguous arrays are one block of bytes; others nest ``hvector`` types over
    the strides of the dimensions before their contiguous blocks. Every datatype
    created is appended to ``owned`` (the caller frees them).
    """
    addr = int(a.__array_interface__["data"][0])
    m = memory_split(a)
    t = MPI.BYTE.Create_contiguous(math.prod(a.shape[m:]) * a.dtype.itemsize)
    owned.append(t)
    for d in range(m - 1, -1, -1):
        t = t.Create_hvector(a.shape[d], 1, a.strides[d])
        owned.append(t)
    t.Commit()
    return addr, t
