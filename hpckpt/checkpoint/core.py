"""The machinery behind a :class:`~hpckpt.Checkpoint`, and the interface the manager uses.

:class:`CheckpointCore` is the documented internal interface between a
``Checkpoint`` and the layers above it (the manager): its communicator, its
mesh, and a write with hooks (``after`` the commit, ``on_error``, ``finally_``)
that runs synchronously or in the background. Get it with :func:`core_of`.

Call order of a write (collective): wait for the previous background write; plan
(:mod:`.save_plan`); if asynchronous and every rank can snapshot within its
budget (agreed), copy the pieces into staging buffers and hand the write to the
background thread (on a duplicate communicator); otherwise write now. Then the
storage layer's commit protocol runs (:meth:`hpckpt.io.Storage.write`), then
``after(comm)``, then rank 0 runs the write callbacks (agreed).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

from .. import _dist
from .._dist import Deadline
from .._gcpause import gc_paused
from .._interrupts import deferring
from ..errors import WriteCallbackError
from ..io import SHARED_FILE, Storage, wait_removals
from ..mesh import Mesh
from ..options import CheckpointOptions, call_write_callback, io_options
from .async_writer import AsyncWriter, async_supported
from .progress import reporter
from .save_plan import SavePlan, plan_save

__all__ = ["CheckpointCore", "core_of", "run_write_callbacks"]


def run_write_callbacks(
    comm: MPI.Comm, path: str, options: CheckpointOptions, deadline: Deadline
) -> None:
    """Rank 0 calls each of ``options.write_callbacks`` with ``path``; every rank agrees.

    Raises:
        WriteCallbackError: On every rank, if a callback raised (the checkpoint at
            ``path`` is committed all the same).

    Collective: call on all ranks (when ``options.write_callbacks`` is not empty).
    """
    if not options.write_callbacks:
        return

    def rank0() -> None:
        if comm.Get_rank() == 0:
            for fn in options.write_callbacks:
                call_write_callback(fn, path)

    try:
        _dist.run_agreed(comm, f"write callbacks for {path!r}", rank0, deadline)
    except Exception as e:
        raise WriteCallbackError(
            f"a write callback failed after checkpoint {path!r} was committed: {e}",
            getattr(e, "failures", ()),
        ) from e


class CheckpointCore:
    """A checkpoint's communicator, mesh, background writer and write path.

    Args:
        root: The object whose graph is saved (the ``Checkpoint``).
        comm: The communicator every file operation is collective over.
        mesh: The mesh of a ``DTensorCheckpoint`` (``None`` otherwise).
        storage: Where checkpoints go.
    """

    def __init__(
        self, root: Any, comm: MPI.Comm, mesh: Mesh | None, storage: Storage = SHARED_FILE
    ) -> None:
        self._root = weakref.ref(root)  # no cycle: the Checkpoint is freed by refcounting
        self.comm = comm
        self.mesh = mesh
        self.storage = storage
        self._async: AsyncWriter | None = None

    def _async_writer(self) -> AsyncWriter:
        if self._async is None:
            self._async = AsyncWriter(self.comm)
        return self._async

    def plan(self, deadline: Deadline, what: str) -> SavePlan:
        """What a save writes now: every rank's pieces of the live graph (no copies).

        Collective: call on all ranks.
        """
        return plan_save(self._root(), self.comm, deadline, what)

    def sync(self) -> None:
        """Wait for a running background write; raise its agreed error if it failed.

        Collective: call on all ranks.
        """
        if self._async is not None:
            self._async.wait()

    def join(self) -> None:
        """Wait for a running background write on this rank; keep its error for :meth:`sync`."""
        if self._async is not None:
            self._async.join()

    @deferring
    def sync_all(self) -> None:
        """Wait for everything in flight: the background write, then rank 0's removals of
        old files; agreed (the same error on every rank).

        Collective: call on all ranks.
        """
        err: BaseException | None = None
        try:
            self.sync()
        except BaseException as e:  # already agreed by the background job
            err = e

        def removals() -> None:
            if self.comm.Get_rank() == 0:
                wait_removals()

        _dist.run_agreed(self.comm, "waiting for the removal of old checkpoint files", removals)
        if err is not None:
            raise err

    @deferring
    def write(
        self,
        prefix: str,
        options: CheckpointOptions,
        deadline: Deadline,
        *,
        after: Callable[[MPI.Comm], None] | None = None,
        on_error: Callable[[], None] | None = None,
        finally_: Callable[[], None] | None = None,
    ) -> None:
        """Plan on this thread, then write (in the background when asked).

        ``after(comm)`` runs once the checkpoint is committed (state file,
        retention), with the communicator the write used, then the write callbacks
        of ``options``; ``on_error()`` when the write fails in the background (not
        when only a write callback failed: the checkpoint is committed then); and
        ``finally_()`` at the end in every case.

        Collective: call on all ranks.
        """
        self.sync()
        submitted = False
        try:
            with gc_paused():
                submitted = self._write_planned(
                    prefix, options, deadline, after, on_error, finally_
                )
        finally:
            if not submitted and finally_ is not None:
                finally_()

    def _write_planned(
        self,
        prefix: str,
        options: CheckpointOptions,
        deadline: Deadline,
        after: Callable[[MPI.Comm], None] | None,
        on_error: Callable[[], None] | None,
        finally_: Callable[[], None] | None,
    ) -> bool:
        """Plan and write; returns True when the write went to the background."""
        comm = self.comm
        plan = plan_save(self._root(), comm, deadline, f"write of checkpoint {prefix!r}")
        total = sum(math.prod(t.shape) * t.dtype.itemsize for t in plan.tensors)
        report = reporter(options.progress, comm, f"save of {prefix!r}", total)
        iopts = io_options(options, report.local if report is not None else None)
        storage = self.storage
        if options.enable_async:
            # Snapshot into host memory when every rank can, within the budget.
            budget = options.async_memory_budget
            fits = async_supported() and (budget is None or plan.nbytes <= budget)
            if _dist.all_true(comm, fits, deadline):
                writer = self._async_writer()
                staging = writer.staging  # the previous write has finished
                for t in plan.tensors:
                    t.pieces = [
                        (start, staging.copy(t.key, i, a)) for i, (start, a) in enumerate(t.pieces)
                    ]
                staging.commit()

                def job(c: MPI.Comm) -> None:
                    try:
                        with gc_paused():
                            storage.write(
                                c,
                                prefix,
                                plan.tensors,
                                graph=plan.graph,
                                options=iopts,
                                deadline=deadline,
                            )
                        if after is not None:
                            after(c)
                        if report is not None:
                            report.finish()
                        run_write_callbacks(c, prefix, options, deadline)
                    finally:
                        if finally_ is not None:
                            finally_()

                writer.submit(job, on_error, f"asynchronous save of {prefix!r}")
                return True
            if self._async is not None:
                self._async.staging.clear()  # over the budget: hold no snapshot
        storage.write(
            comm, prefix, plan.tensors, graph=plan.graph, options=iopts, deadline=deadline
        )
        if after is not None:
            after(comm)
        if report is not None:
            report.finish()
        run_write_callbacks(comm, prefix, options, deadline)
        return False


def core_of(checkpoint: Any) -> CheckpointCore:
    """The :class:`CheckpointCore` of a ``Checkpoint`` (the manager's way in).

    Raises:
        TypeError: ``checkpoint`` is not a ``Checkpoint``.
    """
    core = getattr(checkpoint, "_hpckpt_core", None)
    if not isinstance(core, CheckpointCore):
        raise TypeError(f"expected an hpckpt.Checkpoint, got {type(checkpoint).__name__}")
    return core
