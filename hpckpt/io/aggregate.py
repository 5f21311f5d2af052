"""Aggregated writes of strided shards: ranks that share file rows exchange their parts,
then each writes one contiguous band of whole rows.

A layout that splits a tensor along a later dimension (a 2-D mesh over a matrix's
rows and columns) gives every rank a shard that is strided in the file: many short
runs, interleaved with other ranks' runs. Instead, the ranks that hold parts of the
same rows (a *group*: the cell of the first dimension's sharding) each take a band of
those rows (:func:`~.slicing.rows_spec`), receive the parts of it the others hold,
point to point, and write it with large contiguous ``pwrite`` calls, computing its
checksum as they go. Memory is bounded: the band moves in chunks of at most
``CHUNK_BYTES``.

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
from .slicing import Box, DerivedSlicing, TargetGrid, box_intersection, mesh_coords, volume
from .strided import strided_type

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


def write_bands(
    comm: MPI.Comm,
    path: str,
    tasks: list[BandTask],
    deadline: Deadline,
    checksum: Callable[..., int],
) -> tuple[list[tuple[int, int, int]], BaseException | None]:
    """Exchange and write every row-band tensor; returns ``(tensor, slice, crc)`` of the
    band this rank wrote for each, and this rank's first error (it keeps taking part).

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
    try:
        for task in tasks:
            rec, err = _write_one(comm, fd, task, rank, deadline, checksum)
            error = error or err
            if rec is not None:
                out.append(rec)
    finally:
        if fd >= 0:
            os.close(fd)
    return out, error


def _write_one(
    comm: MPI.Comm,
    fd: int,
    task: BandTask,
    rank: int,
    deadline: Deadline,
    checksum: Callable[..., int],
) -> tuple[tuple[int, int, int] | None, BaseException | None]:
    sl = task.slicing
    shape = sl.shape
    where = TargetGrid(shape, task.layout)  # the shards as they are now
    bands = TargetGrid(shape, sl.spec)  # the cells of the row bands (groups)
    cell = sl.grid.cell_of(mesh_coords(rank, sl.spec.mesh_shape))
    members = bands.ranks_of(cell)
    base = sl.grid.linear(cell) * sl.sub
    band = {r: sl.box(base + k) for k, r in enumerate(members)}
    shard = {r: where.box_of(r) for r in members}
    mine_shard = shard[rank]
    row_elems = math.prod(shape[1:])
    row_bytes = max(row_elems * task.dtype.itemsize, 1)
    rpc = max(1, CHUNK_BYTES // row_bytes)
    steps = max((math.ceil(b[1][0] / rpc) for b in band.values()), default=0)
    my_band = band[rank]
    crc = 0
    error: BaseException | None = None
    buf = np.empty((min(rpc, my_band[1][0]), *shape[1:]), dtype=task.dtype)
    for j in range(steps):

        def chunk(r: int, j: int = j) -> Box | None:
            (r0, *rest0), (n0, *rest1) = band[r]
            lo = r0 + j * rpc
            hi = min(r0 + n0, lo + rpc)
            if hi <= lo:
                return None
            return (lo, *rest0), (hi - lo, *rest1)

        cache: list[MPI.Datatype] = []
        sends, recvs = [], []
        mine = chunk(rank)
        try:
            for r in members:
                if r == rank:
                    continue
                c = chunk(r)
                part = box_intersection(mine_shard, c) if c is not None else None
                if part is not None and volume(part[1]):
                    sends.append((r, _view(task.local[_rel(part, mine_shard[0])], cache)))
                if mine is not None:
                    part = box_intersection(shard[r], mine)
                    if part is not None and volume(part[1]):
                        recvs.append((r, _sub(buf, mine[0], part, cache)))
            if mine is not None:
                part = box_intersection(mine_shard, mine)
                if part is not None and volume(part[1]):
                    buf[_rel(part, mine[0])] = task.local[_rel(part, mine_shard[0])]
            _dist.exchange(comm, sends, recvs, _TAG + j % 1000, deadline)
        except BaseException as e:
            error = error or e
        finally:
            for t in cache:
                t.Free()
        if mine is None or error is not None or task.offset is None:
            continue
        try:
            data = buf[: mine[1][0]].reshape(-1).view(np.uint8)
            pos = task.offset + mine[0][0] * row_bytes
            done = 0
            while done < data.size:
                n = os.pwrite(fd, data[done:].data, pos + done)
                if n <= 0:
                    raise OSError(f"short write at offset {pos + done} (no space?)")
                done += n
            crc = checksum(data, crc)
        except BaseException as e:
            error = error or e
    if not volume(my_band[1]):
        return None, error
    return (task.index, base + members.index(rank), crc), error
