"""Collective raw IO of hyperslabs into contiguous datasets with ``MPI.File``.

A *piece* is one numpy array (C-contiguous, or strided: a view of the caller's
field, moved without a packing copy) that holds the hyperslab
``[start, start + array.shape)`` of a global C-order array stored contiguously
at byte ``offset`` of the file. Each rank packs its pieces into rounds of
bounded size; every round is one ``Set_view`` + ``Write_all``/``Read_all`` whose
file type is a struct of subarrays (one per piece, at the dataset offsets) and
whose memory type is a struct of the arrays' addresses: no staging copy, one
collective call for many datasets. All ranks make the same number of calls
(ranks with nothing left pass an empty selection).
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from mpi4py import MPI

from .._dist import Deadline, allreduce_int
from .bounce import MIN_BOUNCE_READ, read_into, slow_distance
from .strided import MIN_VIEW_BYTES, memory_split, run_bytes, strided_type
from .writeback import Writeback

__all__ = [
    "ChunkListener",
    "Piece",
    "collective_io",
    "contiguous_offset",
    "posix_io",
    "split_direct",
    "split_piece",
]

ChunkListener = Callable[["Piece"], Callable[[int, int], None] | None]
"""Asked once per piece read: the function told ``(lo, hi)`` as its bytes arrive, or None."""

MAX_PIECE_BYTES = 256 << 20
MAX_ROUND_BYTES = 1 << 30
MAX_ROUND_PIECES = 4096
READ_CHUNK_BYTES = 256 << 10  # streamed reads: a chunk is checksummed while it is still in L2
SIEVE_MAX_SPAN = 2  # sieved reads read at most this many times a piece's bytes
SIEVE_CALL_BYTES = 64 << 20  # file bytes per sieved preadv
IOV_MAX = 1024  # iovecs per preadv (Linux's limit)
PROGRESS_STEP = 64 << 20  # direct transfers report progress at least this often
WRITEBACK_STEP = 32 << 20  # direct writes: the disk is asked to start after each such piece


@dataclass(frozen=True)
class Piece:
    """A hyperslab of a contiguous global array in the file, and its memory."""

    offset: int
    global_shape: tuple[int, ...]
    start: tuple[int, ...]
    array: np.ndarray

    @functools.cached_property
    def nbytes(self) -> int:
        return int(self.array.nbytes)

    @classmethod
    def with_run(
        cls,
        offset: int,
        global_shape: tuple[int, ...],
        start: tuple[int, ...],
        array: np.ndarray,
        run: int | None,
    ) -> Piece:
        """A piece whose :attr:`file_run` is already known (``run``, from an equal piece)."""
        p = cls(offset, global_shape, start, array)
        p.__dict__["file_run"] = run  # what the cached property would compute
        return p

    @functools.cached_property
    def file_run(self) -> int | None:
        """The first byte of the piece in the file if its hyperslab is one contiguous
        run of the file, else ``None`` (remembered: planning asks several times)."""
        linear = contiguous_offset(self.global_shape, self.start, self.array.shape)
        return None if linear is None else self.offset + linear * self.array.dtype.itemsize


def split_piece(piece: Piece, max_bytes: int = MAX_PIECE_BYTES) -> list[Piece]:
    """Split a piece along its first axis into pieces of at most ``max_bytes`` (if it can)."""
    a = piece.array
    if a.nbytes <= max_bytes or a.ndim == 0 or a.shape[0] <= 1:
        return [piece]
    row = a.nbytes // a.shape[0]
    step = max(1, max_bytes // max(row, 1))
    out = []
    for r in range(0, a.shape[0], step):
        start = (piece.start[0] + r, *piece.start[1:])
        out.append(Piece(piece.offset, piece.global_shape, start, a[r : r + step]))
    return out


def _file_span(p: Piece) -> tuple[int, int]:
    """The first file byte of a piece and the byte after its last."""
    first = p.file_run
    if first is not None:
        return first, first + p.nbytes
    isz = p.array.dtype.itemsize
    lo = hi = 0
    for st, n, dim in zip(p.start, p.array.shape, p.global_shape, strict=True):
        lo = lo * dim + st
        hi = hi * dim + st + n - 1
    return p.offset + lo * isz, p.offset + (hi + 1) * isz


def _rounds(pieces: Sequence[Piece], max_bytes: int, max_pieces: int) -> list[list[Piece]]:
    """Pieces grouped into rounds; a round's file spans never interleave (MPI-IO views
    must be monotonic: two strided pieces of one tensor go to different rounds)."""
    rounds: list[list[Piece]] = []
    cur: list[Piece] = []
    size = 0
    end = -1
    for p, (lo, hi) in sorted(((p, _file_span(p)) for p in pieces), key=lambda x: x[1]):
        if cur and (size + p.nbytes > max_bytes or len(cur) >= max_pieces or lo < end):
            rounds.append(cur)
            cur, size, end = [], 0, -1
        cur.append(p)
        size += p.nbytes
        end = max(end, hi)
    if cur:
        rounds.append(cur)
    return rounds


class _TypeCache:
    """Element types by item size, freed at the end of an IO."""

    def __init__(self) -> None:
        self._elem: dict[int, MPI.Datatype] = {}
        self._owned: list[MPI.Datatype] = []

    def elem(self, itemsize: int) -> MPI.Datatype:
        t = self._elem.get(itemsize)
        if t is None:
            t = MPI.BYTE.Create_contiguous(itemsize).Commit()
            self._elem[itemsize] = t
            self._owned.append(t)
        return t

    def own(self, t: MPI.Datatype) -> MPI.Datatype:
        self._owned.append(t)
        return t

    def free(self) -> None:
        for t in self._owned:
            t.Free()
        self._owned.clear()
        self._elem.clear()


def contiguous_offset(
    outer: tuple[int, ...], start: tuple[int, ...], shape: tuple[int, ...]
) -> int | None:
    """The linear element offset of hyperslab ``[start, start + shape)`` of a C-order
    array of shape ``outer`` if the hyperslab is one contiguous run, else ``None``.
    """
    if not outer:
        return 0
    # contiguous iff, after the leading dimensions of length 1, one dimension is
    # partial and every later one is full
    k = 0
    while k < len(outer) and shape[k] == 1:
        k += 1
    if any(shape[i] != outer[i] for i in range(k + 1, len(outer))):
        return None
    linear = 0
    for st, n in zip(start, outer, strict=True):
        linear = linear * n + st
    return linear


def split_direct(
    pieces: Sequence[Piece], threshold: int | None, *, write: bool = True
) -> tuple[list[Piece], list[Piece]]:
    """``(direct, aggregated)``: the pieces of at least ``threshold`` bytes that their
    rank moves itself, and the rest (all of them when ``threshold`` is None).

    Direct are pieces that are one contiguous run of the file and, for reads,
    strided pieces that a sieved read takes in few large calls (see ``_sievable``).
    """
    if threshold is None:
        return [], list(pieces)
    direct, aggregated = [], []
    for p in pieces:
        if (
            p.nbytes >= threshold
            and (p.file_run is not None or (not write and _sievable(p)))
            and (p.array.flags.c_contiguous or run_bytes(p.array) >= MIN_VIEW_BYTES)
        ):
            direct.append(p)
        else:
            aggregated.append(p)
    return direct, aggregated


def _span(p: Piece) -> int:
    """Bytes of the file from the first to the last byte of the piece's hyperslab."""
    g, start, shape = p.global_shape, p.start, p.array.shape
    if not g or not p.nbytes:
        return p.nbytes
    first = last = 0
    for st, n, dim in zip(start, shape, g, strict=True):
        first = first * dim + st
        last = last * dim + st + n - 1
    return (last - first + 1) * p.array.dtype.itemsize


