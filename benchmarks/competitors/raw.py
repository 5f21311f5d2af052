"""The raw limits: the same bytes moved without HDF5, checksums or an index.

Each rank's share of each tensor (the rows it writes, see
:attr:`~benchmarks.workload.Tensor.write_rows`) is one contiguous block of the
file: tensors start at ``alignment`` boundaries in workload order, and within a
tensor the ranks' blocks follow in rank order. For row-sharded tensors these
are exactly the byte ranges hpckpt writes; for tensors sharded on a 2-D mesh
each rank's shard is stored as one block, so the raw numbers are the limit for
the same number of bytes per rank, not for hpckpt's strided file pattern.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from ..context import RunContext
from ..util import align_up, fsync_dir, pread_into, pwrite_all
from ..workload import Tensor, Workload
from .base import SingleFileCompetitor

__all__ = ["MpiioCompetitor", "PosixCompetitor", "RawPlan"]

MAX_CALL_BYTES = 1 << 30  # per collective call: counts of MPI.BYTE stay below 2**31


@dataclass(frozen=True)
class RawBlock:
    """One contiguous block this rank moves: file offset, source and destination."""

    offset: int
    source: np.ndarray
    dest: np.ndarray


class RawPlan:
    """Offsets of every rank's blocks (computed collectively once per workload)."""

    def __init__(self, ctx: RunContext, workload: Workload, alignment: int = 1 << 20) -> None:
        counts = np.array([t.write_array.nbytes for t in workload.tensors], dtype=np.int64)
        every = np.empty((ctx.size, counts.size), dtype=np.int64)
        ctx.comm.Allgather(counts, every)
        before = every[: ctx.rank].sum(axis=0) if ctx.rank else np.zeros_like(counts)
        self.blocks: list[RawBlock] = []
        base = alignment
        for i, t in enumerate(workload.tensors):
            r0, r1 = t.write_rows
            if counts[i]:
                self.blocks.append(
                    RawBlock(base + int(before[i]), t.write_array, t.restore_buf[r0:r1])
                )
            base = align_up(base + int(every[:, i].sum()), alignment)
        self.file_size = base
        # Calls of at most MAX_CALL_BYTES; every rank makes the same number of calls.
        self.calls: list[tuple[int, np.ndarray, np.ndarray]] = []
        for b in self.blocks:
            src = b.source.reshape(-1).view(np.uint8)
            dst = b.dest.reshape(-1).view(np.uint8)
            for s in range(0, src.size, MAX_CALL_BYTES):
                self.calls.append(
                    (b.offset + s, src[s : s + MAX_CALL_BYTES], dst[s : s + MAX_CALL_BYTES])
                )
        self.ncalls = ctx.comm.allreduce(len(self.calls), op=MPI.MAX)


def _written_rows(t: Tensor) -> np.ndarray:
    r0, r1 = t.write_rows
    return t.restore_buf[r0:r1]


def _info(hints: dict[str, str]) -> MPI.Info:
    if not hints:
        return MPI.INFO_NULL
    info = MPI.Info.Create()
    for k, v in hints.items():
        info.Set(k, v)
    return info


class _RawFileCompetitor(SingleFileCompetitor):
    """A raw competitor: each rank moves the blocks of a :class:`RawPlan` in ``data.bin``."""

    restores_written_rows_only = True

    def __init__(self, ctx: RunContext, workload: Workload, plan: RawPlan) -> None:
        super().__init__(ctx, workload, "data.bin")
        self.plan = plan

    def restored(self, t: Tensor) -> np.ndarray:
        return _written_rows(t)


class MpiioCompetitor(_RawFileCompetitor):
    """Collective ``MPI.File.Write_at_all`` / ``Read_at_all`` into one fresh shared file.

    The save opens with ``MODE_CREATE``, writes every block, calls
    ``MPI_File_sync`` and closes; rank 0 fsyncs the directory. The MPI-IO hints
    of the run (``--mpi-info``) apply.
    """

    name = "mpiio"

    def __init__(self, ctx: RunContext, workload: Workload, plan: RawPlan) -> None:
        super().__init__(ctx, workload, plan)
        self.empty = np.empty(0, dtype=np.uint8)

    def _open(self, mode: int) -> MPI.File:
        info = _info(self.ctx.mpi_info)
        try:
            return MPI.File.Open(self.ctx.comm, self.file, mode, info)
        finally:
            if info != MPI.INFO_NULL:
                info.Free()

    def save(self) -> None:
        fh = self._open(MPI.MODE_CREATE | MPI.MODE_WRONLY)
        calls = self.plan.calls
        for i in range(self.plan.ncalls):
            if i < len(calls):
                off, src, _ = calls[i]
                fh.Write_at_all(off, src)
            else:
                fh.Write_at_all(0, self.empty)
        fh.Sync()
        fh.Close()
        if self.ctx.rank == 0:
            fsync_dir(self.dir)

    def restore(self) -> None:
        fh = self._open(MPI.MODE_RDONLY)
        calls = self.plan.calls
        for i in range(self.plan.ncalls):
            if i < len(calls):
                off, _, dst = calls[i]
                fh.Read_at_all(off, dst)
            else:
                fh.Read_at_all(0, self.empty)
        fh.Close()


class PosixCompetitor(_RawFileCompetitor):
    """Per-rank ``os.pwrite`` + ``fsync`` / ``os.preadv`` at the same offsets of one shared file.

    Rank 0 creates (truncates) the file; every rank opens it, writes its blocks
    and fsyncs; rank 0 fsyncs the directory. The restore reads into
    preallocated buffers.
    """

    name = "posix"

    def save(self) -> None:
        comm = self.ctx.comm
        if self.ctx.rank == 0:
            os.close(os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        comm.Barrier()
        fd = os.open(self.file, os.O_WRONLY)
        try:
            for b in self.plan.blocks:
                pwrite_all(fd, memoryview(b.source.reshape(-1)), b.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        comm.Barrier()
        if self.ctx.rank == 0:
            fsync_dir(self.dir)

    def restore(self) -> None:
        fd = os.open(self.file, os.O_RDONLY)
        try:
            for b in self.plan.blocks:
                pread_into(fd, memoryview(b.dest.reshape(-1)), b.offset)
        finally:
            os.close(fd)
