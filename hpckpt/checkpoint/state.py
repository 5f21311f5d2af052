"""Updating the state file after a commit: one place, for ``Checkpoint.save`` and the manager."""

from __future__ import annotations

from collections.abc import Callable

from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..io import CheckpointState, read_state, write_state

__all__ = ["update_state_file"]


def update_state_file(
    comm: MPI.Comm,
    directory: str,
    make_state: Callable[[CheckpointState | None], CheckpointState],
    deadline: Deadline,
    what: str,
    then: Callable[[], None] | None = None,
    *,
    read_current: bool = True,
) -> None:
    """Rank 0 rewrites ``directory``'s state file; every rank agrees on the outcome.

    Rank 0 reads the current state (``None`` if there is none, or when not
    ``read_current``: the caller knows the whole new state), writes
    ``make_state(current)`` atomically, then runs ``then()`` (retention: removing
    old checkpoints). The other ranks only take part in the agreement.

    Collective: call on all ranks.
    """

    def rank0() -> None:
        if comm.Get_rank() != 0:
            return
        _faults.point("after_commit", 0)
        _dist.raise_interrupt()  # a signal on rank 0: fail before the state changes
        current = read_state(directory) if read_current else None
        write_state(directory, make_state(current))
        _faults.point("state", 0)
        if then is not None:
            then()

    _dist.run_agreed(comm, what, rank0, deadline)
