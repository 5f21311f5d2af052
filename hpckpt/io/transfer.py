"""Moving a rank's pieces between memory and the data file: direct IO or collective MPI-IO.

The choice, per piece: large contiguous runs (and, for reads, strided pieces a
sieved read takes in few calls) are moved by their own rank with
``pwrite``/``preadv``, where two-phase aggregation would only add copies; the rest
goes through collective MPI-IO rounds in which every rank takes part.
"""

from __future__ import annotations

from collections.abc import Callable

from mpi4py import MPI

from .. import _faults
from .._dist import Deadline, any_true
from .fsutil import fsync_path
from .mpiio import ChunkListener, Piece, collective_io, open_file, posix_io, split_direct
from .options import IOOptions

__all__ = ["ProgressCounter", "move_pieces"]


class ProgressCounter:
    """Adds up the bytes a rank moves and tells ``options.progress(done, total)``."""

    def __init__(self, options: IOOptions, total: int) -> None:
        self.fn = options.progress
        self.total = int(total)
        self.done = 0

    def __call__(self, n: int) -> None:
        self.done = min(self.done + int(n), self.total)
        if self.fn is not None:
            self.fn(self.done, self.total)

    def hook(self) -> Callable[[int], None] | None:
        """This counter as an ``on_moved`` callback (``None`` when nobody listens)."""
        return self if self.fn is not None else None


def move_pieces(
    comm: MPI.Comm,
    path: str,
    pieces: list[Piece],
    options: IOOptions,
    *,
    write: bool,
    deadline: Deadline,
    listener: ChunkListener | None = None,
    on_written: Callable[[], None] | None = None,
    on_moved: Callable[[int], None] | None = None,
) -> None:
    """Move this rank's pieces: large contiguous runs directly, the rest with MPI-IO.

    With ``options.collective`` every rank opens the file with MPI-IO and makes the
    same collective calls (with empty selections where it has nothing) for the
    pieces that ``split_direct`` leaves to MPI-IO; the others are moved by their
    rank with ``pwrite``/``preadv``. When no rank has a piece for MPI-IO, the file
    is not opened with MPI-IO at all. Writes are synced (MPI-IO ``Sync``,
    ``fsync``) before this returns; ``on_written()`` is called between the writes
    and the sync (to checksum the pieces while the disk flushes them). Reads of
    direct pieces report their chunks to ``listener`` (:func:`.mpiio.posix_io`) as
    they arrive. The first error is raised after this rank has made every collective
    call.

    Collective: call on all ranks.
    """
    direct, aggregated = (
        split_direct(pieces, options.direct_io_threshold, write=write)
        if options.collective
        else (pieces, [])
    )
    if not any_true(comm, bool(aggregated), deadline):
        posix_io(path, direct, write=write, listener=listener, fsync=False, on_moved=on_moved)
        if write:
            _faults.point("mid_data", comm.Get_rank())
            if on_written is not None:
                on_written()
            fsync_path(path)
        return
    exc: BaseException | None = None
    # Collective MPI-IO: every rank has agreed on ``path`` before this point.
    with open_file(
        comm, path, MPI.MODE_WRONLY if write else MPI.MODE_RDONLY, options.mpi_info
    ) as fh:
        try:
            collective_io(fh, comm, aggregated, write=write, deadline=deadline, on_moved=on_moved)
            if write:
                _faults.point("mid_data", comm.Get_rank())
        except BaseException as e:  # keep taking part; raised below
            exc = e
        if exc is None and direct:
            try:
                posix_io(
                    path, direct, write=write, listener=listener, fsync=False, on_moved=on_moved
                )
            except BaseException as e:
                exc = e
        if write:
            if exc is None and on_written is not None:
                on_written()
            fh.Sync()
            if exc is None and direct:
                try:
                    fsync_path(path)
                except BaseException as e:
                    exc = e
    if exc is not None:
        raise exc
