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

from mpi4py import MPI

__all__ = ["AsyncWriter", "async_supported"]


def async_supported() -> bool:
    """Whether MPI allows a background thread to make MPI calls."""
    return MPI.Query_thread() == MPI.THREAD_MULTIPLE


class AsyncWriter:
    """Runs one background job at a time on a private duplicate communicator.

    Collective: construct on all ranks of ``comm`` (it calls ``Dup``).
    """

    def __init__(self, comm: MPI.Comm) -> None:
        self.comm = comm.Dup()
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
            if self._on_error is not None:
                self._on_error()
            self._on_error = None
            raise err
