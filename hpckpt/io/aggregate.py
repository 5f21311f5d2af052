"""Aggregated writes of strided shards: ranks that share file rows exchange their parts,
then each writes one contiguous band of whole rows.

A layout that splits a tensor along a later dimension (a 2-D mesh over a matrix's
rows and columns) gives every rank a shard that is strided in the file: many short
runs, interleaved with other ranks' runs. Instead, the ranks that hold parts of the
same rows (a *group*: the cell of the first dimension's sharding) each take a band of
those rows (:func:`~.slicing.rows_spec`), receive the parts of it the others hold,
point to point, and write it with large contiguous ``pwrite`` calls, computing its
checksum as they go. Memory is bounded: the band moves in chunks of at most
``CHUNK_BYTES``. The disk starts writing each chunk as soon as it is written
(:class:`.writeback.Writeback`), while the next chunks are exchanged.

Call order of :func:`write_bands` (collective): every rank walks the same tensors in
the same order and the same number of chunk steps per tensor; at each step it sends
its parts of the other members' chunks and receives the parts of its own chunk
(``_dist.exchange``), then writes its chunk.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from .. import _dist
from .._dist import Deadline
from ..layout import LayoutSpec
from .slicing import Box, DerivedSlicing, box_intersection, mesh_coords, target_grid, volume
from .strided import strided_type
from .writeback import Writeback

__all__ = ["CHUNK_BYTES", "BandTask", "write_bands"]

CHUNK_BYTES = 32 << 20
_TAG = 0x2800


@dataclass
class BandTask:
    """One tensor saved in row bands.

    Attributes:
        index: The tensor's position in the save.
        slicing: Its derived row-band slicing.
        layout: Its layout (where each rank's shard is now).
        dtype: Its dtype.
        offset: The file offset of its dataset.
        local: This rank's shard (any strides: parts are sent from it without a copy).
    """

    index: int
    slicing: DerivedSlicing
    layout: LayoutSpec
    dtype: np.dtype
    offset: int | None
    local: np.ndarray


def _rel(part: Box, origin: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(a - o, a - o + n) for a, o, n in zip(part[0], origin, part[1], strict=True))


def _view(view: np.ndarray, cache: list) -> list:
    """An MPI buffer for a (possibly strided) numpy view, without copying it."""
    addr, t = strided_type(view, cache)
    st = MPI.Datatype.Create_struct([1], [addr], [t]).Commit()
    cache.append(st)
    return [MPI.BOTTOM, 1, st]


def _sub(array: np.ndarray, origin: tuple[int, ...], part: Box, cache: list) -> list:
    """An MPI buffer for ``part`` (global coordinates) of ``array`` starting at ``origin``."""
    elem = MPI.BYTE.Create_contiguous(array.dtype.itemsize)
    cache.append(elem)
    rel = [a - o for a, o in zip(part[0], origin, strict=True)]
    t = elem.Create_subarray(list(array.shape), list(part[1]), rel).Commit()
    cache.append(t)
    return [array, 1, t]


@dataclass
class _Step:
    """One chunk step of one tensor: what this rank sends, receives and writes."""

    task: BandTask
    number: int  # the tensor's slice this rank's band is (for the record)
    mine: Box | None  # this rank's chunk of its band (global coordinates)
    shard: Box  # this rank's shard
    sends: list[tuple[int, Box]]  # (peer, part of this rank's shard)
    recvs: list[tuple[int, Box]]  # (peer, part of this rank's chunk)
    last: bool  # the tensor's last step (its band's record is due)
    tag: int  # the same on both ends: from the tensor's position and the step's number
    at: int | None  # the file offset of this rank's chunk (None: nothing to write)


def _steps(task: BandTask, rank: int, position: int) -> list[_Step]:
    """This rank's chunk steps for ``task``, the ``position``-th band tensor of the save.

    Every member of this rank's group has the same number of steps for ``task``; other
    groups may have more or fewer, so a step's message tag comes from ``(position, j)``,
    not from its place in a rank's pipeline (which differs between groups).
    """
    sl = task.slicing
    shape = sl.shape
    where = target_grid(shape, task.layout)  # the shards as they are now
    bands = target_grid(shape, sl.spec)  # the cells of the row bands (groups)
    cell = sl.grid.cell_of(mesh_coords(rank, sl.spec.mesh_shape))
    members = bands.ranks_of(cell)
    base = sl.grid.linear(cell) * sl.sub
    band = {r: sl.box(base + k) for k, r in enumerate(members)}
    shard = {r: where.box_of(r) for r in members}
    row_bytes = max(math.prod(shape[1:]) * task.dtype.itemsize, 1)
    rpc = max(1, CHUNK_BYTES // row_bytes)
    count = max((math.ceil(b[1][0] / rpc) for b in band.values()), default=0)
    number = base + members.index(rank) if volume(band[rank][1]) else -1

    def chunk(r: int, j: int) -> Box | None:
        (r0, *rest0), (n0, *rest1) = band[r]
        lo = r0 + j * rpc
        hi = min(r0 + n0, lo + rpc)
        return ((lo, *rest0), (hi - lo, *rest1)) if hi > lo else None

    out = []
    for j in range(count):
        mine = chunk(rank, j)
        sends, recvs = [], []
        for r in members:
            if r == rank:
                continue
            c = chunk(r, j)
            part = box_intersection(shard[rank], c) if c is not None else None
            if part is not None and volume(part[1]):
                sends.append((r, part))
            if mine is not None:
                part = box_intersection(shard[r], mine)
                if part is not None and volume(part[1]):
                    recvs.append((r, part))
        tag = _TAG + (position * 61 + j) % 1000
        at = None
        if mine is not None and task.offset is not None:
            at = task.offset + mine[0][0] * row_bytes
        out.append(_Step(task, number, mine, shard[rank], sends, recvs, j == count - 1, tag, at))
    return out


def write_bands(
    comm: MPI.Comm,
    path: str,
    tasks: list[BandTask],
    deadline: Deadline,
    checksum: Callable[..., int],
) -> tuple[list[tuple[int, int, int]], BaseException | None]:
    """Exchange and write every row-band tensor; returns ``(tensor, slice, crc)`` of the
    band this rank wrote for each, and this rank's first error (it keeps taking part).

    The steps of all tensors form one pipeline over two chunk buffers: the exchange of
    step ``j + 1`` is under way (its messages posted) while step ``j`` is written, so a
    rank does not wait for its peers' writes, only for their data.

    Collective: call on all ranks (with the same tensors).
    """
    rank = comm.Get_rank()
    out: list[tuple[int, int, int]] = []
    error: BaseException | None = None
    fd = -1
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        error = e
    steps: list[_Step] = []
    try:
        steps = [s for n, task in enumerate(tasks) for s in _steps(task, rank, n)]
    except BaseException as e:  # pragma: no cover - pure geometry of agreed layouts
        error = error or e
    size = max((_nbytes(s) for s in steps), default=0)
    bufs = [np.empty(size, np.uint8) for _ in range(2 if len(steps) > 1 else len(steps))]
    crc = 0
    writeback = Writeback(path, sum(_nbytes(s) for s in steps))
    pending = _post(comm, steps, 0, bufs)
    try:
        for j, step in enumerate(steps):
            reqs, cache, chunk, err = pending
            try:
                if err is None:
                    deadline.wait_all(reqs, comm)
            except BaseException as e:
                err = e
            finally:
                _free(cache)
            error = error or err
            pending = _post(comm, steps, j + 1, bufs)
            if step.at is not None and error is None:
                try:
                    assert chunk is not None
                    data = chunk.reshape(-1).view(np.uint8)
                    _pwrite_all(fd, data, step.at)
                    writeback.written(step.at, data.size)
                    crc = checksum(data, crc)
                except BaseException as e:
                    error = error or e
            if step.last:
                if step.number >= 0:
                    out.append((step.task.index, step.number, crc))
                crc = 0
    finally:
        _free(pending[1])
        writeback.close()
        if fd >= 0:
            os.close(fd)
    return out, error


_Pending = tuple[list[MPI.Request], list[MPI.Datatype], np.ndarray | None, BaseException | None]


def _nbytes(step: _Step) -> int:
    if step.mine is None:
        return 0
    return volume(step.mine[1]) * step.task.dtype.itemsize


def _post(comm: MPI.Comm, steps: list[_Step], j: int, bufs: list[np.ndarray]) -> _Pending:
    """Start step ``j``: copy this rank's own part into its chunk buffer, post the
    receives of the others' parts and the sends of this rank's parts of theirs."""
    if j >= len(steps):
        return [], [], None, None
    step = steps[j]
    task = step.task
    cache: list[MPI.Datatype] = []
    chunk: np.ndarray | None = None
    sends, recvs = [], []
    try:
        if step.mine is not None:
            chunk = bufs[j % 2][: _nbytes(step)].view(task.dtype).reshape(step.mine[1])
            part = box_intersection(step.shard, step.mine)
            if part is not None and volume(part[1]):
                chunk[_rel(part, step.mine[0])] = task.local[_rel(part, step.shard[0])]
            recvs = [(r, _sub(chunk, step.mine[0], p, cache)) for r, p in step.recvs]
        sends = [(r, _view(task.local[_rel(p, step.shard[0])], cache)) for r, p in step.sends]
        return _dist.exchange_start(comm, sends, recvs, step.tag), cache, chunk, None
    except BaseException as e:
        return [], cache, chunk, e


def _free(cache: list[MPI.Datatype]) -> None:
    for t in cache:
        try:
            t.Free()
        except MPI.Exception:
            pass
    cache.clear()


def _pwrite_all(fd: int, data: np.ndarray, pos: int) -> None:
    done = 0
    while done < data.size:
        n = os.pwrite(fd, data[done:].data, pos + done)
        if n <= 0:
            raise OSError(f"short write at offset {pos + done} (no space?)")
        done += n
