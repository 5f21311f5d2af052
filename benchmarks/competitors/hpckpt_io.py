"""hpckpt itself: ``Checkpoint.write`` and ``Checkpoint.read`` of the workload."""

from __future__ import annotations

import json
import os

import numpy as np

import hpckpt

from ..context import RunContext
from ..util import remove_paths
from ..workload import Tensor, Workload
from .base import Competitor

__all__ = ["HpckptCompetitor", "HpckptRestoreVariant"]


class HpckptCompetitor(Competitor):
    """``Checkpoint(model=...).write(prefix)`` / ``.read(prefix)``.

    The save includes everything hpckpt does: rank 0 creating the HDF5 file,
    collective MPI-IO, checksums, ``MPI_File_sync``, the fsynced index commit.
    The restore includes reading and validating the index and data file, the
    collective read, checksum verification and the copy into ``Variable.local``.

    Args:
        ctx: The run.
        workload: The tensors.
        name: Label.
        options: Options for both write and read.
    """

    def __init__(
        self,
        ctx: RunContext,
        workload: Workload,
        name: str = "hpckpt",
        options: hpckpt.CheckpointOptions | None = None,
    ) -> None:
        super().__init__(ctx, workload)
        self.name = name
        self.options = options or hpckpt.CheckpointOptions(mpi_info=ctx.mpi_info or None)
        self.prefix = os.path.join(ctx.makedirs(name), "ckpt")
        self.ckpt = hpckpt.Checkpoint(model=workload.root())

    def _own_files(self) -> list[str]:
        d = os.path.dirname(self.prefix)
        base = os.path.basename(self.prefix)
        return [os.path.join(d, n) for n in os.listdir(d) if n.startswith(base)]

    def prepare_save(self) -> None:
        if self.ctx.rank == 0:
            remove_paths(self._own_files())
        self.ctx.comm.Barrier()

    def files(self) -> list[str]:
        return self._own_files() if self.ctx.rank == 0 else []

    def save(self) -> None:
        self.ckpt.write(self.prefix, options=self.options)

    def file_bytes(self) -> int:
        """The size of the last save's data file (its index names it and its size)."""
        with open(self.prefix + ".index.json", "rb") as f:
            return int(json.load(f)["data_file"]["size"])

    def restore(self) -> None:
        self.ckpt.read(self.prefix, options=self.options)

    def restored(self, t: Tensor) -> np.ndarray:
        return t.local

    def scramble(self) -> None:
        # hpckpt restores into Variable.local, which every competitor saves from;
        # the check that follows proves it was restored before anything saves again.
        for t in self.workload.tensors:
            t.local[...] = 0


class HpckptRestoreVariant(HpckptCompetitor):
    """A restore-only competitor reading a checkpoint that another competitor wrote.

    Used to measure the parts of a restore (``verify_checksums=False``) and
    restores onto another layout or mesh (``workload`` then holds Variables with
    the target layout; they are restored through their own ``Checkpoint``).
    """

    does_save = False

    def __init__(
        self,
        ctx: RunContext,
        workload: Workload,
        prefix: str,
        name: str,
        options: hpckpt.CheckpointOptions | None = None,
    ) -> None:
        Competitor.__init__(self, ctx, workload)
        self.name = name
        self.options = options or hpckpt.CheckpointOptions(mpi_info=ctx.mpi_info or None)
        self.prefix = prefix
        self.ckpt = hpckpt.Checkpoint(model=workload.root())

    def prepare_save(self) -> None:
        pass
