"""Background execution of checkpoint writes (``CheckpointOptions(enable_async=True)``).

The writer thread makes its collective calls on a duplicate of the checkpoint's
communicator, so they never interleave with the application's own MPI calls on
the original one (this needs ``MPI_THREAD_MULTIPLE``, mpi4py's default). Every
rank runs the same background job; its agreed outcome (success, or the same
``CheckpointError`` everywhere) is delivered by :meth:`AsyncWriter.wait`.

A pending write is never dropped at exit: :func:`finish_at_exit` runs when the
main program ends, before the interpreter shuts down its thread pools and long
before mpi4py finalizes MPI (``threading``'s exit hooks run first, then
``atexit``'s, then mpi4py's ``Py_AtExit`` finalizer). It waits for every pending
write; an error nobody has seen yet is printed on every rank and the process exits
with status 1.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook must be registered before ours
import contextlib
import os
import sys
import threading
from collections.abc import Callable

import numpy as np
from mpi4py import MPI

from .. import _interrupts
from ..errors import WriteCallbackError
from ..io import wait_removals

__all__ = ["AsyncWriter", "StagingArea", "async_supported", "finish_at_exit"]

_unfinished: set[AsyncWriter] = set()  # a job running, or an error not yet raised
_unfinished_lock = threading.Lock()


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
        self.what = ""

    @property
    def busy(self) -> bool:
        """Whether a job is still running."""
        return self._thread is not None and self._thread.is_alive()

    def submit(
        self,
        job: Callable[[MPI.Comm], None],
        on_error: Callable[[], None] | None = None,
        what: str = "asynchronous save",
    ) -> None:
        """Start ``job(comm)`` in the background (after waiting for the previous one)."""
        self.wait()
        self.what = what

        def run() -> None:
            try:
                job(self.comm)
            except BaseException as e:
                self._error = e

        self._on_error = on_error
        self._thread = threading.Thread(target=run, name="hpckpt-async-save", daemon=False)
        with _unfinished_lock:
            _unfinished.add(self)
        self._thread.start()

    def join(self) -> None:
        """Wait for the running job; keep its error for :meth:`wait` (or the exit hook)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait(self) -> None:
        """Wait for the running job; raise its (agreed) error if it failed."""
        self.join()
        err, self._error = self._error, None
        with _unfinished_lock:
            _unfinished.discard(self)
        if err is not None:
            # a failed write callback comes after the commit: nothing to undo
            if self._on_error is not None and not isinstance(err, WriteCallbackError):
                self._on_error()
            self._on_error = None
            raise err


def _exit_now(status: int) -> None:
    """End the process with ``status``, after what a normal exit would have run."""
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()  # the program's own exit handlers (they may use MPI)
    with contextlib.suppress(BaseException):
        if MPI.Is_initialized() and not MPI.Is_finalized():
            MPI.Finalize()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    os._exit(status)


def finish_at_exit() -> None:
    """Finish every pending asynchronous write before the interpreter exits.

    Runs on every rank when its main program ends (registered with ``threading``'s
    exit hooks). Errors not yet raised are printed on stderr, naming the rank, and
    the process exits with status 1. If a signal handler had to leave a collective
    operation in the middle (:func:`hpckpt._interrupts.broken`), the job is aborted:
    the other ranks would wait for this one forever.
    """
    failures: list[tuple[str, BaseException]] = []
    try:
        with _interrupts.deferred():
            while True:
                with _unfinished_lock:
                    writers = list(_unfinished)
                if not writers:
                    break
                for w in writers:
                    try:
                        w.wait()
                    except BaseException as err:
                        failures.append((w.what, err))
            wait_removals()
    except BaseException:  # a signal's handler, or a removal that failed: we are exiting
        pass
    rank = MPI.COMM_WORLD.Get_rank() if MPI.Is_initialized() and not MPI.Is_finalized() else 0
    for what, e in failures:
        sys.stderr.write(
            f"hpckpt: rank {rank}: the {what} did not complete, and the program exited without "
            f"calling sync(): {type(e).__name__}: {e}\n"
        )
    if _interrupts.broken() and MPI.Is_initialized() and not MPI.Is_finalized():
        sys.stderr.write(
            f"hpckpt: rank {rank}: a signal handler left a checkpoint operation in the middle; "
            "aborting the job so that no rank waits for this one\n"
        )
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
    if failures:
        _exit_now(1)


_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(finish_at_exit)  # runs before concurrent.futures' own hook (last in, first out)
else:  # pragma: no cover - every supported Python has it
    atexit.register(finish_at_exit)
