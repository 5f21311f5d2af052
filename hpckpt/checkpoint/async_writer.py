"""Background execution of checkpoint writes (``CheckpointOptions(enable_async=True)``).

The writer thread makes its collective calls on a duplicate of the checkpoint's
communicator, so they never interleave with the application's own MPI calls on
the original one (this needs ``MPI_THREAD_MULTIPLE``, mpi4py's default). Every
rank runs the same background job; its agreed outcome (success, or the same
``CheckpointError`` everywhere) is delivered by :meth:`AsyncWriter.wait`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
from mpi4py import MPI

from ..errors import WriteCallbackError

__all__ = ["AsyncWriter", "StagingArea", "async_supported"]


def async_supported() -> bool:
    """Whether MPI allows a background thread to make MPI calls."""
    return MPI.Query_thread() == MPI.THREAD_MULTIPLE


class StagingArea:
    """Host buffers for asynchronous snapshots, kept from one save to the next.

    A training job saves the same tensors again and again: reusing the buffers
    of the previous snapshot makes the next one a plain copy into memory that is
    already mapped (no page faults, no allocation), which is most of the time the
    caller is blocked. The area holds exactly one snapshot: buffers the current
    snapshot does not use are dropped. Only touch it when no background write is
    running.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, int], np.ndarray] = {}
        self._next: dict[tuple[str, int], np.ndarray] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers."""
        return sum(b.nbytes for b in self._buffers.values())

    def copy(self, key: str, i: int, a: np.ndarray) -> np.ndarray:
        """A snapshot of ``a`` (piece ``i`` of tensor ``key``) in a reused buffer."""
        buf = self._buffers.pop((key, i), None)
        if buf is None or buf.shape != a.shape or buf.dtype != a.dtype:
            buf = np.empty_like(a, order="C")
        np.copyto(buf, a)
        self._next[(key, i)] = buf
        return buf

    def commit(self) -> None:
        """End a snapshot: drop the buffers it did not reuse."""
        self._buffers, self._next = self._next, {}

    def clear(self) -> None:
        """Drop every buffer."""
        self._buffers.clear()
        self._next.clear()


class AsyncWriter:
    """Runs one background job at a time on a private duplicate communicator.

    Collective: construct on all ranks of ``comm`` (it calls ``Dup``).
    """

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm.Dup()
        self.staging = StagingArea()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._on_error: Callable[[], None] | None = None

    @property
    def busy(self) -> bool:
        """Whether a job is still running."""
        return self._thread is not None and self._thread.is_alive()

    def submit(
        self, job: Callable[[MPI.Comm], None], on_error: Callable[[], None] | None = None
    ) -> None:
        """Start ``job(comm)`` in the background (after waiting for the previous one)."""
        self.wait()

        def run() -> None:
            try:
                job(self.comm)
            except BaseException as e:
                self._error = e

        self._on_error = on_error
        self._thread = threading.Thread(target=run, name="hpckpt-async-save", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        """Wait for the running job; raise its (agreed) error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        err, self._error = self._error, None
        if err is not None:
            # a failed write callback comes after the commit: nothing to undo
            if self._on_error is not None and not isinstance(err, WriteCallbackError):
                self._on_error()
            self._on_error = None
            raise err
