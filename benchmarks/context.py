"""The MPI side of a benchmark run: communicator, shared directory, collective timing."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mpi4py import MPI

__all__ = ["RunContext"]


@dataclass
class RunContext:
    """What every suite and competitor shares during one run.

    Attributes:
        comm: ``MPI.COMM_WORLD``.
        directory: A fresh directory, the same path on every rank.
        cold: Evict the files from the page cache before each timed read.
        mpi_info: MPI-IO hints for hpckpt and the raw MPI-IO competitor.
        keep: Keep the directory at the end.
        verbose: Print every sample as it is measured.
    """

    comm: MPI.Comm
    directory: str
    cold: bool = False
    mpi_info: dict[str, str] = field(default_factory=dict)
    keep: bool = False
    verbose: bool = False

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    @classmethod
    def create(cls, parent: str | None, **kwargs: Any) -> RunContext:
        """Make a fresh run directory under ``parent`` (``$HPCKPT_BENCH_DIR`` or /tmp).

        Collective: call on all ranks.
        """
        comm = MPI.COMM_WORLD
        path = None
        if comm.Get_rank() == 0:
            base = parent or os.environ.get("HPCKPT_BENCH_DIR") or tempfile.gettempdir()
            os.makedirs(base, exist_ok=True)
            path = tempfile.mkdtemp(prefix="hpckpt-bench-", dir=base)
        path = comm.bcast(path, root=0)
        return cls(comm=comm, directory=path, **kwargs)

    def path(self, *parts: str) -> str:
        """A path inside the run directory."""
        return os.path.join(self.directory, *parts)

    def makedirs(self, *parts: str) -> str:
        """Create a sub-directory (rank 0) and return its path on every rank.

        Collective: call on all ranks.
        """
        p = self.path(*parts)
        if self.rank == 0:
            os.makedirs(p, exist_ok=True)
        self.comm.Barrier()
        return p

    def settle(self) -> None:
        """Let the file system finish what earlier steps left it (rank 0 ``sync()``).

        Called after a competitor's ``prepare_save`` removed its previous files and
        before its timed save, for every competitor: on a file system mounted with
        ``discard`` (this machine's ext4), a removed 1 GiB file is trimmed at the next
        journal commit, which would otherwise land in whichever save fsyncs first. (It
        did not remove the spread of saves here: 0.45 s or 0.8-1.0 s for the same
        1 GiB, with it too.)

        Collective: call on all ranks.
        """
        self.comm.Barrier()
        if self.rank == 0:
            os.sync()
        self.comm.Barrier()

    def timed(self, fn: Callable[[], object]) -> float:
        """Seconds of ``fn()`` from a common start to the last rank's end.

        Collective: call on all ranks.
        """
        self.comm.Barrier()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        return self.comm.allreduce(dt, op=MPI.MAX)

    def check_all(self, ok: bool, message: str) -> None:
        """Raise ``RuntimeError`` on every rank unless ``ok`` holds on every rank.

        Collective: call on all ranks.
        """
        bad = self.comm.allgather(None if ok else message)
        failed = [f"rank {r}: {m}" for r, m in enumerate(bad) if m is not None]
        if failed:
            raise RuntimeError("; ".join(failed))

    def log(self, *args: object) -> None:
        """Print on rank 0 (flushed)."""
        if self.rank == 0:
            print(*args, flush=True)

    def close(self) -> None:
        """Remove the run directory unless ``keep``.

        Collective: call on all ranks.
        """
        self.comm.Barrier()
        if self.rank == 0:
            if self.keep:
                print(f"kept {self.directory}", file=sys.stderr)
            else:
                shutil.rmtree(self.directory, ignore_errors=True)
        self.comm.Barrier()
