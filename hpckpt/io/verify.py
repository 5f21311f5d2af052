"""Checksum verification of saved slices.

A restore verifies every saved slice it uses whole (each is read by one owner
rank), so a checksum always covers exactly the bytes it was computed on:
:class:`SliceCheck` accumulates a slice's CRC chunk by chunk while the slice is
read (the chunk is still in the cache: fused, no second pass over memory), then
compares. :func:`verify_whole` checks every slice of a whole tensor (tools).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CorruptCheckpointError
from .checksum import checksum_function
from .index import TensorEntry, slice_byte_range
from .strided import COrderCursor, crc_of

if TYPE_CHECKING:
    from .mpiio import Piece

__all__ = ["SliceCheck", "chunk_listener", "mismatch", "verify_whole"]


def mismatch(entry: TensorEntry, i: int) -> CorruptCheckpointError:
    """The error for saved slice ``i`` of ``entry`` failing its checksum."""
    start, shape = entry.slicing.box(i)
    lo, hi = slice_byte_range(entry, start, shape)
    where = (
        f"uncompressed bytes [{lo}, {hi}) of a {entry.filters.spec} dataset"
        if entry.filters is not None
        else f"file bytes [{lo}, {hi})"
    )
    return CorruptCheckpointError(
        f"checksum mismatch in tensor {entry.key!r} (dataset {entry.dataset!r}), slice start "
        f"{list(start)} shape {list(shape)}, {where}"
    )


class SliceCheck:
    """The running checksum of one saved slice being read into a buffer.

    Args:
        entry: The tensor.
        index: The slice's number.
        buffer: Where the slice's bytes arrive (exactly the slice; C-contiguous, or a
            strided view of the caller's array, walked in C order without a copy).
        fn: The index's checksum function.
    """

    __slots__ = ("array", "buffer", "crc", "cursor", "entry", "fn", "index", "seen", "size")

    def __init__(
        self, entry: TensorEntry, index: int, buffer: np.ndarray, fn: Callable[..., int]
    ) -> None:
        self.entry = entry
        self.index = index
        self.array = buffer
        contiguous = buffer.flags.c_contiguous
        # bytes as a memoryview: slicing one per chunk costs a fraction of numpy's
        self.buffer = buffer.reshape(-1).view(np.uint8).data if contiguous else None
        self.cursor = None if contiguous else COrderCursor(buffer, fn)
        self.size = int(buffer.nbytes)
        self.fn = fn
        self.crc = 0
        self.seen = 0

    def update(self, lo: int, hi: int) -> None:
        """Bytes ``[lo, hi)`` of the buffer (C order) have arrived: checksum them now."""
        if lo != self.seen:  # out of order: fall back to a whole pass in finish()
            self.seen = -1
            return
        if self.cursor is not None:
            self.cursor.feed(hi - lo)
            self.crc = self.cursor.crc
        else:
            assert self.buffer is not None
            self.crc = self.fn(self.buffer[lo:hi], self.crc)
        self.seen = hi

    def finish(self) -> None:
        """Compare with the saved checksum.

        Raises:
            CorruptCheckpointError: The bytes differ from those saved.
        """
        if self.seen == self.size:
            crc = self.crc
        elif self.buffer is not None:
            crc = self.fn(self.buffer)
        else:
            crc = crc_of(self.array, self.fn)
        if not self.size:
            crc = 0
        if crc != int(self.entry.checksums[self.index]):
            raise mismatch(self.entry, self.index)


def chunk_listener(
    checks: Mapping[int, SliceCheck],
) -> Callable[[Piece], Callable[[int, int], None] | None]:
    """The listener of a read (:func:`.mpiio.posix_io`) into checked buffers: for each
    piece, the :meth:`SliceCheck.update` of the check whose buffer it fills (``checks``
    is keyed by ``id`` of that buffer), or ``None`` for an unchecked piece."""

    def listener(piece: Piece) -> Callable[[int, int], None] | None:
        c = checks.get(id(piece.array))
        return None if c is None else c.update

    return listener


def verify_whole(entry: TensorEntry, array: np.ndarray, algorithm: str) -> None:
    """Check every saved slice of a whole (global) tensor against its checksum.

    Raises:
        CorruptCheckpointError: A slice's bytes do not match, naming the tensor and byte range.
    """
    fn = checksum_function(algorithm)
    crcs = entry.checksums
    for i in range(len(entry.slicing)):
        start, shape = entry.slicing.box(i)
        if shape and not math.prod(shape):
            continue
        part = array[tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))]
        data = np.ascontiguousarray(part).reshape(-1).view(np.uint8)
        crc = fn(data) if data.size else 0
        if crc != int(crcs[i]):
            raise mismatch(entry, i)
