"""File-per-rank baselines with numpy: ``np.save`` per tensor, ``np.savez`` per rank.

Each rank stores its whole local shard (replicated tensors are stored by every
rank), fsyncs its files, and rank 0 fsyncs the directory. The restore is what
a user writes: ``np.load`` and an assignment into the existing array.
"""

from __future__ import annotations

import os

import numpy as np

from ..context import RunContext
from ..util import fsync_dir, remove_paths
from ..workload import Workload
from .base import Competitor

__all__ = ["NpySaveCompetitor", "NpzCompetitor"]


class _PerRank(Competitor):
    def __init__(self, ctx: RunContext, workload: Workload) -> None:
        super().__init__(ctx, workload)
        self.dir = ctx.makedirs(self.name)

    def prepare_save(self) -> None:
        remove_paths(self.files())
        self.ctx.comm.Barrier()

    def _sync_dir(self) -> None:
        self.ctx.comm.Barrier()
        if self.ctx.rank == 0:
            fsync_dir(self.dir)


class NpySaveCompetitor(_PerRank):
    """``np.save`` of every local shard into its own file: ``r<rank>_<name>.npy``."""

    name = "npy"

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, f"r{self.ctx.rank}_{name}.npy")

    def files(self) -> list[str]:
        return [self._path(t.name) for t in self.workload.tensors]

    def save(self) -> None:
        for t in self.workload.tensors:
            with open(self._path(t.name), "wb") as f:
                np.save(f, t.local)
                f.flush()
                os.fsync(f.fileno())
        self._sync_dir()

    def restore(self) -> None:
        for t in self.workload.tensors:
            t.restore_buf[...] = np.load(self._path(t.name))


class NpzCompetitor(_PerRank):
    """``np.savez`` of all local shards of a rank into one file: ``r<rank>.npz``."""

    name = "npz"

    def _path(self) -> str:
        return os.path.join(self.dir, f"r{self.ctx.rank}.npz")

    def files(self) -> list[str]:
        return [self._path()]

    def save(self) -> None:
        with open(self._path(), "wb") as f:
            np.savez(f, **{t.name: t.local for t in self.workload.tensors})
            f.flush()
            os.fsync(f.fileno())
        self._sync_dir()

    def restore(self) -> None:
        with np.load(self._path()) as z:
            for t in self.workload.tensors:
                t.restore_buf[...] = z[t.name]