def _sievable(p: Piece) -> bool:
    """Whether reading the piece's whole span costs at most ``SIEVE_MAX_SPAN`` x its bytes.

    Such a read fills the gaps between the piece's runs into a scratch buffer,
    one ``preadv`` for up to ``IOV_MAX`` runs instead of one call per run.
    """
    return bool(p.nbytes) and _span(p) <= SIEVE_MAX_SPAN * p.nbytes


def _round_types(pieces: list[Piece], cache: _TypeCache) -> tuple[MPI.Datatype, MPI.Datatype]:
    """One file type and one memory type for a round of pieces.

    Pieces whose hyperslab is one contiguous run of the file (the common case:
    shards along the first axis, 1-D shards, whole tensors) are plain byte blocks
    of the struct, so they cost no datatype of their own; others are subarrays.
    Memory is byte blocks at the arrays' addresses (strided arrays: their strides).
    """
    flens, fdisps, ftypes = [], [], []
    for p in pieces:
        run = p.file_run
        if run is not None:
            flens.append(p.nbytes)
            fdisps.append(run)
            ftypes.append(MPI.BYTE)
        else:
            a = p.array
            elem = cache.elem(a.dtype.itemsize)
            flens.append(1)
            fdisps.append(p.offset)
            ftypes.append(
                cache.own(elem.Create_subarray(list(p.global_shape), list(a.shape), list(p.start)))
            )
    ft = cache.own(MPI.Datatype.Create_struct(flens, fdisps, ftypes).Commit())
    if all(p.array.flags.c_contiguous for p in pieces):
        mt = cache.own(
            MPI.BYTE.Create_hindexed(
                [p.nbytes for p in pieces], [MPI.Get_address(p.array) for p in pieces]
            ).Commit()
        )
        return ft, mt
    # strided arrays (views of the caller's fields): their strides as datatypes, no copy
    addrs: list[int] = []
    mtypes: list[MPI.Datatype] = []
    for p in pieces:
        addr, t = strided_type(p.array, cache._owned)
        addrs.append(addr)
        mtypes.append(t)
    mt = cache.own(MPI.Datatype.Create_struct([1] * len(pieces), addrs, mtypes).Commit())
    return ft, mt


