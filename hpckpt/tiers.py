"""Multi-level checkpointing: the local tier's policy, used by :class:`CheckpointManager`.

``CheckpointManager(..., local_tier=LocalTier(...), persist_every=N)`` saves every
checkpoint to node-local storage (with a copy on the partner node), and every N-th
one (or one saved with ``persist=True``) also to the manager's directory on the
parallel file system, in the background. This module decides:

* **when to persist**: when ``save_counter`` is a multiple of ``persist_every``, or
  when asked; the flush writes the standard format from the local tier's files
  (memory maps: no second copy of the state in memory), on a background thread
  over a duplicate communicator, while the application continues. One flush runs
  at a time: a save that must persist waits for the previous flush; other saves
  do not. A failed flush is raised, the same on every rank, by the next save or
  ``sync()`` (the local checkpoint stays valid);
* **retention**: ``keep`` applies to local checkpoints (older ones are removed from
  every node's directory); ``max_to_keep`` and ``keep_checkpoint_every_n_hours`` to
  persisted ones (the manager's own rules);
* **which tier to restore from**: the newest complete checkpoint (by save time; on
  a tie the local one), falling back past damaged or missing ones, with a warning
  naming each checkpoint skipped: local copies (each node's own, else its partner's
  copy), then persisted ones. Local checkpoints saved by another rank or node count
  are not restorable here: the parallel file system serves such restores.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mpi4py import MPI

from . import _dist
from ._dist import Deadline
from ._gcpause import gc_paused
from .checkpoint import Checkpoint, CheckpointLoadStatus, core_of, restore_from
from .checkpoint.async_writer import AsyncWriter, async_supported
from .checkpoint.core import run_write_callbacks
from .errors import CorruptCheckpointError, NotFoundError
from .io import (
    REDUNDANCIES,
    SHARED_FILE,
    LocalTierStorage,
    local_directory,
    mapped_copies,
    remove_local,
    scan_local,
    write_local,
)
from .options import CheckpointOptions, io_options
from .topology import NodeMap, node_map

__all__ = ["LocalTier", "TieredSaves"]


class LocalTier:
    """Node-local storage for multi-level checkpointing.

    Args:
        path: Each node's directory: ``{node}`` is replaced by the node's index
            (``"/dev/shm/run-{node}"``). On a cluster, node-local paths are the same
            on every node (``"/dev/shm/run"``); ``{node}`` is needed only when nodes
            share a file system (one machine, ``HPCKPT_RANKS_PER_NODE``).
        keep: How many local checkpoints to keep (older ones are removed).
        redundancy: ``"partner"``: every node's data is also copied to node
            ``(i + 1) mod n`` (the checkpoint survives the loss of one node);
            ``"none"``: node-local copies only (it survives process crashes).

    Raises:
        ValueError: A bad path, ``keep`` or ``redundancy``.
    """

    def __init__(self, path: str | os.PathLike, keep: int = 2, redundancy: str = "partner") -> None:
        p = os.fspath(path)
        if not isinstance(p, str) or not p or "\x00" in p:
            raise ValueError(f"LocalTier path must be a non-empty path, got {path!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"LocalTier keep must be a positive int, got {keep!r}")
        if redundancy not in REDUNDANCIES:
            raise ValueError(
                f"LocalTier redundancy must be one of {list(REDUNDANCIES)}, got {redundancy!r}"
            )
        self._path = p
        self._keep = keep
        self._redundancy = redundancy

    @property
    def path(self) -> str:
        """The path pattern (``{node}`` not replaced)."""
        return self._path

    @property
    def keep(self) -> int:
        """How many local checkpoints are kept."""
        return self._keep

    @property
    def redundancy(self) -> str:
        """``"partner"`` or ``"none"``."""
        return self._redundancy

    def directory(self, node: int) -> str:
        """Node ``node``'s directory."""
        return local_directory(self._path, node)

    def __repr__(self) -> str:
        return f"LocalTier({self._path!r}, keep={self._keep}, redundancy={self._redundancy!r})"


@dataclass
class _Local:
    """A complete local checkpoint: its path (``{node}`` kept), name and save time."""

    path: str
    name: str
    created: float
    token: str


_unsynced: dict[int, tuple[str, AsyncWriter]] = {}  # flushes nobody waited for yet


