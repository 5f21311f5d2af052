"""Checksum verification of what a restore reads, overlapped with the read.

A read request covers some of its tensor's saved slices. Those that are one
contiguous byte range of the request's array are checksummed incrementally as
the reader reports chunks arriving (in a worker thread, while the next chunk is
read: the CRC functions and ``preadv`` release the GIL); the others are
checksummed once the read is done.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import CorruptCheckpointError
from .checksum import checksum, checksum_function
from .index import SliceEntry, TensorEntry, slice_byte_range
from .mpiio import Piece, contiguous_offset

__all__ = ["StreamVerifier", "verify_request"]


def _contains(start: tuple[int, ...], shape: tuple[int, ...], s: SliceEntry) -> bool:
    return all(
        a <= b and b + m <= a + n for a, n, b, m in zip(start, shape, s.start, s.shape, strict=True)
    )


def _within(start: tuple[int, ...], s: SliceEntry) -> tuple[slice, ...]:
    """Slice ``s`` as an index into the array of a request starting at ``start``."""
    return tuple(slice(b - a, b - a + m) for a, b, m in zip(start, s.start, s.shape, strict=True))


def _mismatch(e: TensorEntry, s: SliceEntry) -> CorruptCheckpointError:
    lo, hi = slice_byte_range(e, s)
    return CorruptCheckpointError(
        f"checksum mismatch in tensor {e.key!r} (dataset {e.dataset!r}), slice start "
        f"{list(s.start)} shape {list(s.shape)}, file bytes [{lo}, {hi})"
    )


def verify_request(
    entry: TensorEntry,
    start: tuple[int, ...],
    arr: np.ndarray,
    algorithm: str,
    skip: frozenset[int] = frozenset(),
) -> None:
    """Check every saved slice of ``entry`` inside hyperslab ``start`` (of ``arr``'s shape).

    Slices whose position in ``entry.slices`` is in ``skip`` are left out.

    Raises:
        CorruptCheckpointError: A slice's bytes do not match, naming the tensor and range.
    """
    for j, s in enumerate(entry.slices):
        if j in skip or not _contains(start, arr.shape, s):
            continue
        if checksum(arr[_within(start, s)], algorithm) != s.checksum:
            raise _mismatch(entry, s)


@dataclass
class _Track:
    """A saved slice that is bytes ``[lo, hi)`` of one request's array."""

    slice_index: int
    lo: int
    hi: int
    crc: int = 0
    seen: int = 0


@dataclass
class _Request:
    entry: TensorEntry
    start: tuple[int, ...]
    array: np.ndarray
    tracks: list[_Track] = field(default_factory=list)  # contiguous slices
    strided: list[int] = field(default_factory=list)  # other slices inside the request


class StreamVerifier:
    """Verifies the checksums of a rank's read requests, as much as possible on the fly.

    Args:
        algorithm: The index's checksum algorithm.
        requests: ``(entry, start, array)`` of every request (the array receives the read).
        stream_min_bytes: Requests of at least this many bytes may be reported chunk
            by chunk (:meth:`on_chunk`); smaller ones are checked in :meth:`finish`
            only, on a lean path (thousands of small tensors). ``None``: none streams.
    """

    def __init__(
        self,
        algorithm: str,
        requests: Sequence[tuple[TensorEntry, tuple[int, ...], np.ndarray]],
        stream_min_bytes: int | None = 0,
    ) -> None:
        self.algorithm = algorithm
        self._fn = checksum_function(algorithm)
        self._requests: dict[int, _Request] = {}  # streamable, by id(array)
        self._exact: list[tuple[np.ndarray, int, TensorEntry, int]] = []  # checked at the end
        self._general: list[_Request] = []  # small requests holding partial slices
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future] = []
        big = float("inf") if stream_min_bytes is None else stream_min_bytes
        exact = self._exact
        for entry, start, arr in requests:
            if not arr.size:
                continue
            shape = arr.shape
            if arr.nbytes < big:
                # lean path: the saved slice that is exactly this request, if any
                partial = False
                lo0, hi0 = (start[0], start[0] + shape[0]) if shape else (0, 1)
                for j, s in enumerate(entry.slices):
                    if s.start == start and s.shape == shape:
                        exact.append((arr, s.checksum, entry, j))
                    elif not shape or (lo0 <= s.start[0] and s.start[0] + s.shape[0] <= hi0):
                        partial = True
                if not partial:
                    continue
            r = self._plan(entry, start, arr)
            if arr.nbytes >= big:
                if r.tracks or r.strided:
                    self._requests[id(arr)] = r
            elif r.tracks or r.strided:
                r.tracks = [t for t in r.tracks if (t.lo, t.hi) != (0, arr.nbytes)]  # in exact
                self._general.append(r)

    @staticmethod
    def _plan(entry: TensorEntry, start: tuple[int, ...], arr: np.ndarray) -> _Request:
        """Every saved slice inside the request: byte ranges where contiguous."""
        r = _Request(entry, start, arr)
        shape = arr.shape
        isz = arr.dtype.itemsize
        lo0, hi0 = (start[0], start[0] + shape[0]) if shape else (0, 1)
        for j, s in enumerate(entry.slices):
            if s.start == start and s.shape == shape:  # the common case: a saved shard
                r.tracks.append(_Track(j, 0, arr.nbytes))
                continue
            if shape and (s.start[0] < lo0 or s.start[0] + s.shape[0] > hi0):
                continue  # quick rejection on the first dimension
            if not _contains(start, shape, s) or not math.prod(s.shape):
                continue
            rel = tuple(b - a for a, b in zip(start, s.start, strict=True))
            lin = contiguous_offset(shape, rel, s.shape)
            if lin is None:
                r.strided.append(j)
            else:
                lo = lin * isz
                r.tracks.append(_Track(j, lo, lo + math.prod(s.shape) * isz))
        return r

    def on_chunk(self, piece: Piece, lo: int, hi: int) -> None:
        """Bytes ``[lo, hi)`` of ``piece.array`` have been read: checksum them (async)."""
        r = self._requests.get(id(piece.array))
        if r is None or not r.tracks:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpckpt-crc")
        # One worker: the updates of a slice run in the order the chunks arrived.
        self._futures.append(self._pool.submit(self._update, r, lo, hi))

    def _update(self, r: _Request, lo: int, hi: int) -> None:
        buf = r.array.reshape(-1).view(np.uint8)
        for t in r.tracks:
            a, b = max(lo, t.lo), min(hi, t.hi)
            if a < b:
                t.crc = self._fn(buf[a:b], t.crc)
                t.seen += b - a

    def finish(self) -> None:
        """Wait for the on-the-fly checksums, then check everything the read covers.

        Raises:
            CorruptCheckpointError: A saved slice's bytes do not match its checksum.
        """
        try:
            for f in self._futures:
                f.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        fn = self._fn
        for arr, crc, e, j in self._exact:
            if fn(arr) != crc:
                raise _mismatch(e, e.slices[j])
        for r in [*self._requests.values(), *self._general]:
            e = r.entry
            buf = r.array.reshape(-1).view(np.uint8)
            for t in r.tracks:
                crc = t.crc if t.seen == t.hi - t.lo else fn(buf[t.lo : t.hi])
                if crc != e.slices[t.slice_index].checksum:
                    raise _mismatch(e, e.slices[t.slice_index])
            for j in r.strided:
                s = e.slices[j]
                if checksum(r.array[_within(r.start, s)], self.algorithm) != s.checksum:
                    raise _mismatch(e, s)

    def close(self) -> None:
        """Stop the worker without checking (after a failed read)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