def _runs(p: Piece) -> list[tuple[int, np.ndarray]]:
    """``(file offset, contiguous memory view)`` of every contiguous run of a piece.

    A run is contiguous both in the file and in memory: a strided array (a view
    of a field with ghost cells) is cut at its memory's contiguous blocks too. The
    runs are consecutive in the piece's C order, in ascending file order; their
    offsets are computed with numpy, so that a strided piece of many thousand rows
    costs milliseconds, not a Python loop per element.
    """
    first = p.file_run
    a = p.array
    if first is not None and a.flags.c_contiguous:
        return [(first, a.reshape(-1))]
    g, start, shape = p.global_shape, p.start, a.shape
    # split the leading dimensions until the remaining suffix is one contiguous run
    k = len(g) - 1
    while k > 0 and shape[k] == g[k]:
        k -= 1
    k = max(k, memory_split(a)) if not a.flags.c_contiguous else k
    # dims [0, k) vary; each index gives a run of shape[k:] (full after dim k in the file)
    isz = a.dtype.itemsize
    strides = [isz] * len(g)
    for i in range(len(g) - 2, -1, -1):
        strides[i] = strides[i + 1] * g[i + 1]
    base = p.offset + sum(start[i] * strides[i] for i in range(k, len(g)))
    offsets = np.full((1,), base, dtype=np.int64)
    for i in range(k):
        along = (start[i] + np.arange(shape[i], dtype=np.int64)) * strides[i]
        offsets = (offsets[:, None] + along[None, :]).reshape(-1)
    if a.flags.c_contiguous:
        n = math.prod(shape[k:])
        flat = a.reshape(-1)
        return [(off, flat[j * n : (j + 1) * n]) for j, off in enumerate(offsets.tolist())]
    views = (_block(a, idx) for idx in np.ndindex(*shape[:k]))
    return list(zip(offsets.tolist(), views, strict=True))