def _finish_unsynced() -> None:
    """At exit: finish every flush still running, and print the error of one that failed
    and that no ``save``/``sync`` collected, on every rank: never dropped silently.

    Runs when the main thread has finished, before Python refuses new work to thread
    pools (which the flush uses) and before MPI is finalized.
    """
    for path, writer in list(_unsynced.values()):
        try:
            writer.wait()
        except BaseException as e:
            sys.stderr.write(
                f"hpckpt: persisting {path!r} to the parallel file system failed and no "
                f"save() or sync() collected the error: {e}\n"
            )
    _unsynced.clear()


# threading's exit hooks run (last registered first) before concurrent.futures stops its
# pools and before non-daemon threads are joined; atexit would be too late for the pools.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_finish_unsynced)
else:  # pragma: no cover - other Pythons
    atexit.register(_finish_unsynced)


def _rank0_warn(comm: MPI.Comm, message: str) -> None:
    if comm.Get_rank() == 0:
        warnings.warn(message, stacklevel=4)


class _Job:
    """One save of a :class:`TieredSaves`: its local part and its flush (either may run
    in the background, on the communicator they are given)."""

    def __init__(
        self,
        owner: TieredSaves,
        path: str,
        name: str,
        local_path: str,
        options: CheckpointOptions,
        deadline: Deadline,
        retain: Callable[[MPI.Comm, float], None],
        lock: Callable[[Deadline], None],
        unlock: Callable[[], None],
    ) -> None:
        self.owner = owner
        self.path = path
        self.name = name
        self.local_path = local_path
        self.options = options
        self.deadline = deadline
        self.retain = retain
        self.lock = lock
        self.unlock = unlock
        self.plan: Any = None
        self.now = 0.0
        self.saved: Any = None
        self.tensors: Any = None
        self.committed = False

    def local(self, comm: MPI.Comm, recycle: tuple[str, str] | None) -> None:
        """Write and commit the local checkpoint; local retention; write callbacks.

        Collective: call on all ranks of ``comm``.
        """
        o = self.owner
        with gc_paused():
            self.saved = write_local(
                comm,
                o.nodes,
                o.tier.path,
                self.name,
                self.plan.tensors,
                graph=self.plan.graph,
                redundancy=o.tier.redundancy,
                created=self.now,
                deadline=self.deadline,
                recycle=recycle,
            )
        self.committed = True
        kept = [x for x in o.local if x.name != self.name]
        kept.append(_Local(self.local_path, self.name, self.now, self.saved.token))
        kept.sort(key=lambda x: x.created)
        o.local = kept[-o.tier.keep :]
        keep = {x.name: x.token for x in o.local}
        remove_local(comm, o.nodes, o.tier.path, o.name, keep, self.deadline)
        run_write_callbacks(comm, self.local_path, self.options, self.deadline)

    def map(self, comm: MPI.Comm) -> None:
        """Each rank's pieces as maps of its node's file, with their save-time checksums.

        Collective: call on all ranks of ``comm``.
        """
        what = f"persisting {self.path!r}"
        self.tensors = _dist.run_agreed(
            comm, what, lambda: mapped_copies(self.saved), self.deadline
        )

    def flush(self, comm: MPI.Comm) -> None:
        """Write the standard checkpoint to the parallel file system; the manager's
        retention and state file.

        Collective: call on all ranks of ``comm``.
        """
        t0 = time.monotonic()
        with gc_paused():
            SHARED_FILE.write(
                comm,
                self.path,
                self.tensors,
                graph=self.plan.graph,
                options=io_options(self.options),
                deadline=self.deadline,
            )
        self.retain(comm, self.now)
        self.owner.persist_seconds = time.monotonic() - t0


