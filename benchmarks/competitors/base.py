"""The interface every competitor implements."""

from __future__ import annotations

import os

import numpy as np

from ..context import RunContext
from ..util import drop_cache, remove_paths
from ..workload import Tensor, Workload

__all__ = ["Competitor", "SingleFileCompetitor"]


class Competitor:
    """A way to save a workload and restore it, timed by the runner.

    Subclasses implement :meth:`save`, :meth:`restore`, :meth:`files` and
    :meth:`restored`; the other steps have usable defaults. Every method is
    collective (all ranks call it), and only :meth:`save` and :meth:`restore`
    are timed: preparation (removing the previous files, evicting the page
    cache) and checking are not.

    Attributes:
        name: The label in tables and JSON.
        does_save: Whether the competitor takes part in the save phase
            (restore-only variants read another competitor's files).
        does_restore: Whether it takes part in the restore phase.
        restores_written_rows_only: The restore reads back only the rows this rank
            wrote (raw competitors), not its whole local shard (replicas).
    """

    name = "competitor"
    does_save = True
    does_restore = True
    restores_written_rows_only = False

    def __init__(self, ctx: RunContext, workload: Workload) -> None:
        self.ctx = ctx
        self.workload = workload

    # -- untimed --

    def setup(self) -> None:
        """Once per workload, before any repetition."""

    def prepare_save(self) -> None:
        """Before each timed save: remove the previous files (rank 0 or each rank)."""

    def prepare_restore(self) -> None:
        """Before each timed restore: evict this rank's files when the run is cold."""
        if self.ctx.cold:
            self.ctx.comm.Barrier()
            drop_cache(self.files())
            self.ctx.comm.Barrier()

    def files(self) -> list[str]:
        """The files this rank should evict from the page cache before a cold read."""
        return []

    def restored(self, t: Tensor) -> np.ndarray:
        """The array that the last restore of tensor ``t`` filled on this rank."""
        return t.restore_buf

    def scramble(self) -> None:
        """Overwrite the restore destinations so that a check proves the restore worked."""
        self.workload.scramble()

    def check(self) -> None:
        """Raise on every rank if the last restore produced wrong data on any rank."""
        bad = self.workload.bad_restores(
            self.restored, written_rows=self.restores_written_rows_only
        )
        self.ctx.check_all(not bad, f"{self.name}: wrong data restored in {bad[:5]}")

    def teardown(self) -> None:
        """After the last repetition."""

    # -- timed --

    def save(self) -> None:
        """Save the workload durably (data and metadata fsynced)."""
        raise NotImplementedError

    def restore(self) -> None:
        """Restore the workload into existing memory."""
        raise NotImplementedError


class SingleFileCompetitor(Competitor):
    """A competitor whose ranks share one file ``<run dir>/<name>/<filename>``.

    Rank 0 removes it before each timed save; rank 0 evicts it before a cold read.

    Collective: construct on all ranks (it creates the directory).
    """

    def __init__(self, ctx: RunContext, workload: Workload, filename: str) -> None:
        super().__init__(ctx, workload)
        self.dir = ctx.makedirs(self.name)
        self.file = os.path.join(self.dir, filename)

    def prepare_save(self) -> None:
        if self.ctx.rank == 0:
            remove_paths([self.file])
        self.ctx.comm.Barrier()

    def files(self) -> list[str]:
        return [self.file] if self.ctx.rank == 0 else []