def _block(a: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    """``a[idx]`` as a flat view (a 1-element view, not a scalar, for a full index)."""
    key: tuple[Any, ...] = (*idx, Ellipsis)
    return a[key].reshape(-1)


def _groups(runs: list[tuple[int, np.ndarray]]) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Consecutive runs that are adjacent in the file, at most ``IOV_MAX`` per group."""
    cur: list[tuple[int, np.ndarray]] = []
    end = -1
    for off, mem in runs:
        if cur and (off != end or len(cur) >= IOV_MAX):
            yield cur
            cur = []
        cur.append((off, mem))
        end = off + mem.nbytes
    if cur:
        yield cur


def _write_group(fd: int, group: list[tuple[int, np.ndarray]]) -> None:
    """Write adjacent runs with one ``pwritev`` (run by run if it comes back short)."""
    if len(group) == 1:
        _transfer(fd, group[0][1].data.cast("B"), group[0][0], True)
        return
    iov = [mem.data.cast("B") for _, mem in group]
    total = sum(len(v) for v in iov)
    if os.pwritev(fd, iov, group[0][0]) != total:
        for off, mem in group:
            _transfer(fd, mem.data.cast("B"), off, True)


def posix_io(
    path: str,
    pieces: Sequence[Piece],
    *,
    write: bool,
    chunk_bytes: int | None = None,
    listener: ChunkListener | None = None,
    fsync: bool = True,
    on_moved: Callable[[int], None] | None = None,
) -> None:
    """Independent IO of this rank's pieces with ``pwrite``/``preadv`` at their offsets.

    Not collective: each rank moves its own bytes (the file already exists).
    Writes are fsynced before returning (unless ``fsync`` is False: the caller
    syncs); the writeback of each contiguous write of at most ``WRITEBACK_STEP`` bytes
    starts as soon as it is written (:class:`.writeback.Writeback`). Reads of a piece
    that is one contiguous run of the file go in chunks of ``chunk_bytes`` (default
    ``READ_CHUNK_BYTES``), reads of a sievable strided piece in spans
    (``_sieved_read``); ``listener(piece)``, asked once per piece, gives the
    function (or ``None``) that is told ``(lo, hi)`` after each chunk: bytes
    ``[lo, hi)`` of ``piece.array`` have arrived (so that they are checksummed
    while still in the cache). ``on_moved(n)`` is told of every ``n`` bytes moved
    (progress).
    """
    fd = os.open(path, os.O_WRONLY if write else os.O_RDONLY)
    try:
        with Writeback(path, sum(p.nbytes for p in pieces) if write else 0) as writeback:
            for p in pieces:
                if not p.nbytes:
                    continue
                runs = _runs(p)
                told = None if write or listener is None else listener(p)
                if not write and len(runs) > 1 and _sievable(p):
                    _sieved_read(fd, runs, told)
                    if on_moved is not None:
                        on_moved(p.nbytes)
                    continue
                if write and len(runs) > 1:
                    for group in _groups(runs):
                        _write_group(fd, group)
                        if on_moved is not None:
                            on_moved(sum(m.nbytes for _, m in group))
                    continue
                if told is not None and len(runs) == 1:
                    off, mem = runs[0]
                    _streamed_read(fd, mem.data.cast("B"), off, chunk_bytes, told, on_moved)
                    continue
                # in pieces of PROGRESS_STEP when someone follows the progress
                step = PROGRESS_STEP if on_moved is not None else 1 << 62
                if writeback.active:  # the disk starts on each piece
                    step = min(step, WRITEBACK_STEP)
                for off, mem in runs:
                    view = mem.data.cast("B")
                    for lo in range(0, len(view), step):
                        hi = min(lo + step, len(view))
                        _transfer(fd, view[lo:hi], off + lo, write)
                        writeback.written(off + lo, hi - lo)
                        if on_moved is not None:
                            on_moved(hi - lo)
        if write and fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _streamed_read(
    fd: int,
    view: memoryview,
    offset: int,
    chunk_bytes: int | None,
    told: Callable[[int, int], None],
    on_moved: Callable[[int], None] | None = None,
) -> None:
    """Read one contiguous run in chunks, telling ``told(lo, hi)`` after each.

    The loop is the restore's hot path for large slices (a chunk is 256 KiB, so a
    GiB is 4096 turns): whether the kernel's copy into ``view`` is the slow one
    (:func:`.bounce.slow_distance`) is the same for every chunk, so it is decided
    once, and fast destinations get ``preadv`` directly. ``on_moved`` hears of the
    bytes read at least every ``PROGRESS_STEP`` bytes and at the end.
    """
    n = len(view)
    step = chunk_bytes or READ_CHUNK_BYTES
    slow = n >= MIN_BOUNCE_READ and slow_distance(MPI.Get_address(view), offset)
    preadv = os.preadv
    reported = 0
    for lo in range(0, n, step):
        chunk = view[lo : lo + step]
        hi = lo + len(chunk)
        # through the bounce buffer; or directly, run by run again if it came back short
        if slow or preadv(fd, [chunk], offset + lo) != len(chunk):
            _transfer(fd, chunk, offset + lo, False)
        told(lo, hi)
        if on_moved is not None and hi - reported >= PROGRESS_STEP:
            on_moved(hi - reported)
            reported = hi
    if on_moved is not None and n > reported:
        on_moved(n - reported)


def _sieved_read(
    fd: int,
    runs: list[tuple[int, np.ndarray]],
    on_chunk: Callable[[int, int], None] | None = None,
) -> None:
    """Read a piece's runs (ascending, disjoint) in few ``preadv`` calls over their span.

    Each call reads a contiguous range of the file straight into the runs' memory,
    the gaps between them into one scratch buffer. The runs are consecutive in
    the piece's memory: after each call ``on_chunk(lo, hi)`` is told that bytes
    ``[lo, hi)`` of it have arrived.
    """
    gaps = [b[0] - (a[0] + a[1].nbytes) for a, b in itertools.pairwise(runs)]
    scratch = memoryview(bytearray(max(gaps, default=0)))
    i = 0
    done = 0  # bytes of the piece's memory filled so far
    while i < len(runs):
        base = pos = runs[i][0]
        iov: list[memoryview] = []
        first = i
        while i < len(runs) and len(iov) < IOV_MAX - 1 and pos - base < SIEVE_CALL_BYTES:
            off, mem = runs[i]
            if off > pos:
                iov.append(scratch[: off - pos])
            iov.append(mem.data.cast("B"))
            pos = off + mem.nbytes
            i += 1
        if os.preadv(fd, iov, base) != pos - base:  # short (EOF or a signal): run by run
            for off, mem in runs[first:i]:
                _transfer(fd, mem.data.cast("B"), off, False)
        got = sum(mem.nbytes for _, mem in runs[first:i])
        if on_chunk is not None:
            on_chunk(done, done + got)
        done += got


def _transfer(fd: int, view: memoryview, offset: int, write: bool) -> None:
    if not write:  # through a bounce buffer when the kernel's copy would be slow
        got = read_into(fd, view, offset)
        if got < len(view):
            raise OSError(f"short read at offset {offset + got} (file truncated?)")
        return
    done = 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            raise OSError(f"short write at offset {offset + done} (no space?)")
        done += n


def _make_info(hints: dict[str, str] | None) -> MPI.Info:
    if not hints:
        return MPI.INFO_NULL
    info = MPI.Info.Create()
    for k, v in hints.items():
        info.Set(str(k), str(v))
    return info


@contextmanager
def open_file(
    comm: MPI.Comm, path: str, mode: int, hints: dict[str, str] | None = None
) -> Iterator[MPI.File]:
    """Open ``path`` collectively with MPI-IO hints; close it collectively.

    Collective: call on all ranks.
    """
    info = _make_info(hints)
    try:
        fh = MPI.File.Open(cast(MPI.Intracomm, comm), path, mode, info)
    finally:
        if info != MPI.INFO_NULL:
            info.Free()
    try:
        yield fh
    finally:
        fh.Close()


def collective_io(
    fh: MPI.File,
    comm: MPI.Comm,
    pieces: Sequence[Piece],
    *,
    write: bool,
    collective: bool = True,
    max_round_bytes: int = MAX_ROUND_BYTES,
    deadline: Deadline | None = None,
    on_moved: Callable[[int], None] | None = None,
) -> int:
    """Write (or read into) every rank's pieces; returns the number of rounds.

    Every rank calls this with its own pieces (possibly none); all ranks make the
    same number of collective calls.

    Collective: call on all ranks.
    """
    error: BaseException | None = None
    try:
        split = [q for p in pieces if p.nbytes for q in split_piece(p)]
        rounds = _rounds(split, max_round_bytes, MAX_ROUND_PIECES)
    except BaseException as e:
        error, rounds = e, []
    n = allreduce_int(comm, len(rounds), MPI.MAX, deadline)
    empty = np.empty(0, dtype=np.uint8)
    cache = _TypeCache()
    try:
        for i in range(n):
            buf: list = [empty, 0, MPI.BYTE]
            ft: MPI.Datatype = MPI.BYTE
            if error is None and i < len(rounds):
                try:
                    ft, mt = _round_types(rounds[i], cache)
                    buf = [MPI.BOTTOM, 1, mt]
                except BaseException as e:
                    error, ft, buf = e, MPI.BYTE, [empty, 0, MPI.BYTE]
            fh.Set_view(0, MPI.BYTE, ft)
            if write:
                (fh.Write_all if collective else fh.Write)(buf)
            else:
                (fh.Read_all if collective else fh.Read)(buf)
            if on_moved is not None and error is None and i < len(rounds):
                on_moved(sum(p.nbytes for p in rounds[i]))
    finally:
        cache.free()
    if error is not None:
        raise error
    return n