class TieredSaves:
    """The local tier and background persistence of one :class:`CheckpointManager`.

    Args:
        checkpoint: The managed checkpoint.
        tier: The local tier.
        persist_every: Persist every N-th save (by ``save_counter``); ``None``: only
            saves with ``persist=True``.
        checkpoint_name: The manager's checkpoint name prefix.
        clock: The manager's clock (save times).

    Raises:
        ValueError: A bad ``persist_every`` or ``HPCKPT_RANKS_PER_NODE``.

    Collective: construct on all ranks (it learns the nodes and lists the tier).
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        tier: LocalTier,
        persist_every: int | None,
        checkpoint_name: str,
        clock: Callable[[], float],
    ) -> None:
        if not isinstance(tier, LocalTier):
            raise TypeError(f"local_tier must be an hpckpt.LocalTier, got {type(tier).__name__}")
        if persist_every is not None and (
            isinstance(persist_every, bool)
            or not isinstance(persist_every, int)
            or persist_every < 1
        ):
            raise ValueError(f"persist_every must be a positive int or None, got {persist_every!r}")
        self.checkpoint = checkpoint
        self.core = core_of(checkpoint)
        self.tier = tier
        self.persist_every = persist_every
        self.name = checkpoint_name
        self.clock = clock
        comm = self.core.comm
        deadline = Deadline(None, f"listing the local tier {tier.path!r}")
        self.nodes: NodeMap = node_map(comm, deadline)
        found = scan_local(comm, self.nodes, tier.path, deadline, checkpoint_name=checkpoint_name)
        self.local: list[_Local] = sorted(
            (_Local(c.path, c.name, c.created, c.index.token) for c in found if c.complete),
            key=lambda x: x.created,
        )
        self._writer: AsyncWriter | None = None
        self._job: tuple[str, str, str] | None = None  # (kind, path, name) of a background job
        self.persist_seconds: float | None = None

    # -- state --

    @property
    def local_paths(self) -> list[str]:
        """The complete local checkpoints, oldest first (paths with ``{node}``)."""
        return [x.path for x in self.local]

    def latest(self, persisted: tuple[str, float] | None) -> str | None:
        """The newest checkpoint: the newest local one unless ``persisted`` is newer."""
        if not self.local:
            return persisted[0] if persisted is not None else None
        newest = self.local[-1]
        if persisted is not None and persisted[1] > newest.created:
            return persisted[0]
        return newest.path

    # -- saving --

    def save(
        self,
        path: str,
        options: CheckpointOptions,
        deadline: Deadline,
        *,
        persist: bool,
        count: int,
        retain: Callable[[MPI.Comm, float], None],
        lock: Callable[[Deadline], None],
        unlock: Callable[[], None],
        on_error: Callable[[], None] | None = None,
    ) -> str:
        """Save to the local tier; persist to ``path`` in the background when due.

        ``retain(comm, when)`` records a persisted checkpoint (state file, retention of
        persisted checkpoints); ``lock``/``unlock`` hold the manager's directory while
        a flush writes into it. With ``options.enable_async`` (and the snapshot within
        ``async_memory_budget``), the state is copied into reused staging buffers and
        the local save itself runs in the background too; ``on_error()`` is called when
        it fails there before its local commit.

        Returns:
            The local checkpoint's path.

        Collective: call on all ranks.
        """
        comm = self.core.comm
        persist = persist or (self.persist_every is not None and count % self.persist_every == 0)
        # One background job at a time: a flush delays only saves that persist (or
        # snapshot); a local save in the background delays every save.
        busy_local = self._job is not None and self._job[0] == "local"
        self._collect(wait=persist or options.enable_async or busy_local)
        name = os.path.basename(path)
        local_path = os.path.join(self.tier.path, name)
        what = f"local save of {name!r}"
        job = _Job(self, path, name, local_path, options, deadline, retain, lock, unlock)
        with gc_paused():
            job.plan = self.core.plan(deadline, what)
            job.now = float(_dist.bcast_json(comm, float(self.clock()), 0, deadline))
            if options.enable_async:
                budget = options.async_memory_budget
                fits = async_supported() and (budget is None or job.plan.nbytes <= budget)
                if _dist.all_true(comm, fits, deadline):
                    self._in_background(job, persist, on_error)
                    return local_path
                if self._writer is not None:
                    self._writer.staging.clear()  # over the budget: hold no snapshot
            job.local(comm, self._recycled(name))
        if persist:
            self._persist(job)
        return local_path

    def _recycled(self, name: str) -> tuple[str, str] | None:
        """The local checkpoint whose files this save reuses (SCR reuses its cache so):
        the one of the same name, else the oldest when ``keep`` are kept, but never one
        that a background job uses, and never the only complete one (``keep`` of 1). It
        is dropped from the list now: the save uncommits it first, whatever happens."""
        if self.tier.keep < 2:
            return None
        busy = self._job[2] if self._job is not None else None
        same = [x for x in self.local if x.name == name]
        cand = same[0] if same else (self.local[0] if len(self.local) >= self.tier.keep else None)
        if cand is None or cand.name == busy:
            return None
        self.local = [x for x in self.local if x is not cand]
        return cand.name, cand.token

    def _writer_for(self, comm: MPI.Comm) -> AsyncWriter:
        if self._writer is None:
            self._writer = AsyncWriter(comm)
        return self._writer

    def _persist(self, job: _Job) -> None:
        """Flush a committed local save to the parallel file system in the background."""
        comm = self.core.comm
        job.map(comm)
        job.lock(job.deadline)

        def run(c: MPI.Comm) -> None:
            try:
                job.flush(c)
            finally:
                job.unlock()

        if not async_supported():  # no MPI_THREAD_MULTIPLE: persist now
            run(comm)
            return
        self._submit(("flush", job.path, job.name), run, None)

    def _in_background(self, job: _Job, persist: bool, on_error: Callable[[], None] | None) -> None:
        """Snapshot into staging buffers; the local save (and the flush) in the background."""
        comm = self.core.comm
        staging = self._writer_for(comm).staging
        for t in job.plan.tensors:
            t.pieces = [(st, staging.copy(t.key, i, a)) for i, (st, a) in enumerate(t.pieces)]
        staging.commit()
        recycle = self._recycled(job.name)
        if persist:
            job.lock(job.deadline)

        def run(c: MPI.Comm) -> None:
            try:
                job.local(c, recycle)
                if persist:
                    job.map(c)
                    job.flush(c)
            finally:
                if persist:
                    job.unlock()

        def failed() -> None:
            if not job.committed and on_error is not None:
                on_error()  # nothing was committed: the save did not happen

        self._submit(("local", job.path, job.name), run, failed)

    def _submit(
        self,
        kind: tuple[str, str, str],
        run: Callable[[MPI.Comm], None],
        on_error: Callable[[], None] | None,
    ) -> None:
        writer = self._writer_for(self.core.comm)
        self._job = kind
        writer.submit(run, on_error)
        _unsynced[id(self)] = (kind[1], writer)

    def _collect(self, *, wait: bool) -> None:
        """Raise the agreed error of a finished flush; with ``wait``, wait for it first.

        Collective: call on all ranks.
        """
        w = self._writer
        if w is None or self._job is None:
            return
        if not wait and not _dist.all_true(self.core.comm, not w.busy):
            return
        self._job = None
        _unsynced.pop(id(self), None)
        w.wait()

    def sync(self) -> None:
        """Wait for the running flush; raise its agreed error if it failed.

        Collective: call on all ranks.
        """
        self._collect(wait=True)

    @property
    def flushing(self) -> str | None:
        """The path of the background job not yet collected (a flush, or a local save)."""
        return self._job[1] if self._job is not None else None

    # -- restoring --

    def restore(
        self, persisted: list[tuple[str, float]]
    ) -> tuple[str, CheckpointLoadStatus] | None:
        """Restore the newest complete checkpoint of either tier (see the module doc).

        Args:
            persisted: The persisted checkpoints ``(path, save time)`` in any order.

        Returns:
            ``(path, status)``, or ``None`` when there is nothing to restore.

        Raises:
            CorruptCheckpointError: On every rank, when every candidate was damaged
                (the last error).

        Collective: call on all ranks.
        """
        comm = self.core.comm
        self.sync()
        deadline = Deadline(None, f"restore from the local tier {self.tier.path!r}")
        found = scan_local(comm, self.nodes, self.tier.path, deadline, checkpoint_name=self.name)
        for c in found:
            if not c.complete:
                _rank0_warn(comm, f"local checkpoint {c.path!r} is skipped: {'; '.join(c.notes)}")
        candidates: list[tuple[float, int, str, Any]] = [
            (c.created, 1, c.path, c) for c in found if c.complete
        ]
        candidates += [(t, 0, p, None) for p, t in persisted]
        candidates.sort(key=lambda x: (x[0], x[1]), reverse=True)
        last: BaseException | None = None
        for _, _, path, c in candidates:
            try:
                if c is not None:
                    status = restore_from(self.checkpoint, path, LocalTierStorage(c, self.nodes))
                else:
                    status = self.checkpoint.restore(path)  # type: ignore[assignment]
                return path, status
            except (CorruptCheckpointError, NotFoundError) as e:  # agreed on every rank
                _rank0_warn(comm, f"checkpoint {path!r} is skipped: {e}")
                last = e
        if last is not None:
            raise last
        return None
