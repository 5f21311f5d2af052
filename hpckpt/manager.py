"""CheckpointManager: numbered saves, retention, the state file and the directory's lease.

The counterpart of ``tf.train.CheckpointManager``.

As in TensorFlow, a manager manages only what it (or an earlier manager in the same
directory) saved: on construction it adopts the state file's entries newer than the
last preserved timestamp, and never the checkpoints of ``Checkpoint.save`` (which
records its save as preserved). When the clock is behind the last preserved
timestamp it warns, adopts nothing and deletes nothing it found.
"""

from __future__ import annotations

import os
import time
import warnings
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from . import _dist
from ._dist import Deadline
from ._interrupts import deferred, deferring
from .checkpoint import Checkpoint, CheckpointLoadStatus, core_of, update_state_file
from .errors import WriteCallbackError
from .io import (
    CheckpointState,
    DirectoryLease,
    checkpoint_exists,
    delete_checkpoint_files,
    read_state,
    relative_to,
    remove_orphans,
    resolve_latest,
)
from .options import CheckpointOptions
from .tiers import LocalTier, TieredSaves
from .variable import Variable

__all__ = ["CheckpointManager", "RestoredPath"]


class RestoredPath(str):
    """The path :meth:`CheckpointManager.restore_or_initialize` restored (a ``str``).

    Attributes:
        status: The :class:`~hpckpt.CheckpointLoadStatus` of that restore, to assert on
            (``path.status.assert_existing_objects_matched()``).
    """

    status: CheckpointLoadStatus

    def __new__(cls, path: str, status: CheckpointLoadStatus) -> RestoredPath:
        out = super().__new__(cls, path)
        out.status = status
        return out


def _release(lease: DirectoryLease | None) -> None:
    if lease is not None:
        try:
            lease.release()
        except Exception:  # at exit or in a finalizer: nothing to tell anyone
            pass


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, Variable):
        value = value.local
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise TypeError(f"{what} must be an int or an int Variable, got {value!r:.60}") from None
    return n


class CheckpointManager:
    """Manages numbered checkpoints in a directory: saving, retention, the state file.

    Args:
        checkpoint: The :class:`Checkpoint` to save and restore.
        directory: Where checkpoints and the state file ``checkpoint`` live.
        max_to_keep: How many recent checkpoints to keep; ``None`` keeps all.
        keep_checkpoint_every_n_hours: Additionally keep one checkpoint per this
            many hours, whatever ``max_to_keep`` says.
        checkpoint_name: The prefix of checkpoint names (``ckpt`` -> ``ckpt-3``).
        step_counter: An int Variable (or int) giving the training step, used by
            ``checkpoint_interval``.
        checkpoint_interval: Save only if at least this many steps passed since
            the last save (needs ``step_counter``).
        init_fn: Called by :meth:`restore_or_initialize` when there is nothing to restore.
        last_checkpoint_step: The step of the last checkpoint, from which
            ``checkpoint_interval`` counts (default: none, the first save is not skipped).
        clock: Seconds since the epoch for save times and ``keep_checkpoint_every_n_hours``
            (default: ``time.time()``, looked up at each call); for tests and simulations.
        local_tier: A :class:`LocalTier`: multi-level checkpointing. Every save goes to
            node-local storage (plus a partner copy); persisted saves also go to
            ``directory`` in the standard format, in the background (see
            :mod:`hpckpt.tiers`).
        persist_every: With ``local_tier``: also persist every N-th save (by
            ``save_counter``); ``None``: only saves with ``persist=True``.

    One writer per directory: the first :meth:`save` takes the directory's lease
    (``DIR/.hpckpt.lock``) and the manager holds it until :meth:`close`, the end
    of a ``with`` block, its garbage collection or the end of the process. A save
    into a directory another live job holds fails at once on every rank with a
    ``CheckpointError`` naming that job (see docs/reliability.md). Managers that
    only restore never take it.

    Raises:
        ValueError: A bad ``max_to_keep``, ``checkpoint_interval`` without ``step_counter``,
            or ``persist_every`` without ``local_tier``.
        TypeError: ``checkpoint`` is not a :class:`Checkpoint`.

    Collective: construct on all ranks (it reads the state file on rank 0).
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        directory: str | os.PathLike,
        max_to_keep: int | None,
        keep_checkpoint_every_n_hours: float | None = None,
        checkpoint_name: str = "ckpt",
        step_counter: Any = None,
        checkpoint_interval: int | None = None,
        init_fn: Callable[[], Any] | None = None,
        last_checkpoint_step: int | None = None,
        *,
        clock: Callable[[], float] | None = None,
        local_tier: LocalTier | None = None,
        persist_every: int | None = None,
    ) -> None:
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(
                f"checkpoint must be an hpckpt.Checkpoint, got {type(checkpoint).__name__}"
            )
        if max_to_keep is not None and (
            isinstance(max_to_keep, bool) or not isinstance(max_to_keep, int) or max_to_keep < 1
        ):
            raise ValueError(f"max_to_keep must be a positive int or None, got {max_to_keep!r}")
        if checkpoint_interval is not None:
            if step_counter is None:
                raise ValueError("checkpoint_interval needs a step_counter")
            if (
                isinstance(checkpoint_interval, bool)
                or not isinstance(checkpoint_interval, int)
                or checkpoint_interval < 1
            ):
                raise ValueError(
                    f"checkpoint_interval must be a positive int, got {checkpoint_interval!r}"
                )
        if keep_checkpoint_every_n_hours is not None and not keep_checkpoint_every_n_hours > 0:
            raise ValueError(
                "keep_checkpoint_every_n_hours must be positive, got "
                f"{keep_checkpoint_every_n_hours!r}"
            )
        if not isinstance(checkpoint_name, str) or not checkpoint_name or "/" in checkpoint_name:
            raise ValueError(f"checkpoint_name must be a plain file name, got {checkpoint_name!r}")
        if last_checkpoint_step is not None and (
            isinstance(last_checkpoint_step, bool) or not isinstance(last_checkpoint_step, int)
        ):
            raise ValueError(f"last_checkpoint_step must be an int, got {last_checkpoint_step!r}")
        if persist_every is not None and local_tier is None:
            raise ValueError("persist_every needs a local_tier (every save is persisted without)")
        self._checkpoint = checkpoint
        self._directory = os.fspath(directory)
        self._max_to_keep = max_to_keep
        self._keep_hours = keep_checkpoint_every_n_hours
        self._prefix = os.path.join(self._directory, checkpoint_name)
        self._name = checkpoint_name
        self._step_counter = step_counter
        self._interval = checkpoint_interval
        self._init_fn = init_fn
        self._clock: Callable[[], float] = clock if clock is not None else (lambda: time.time())
        self._last_step: int | None = last_checkpoint_step
        self._core = core_of(checkpoint)
        comm = self._core.comm
        self._closed = False
        # rank 0 holds the lease; it is given up when the manager is closed or collected,
        # or at exit (after pending asynchronous saves: threading's exit hooks run first)
        self._lease = DirectoryLease(self._directory) if comm.Get_rank() == 0 else None
        self._release = weakref.finalize(self, _release, self._lease)

        def load() -> dict | None:
            if comm.Get_rank() != 0:
                return None
            return self._recover(read_state(self._directory), float(self._clock()))

        with deferred():
            doc = _dist.run_agreed(comm, f"reading the state file in {self._directory!r}", load)
            doc = _dist.bcast_json(comm, doc)
        self._kept: list[tuple[str, float]] = [
            (os.path.join(self._directory, p), t) for p, t in doc["checkpoints"]
        ]
        self._latest: str | None = (
            None if doc["latest"] is None else os.path.join(self._directory, doc["latest"])
        )
        self._last_preserved = float(doc["lpt"])
        self._latest_time = float(doc.get("latest_time") or 0.0)
        self._tiers: TieredSaves | None = None
        if local_tier is not None:
            self._tiers = TieredSaves(
                checkpoint, local_tier, persist_every, checkpoint_name, self._clock
            )

    def _recover(self, state: CheckpointState | None, now: float) -> dict:
        """What a new manager takes over from the state file (rank 0), as TF does.

        It adopts the entries saved after the last preserved timestamp (those of an
        earlier manager), not the others (``Checkpoint.save``'s, or those preserved by
        ``keep_checkpoint_every_n_hours``), which it never deletes. When the clock is
        behind the last preserved timestamp, that timestamp is set back to the clock's
        time, with a warning: nothing is adopted, so nothing found here is deleted.
        """
        if state is None:
            # slightly in the past: a manager re-created at once still adopts its saves
            return {"checkpoints": [], "latest": None, "lpt": now - 1.0}
        lpt = state.last_preserved_timestamp
        if now < lpt:
            warnings.warn(
                f"The clock returned a value {lpt - now:f} seconds behind the last preserved "
                f"checkpoint timestamp in {self._directory!r}: the checkpoints listed there "
                "will not be managed (kept, never deleted) by this CheckpointManager.",
                stacklevel=5,
            )
            lpt = now
        adopted = [
            [p, min(t, now)]
            for p, t in state.checkpoints
            if min(t, now) > lpt and checkpoint_exists(os.path.join(self._directory, p))
        ]
        latest = resolve_latest(self._directory, state)
        times = [t for p, t in state.checkpoints if p == latest]
        return {
            "checkpoints": adopted,
            "latest": latest,
            "lpt": lpt,
            "latest_time": times[-1] if times else None,
        }

    @property
    def directory(self) -> str:
        """The checkpoint directory."""
        return self._directory

    @property
    def checkpoints(self) -> list[str]:
        """Paths of the managed checkpoints, oldest first.

        Checkpoints preserved by ``keep_checkpoint_every_n_hours``, and those this
        manager did not adopt, are not listed (and never deleted).
        """
        return [p for p, _ in self._kept]

    @property
    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint in the directory (managed or not), or ``None``.

        With a local tier: the newest complete checkpoint of either tier (a local one
        is named by the tier's path, ``{node}`` kept, and its name).
        """
        if self._tiers is not None:
            persisted = None if self._latest is None else (self._latest, self._latest_time)
            return self._tiers.latest(persisted)
        return self._latest

    @property
    def persist_seconds(self) -> float | None:
        """With a local tier: how long the last flush to ``directory`` took on this rank
        (``None`` before the first one, and without a local tier)."""
        return self._tiers.persist_seconds if self._tiers is not None else None

    @property
    def local_checkpoints(self) -> list[str]:
        """With a local tier: its complete checkpoints, oldest first (else ``[]``)."""
        return self._tiers.local_paths if self._tiers is not None else []

    def sync(self) -> None:
        """Wait for everything in flight: an asynchronous save (with its retention and
        state file update), a background flush to the parallel file system, the removal
        of the files of dropped checkpoints.

        Raises the agreed error of a background write that failed (the same
        :class:`CheckpointError` on every rank).

        Collective: call on all ranks.
        """
        self._checkpoint.sync()  # the background save, then rank 0's removals (agreed)
        if self._tiers is not None:
            self._tiers.sync()
            self._core.sync_all()  # removals that the flush's retention started

    @property
    def checkpoint(self) -> Checkpoint:
        """The managed checkpoint."""
        return self._checkpoint

    @property
    def checkpoint_interval(self) -> int | None:
        """The step interval between saves, if any."""
        return self._interval

    @deferring
    def save(
        self,
        checkpoint_number: Any = None,
        check_interval: bool = True,
        options: CheckpointOptions | None = None,
        *,
        persist: bool = False,
    ) -> str | None:
        """Save a numbered checkpoint, apply retention and update the state file.

        With a local tier, the checkpoint is saved to the tier (the call returns once
        it is committed there) and, when ``persist`` is true or the save is an N-th
        one (``persist_every``), also written to ``directory`` in the background;
        :meth:`sync` waits for that.

        Args:
            checkpoint_number: The number in the name (int or int Variable); by
                default the checkpoint's ``save_counter`` after it is incremented.
            check_interval: Honour ``checkpoint_interval`` (skip if too few steps
                passed). Either way, with ``checkpoint_interval`` a second save at
                the same step is skipped.
            options: Checkpoint options.
            persist: With a local tier: also write this save to ``directory`` (in the
                background). Without one every save is persisted.

        Returns:
            The new checkpoint's path (with a local tier: the local path), or ``None``
            when the interval skipped it.

        Raises:
            CheckpointError: On every rank: the save failed, or another live job
                holds the directory's lease.

        Collective: call on all ranks.
        """
        if self._closed:
            raise ValueError(f"this CheckpointManager of {self._directory!r} is closed")
        if self._interval is not None:
            step = _as_int(self._step_counter, "step_counter")
            if self._last_step is not None:
                if step == self._last_step:
                    return None  # already saved at this step
                if check_interval and step < self._last_step + self._interval:
                    return None
        options = options or CheckpointOptions()
        sc = self._checkpoint.save_counter
        old = int(sc.local)
        number = (
            old + 1
            if checkpoint_number is None
            else _as_int(checkpoint_number, "checkpoint_number")
        )
        path = f"{self._prefix}-{number}"
        deadline = Deadline(options.timeout, f"manager save of {path!r}")
        self._core.sync()  # the previous (asynchronous) save is complete first
        last_step = self._last_step

        def rollback() -> None:
            sc.local[...] = old
            self._last_step = last_step

        sc.local[...] = old + 1
        if self._step_counter is not None:
            self._last_step = _as_int(self._step_counter, "step_counter")
        try:
            if self._tiers is not None:
                return self._tiers.save(
                    path,
                    options,
                    deadline,
                    persist=persist,
                    count=old + 1,
                    retain=lambda c, when: self._retain(path, deadline, c, when),
                    lock=self._lock,
                    unlock=self._unlock,
                    on_error=rollback,
                )
            self._lock(deadline)
            self._core.write(
                path,
                options,
                deadline,
                after=lambda c: self._retain(path, deadline, c),
                on_error=rollback,
            )
        except WriteCallbackError:
            raise  # the checkpoint is committed and managed
        except BaseException:
            rollback()
            raise
        return path

    def _lock(self, deadline: Deadline) -> None:
        """Before a save: rank 0 checks (and renews) the directory's writer lease, which
        this manager holds until it is closed; agreed, so that every rank refuses a save
        into a directory another job took over."""
        comm = self._core.comm
        lease = self._lease

        def take() -> None:
            if lease is not None:
                lease.check()

        _dist.run_agreed(comm, f"taking the writer lease of {self._directory!r}", take, deadline)

    def _unlock(self) -> None:
        """After a save (not collective): nothing to release, the lease is held until
        :meth:`close`."""

    def _retain(self, path: str, deadline: Deadline, comm: Any, when: float | None = None) -> None:
        # rank 0's clock decides, so that every rank keeps the same list (a persisted
        # copy of a local checkpoint keeps the time it was saved: ``when``)
        now = float(_dist.bcast_json(comm, self._clock(), 0, deadline)) if when is None else when
        kept = [(p, t) for p, t in self._kept if p != path] + [(path, now)]
        removed: list[str] = []
        last_preserved = self._last_preserved
        if self._max_to_keep is not None:
            while len(kept) > self._max_to_keep:
                p, t = kept.pop(0)
                if self._keep_hours is not None and t - last_preserved >= self._keep_hours * 3600:
                    last_preserved = t
                    continue
                removed.append(p)

        def make_state(_: CheckpointState | None) -> CheckpointState:
            return CheckpointState(
                [(relative_to(self._directory, p), t) for p, t in kept],
                relative_to(self._directory, path),
                last_preserved,
            )

        def remove_old() -> None:
            for p in removed:
                delete_checkpoint_files(p)
            remove_orphans(self._directory, self._name)

        update_state_file(
            comm,
            self._directory,
            make_state,
            deadline,
            f"retention and state file update for {path!r}",
            remove_old,
            read_current=False,
        )
        self._kept = kept
        self._latest = path
        self._latest_time = now
        self._last_preserved = last_preserved

    @deferring
    def close(self) -> None:
        """Finish what is in flight (:meth:`sync`) and give the directory's lease up.

        Idempotent; the manager cannot save afterwards.

        Collective: call on all ranks.
        """
        if self._closed:
            return
        self._closed = True
        try:
            self.sync()
        finally:
            self._release()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if typ is None:
            self.close()
            return
        # Leaving with an exception, perhaps on this rank only: nothing collective. The
        # background write finishes (its error, if any, is printed at exit), then the
        # lease goes.
        self._closed = True
        self._core.join()
        self._release()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def restore_or_initialize(self) -> RestoredPath | None:
        """Restore the latest checkpoint, or call ``init_fn`` if there is none.

        Returns:
            The restored path (a ``str``, as in TensorFlow) whose ``status`` attribute is
            the load status of the restore; or ``None`` when it initialized.

        With a local tier: the newest complete checkpoint of either tier, falling back
        past damaged or missing ones with a warning (see :mod:`hpckpt.tiers`).

        Collective: call on all ranks.
        """
        if self._tiers is not None:
            persisted = list(self._kept)
            if self._latest is not None and self._latest not in self.checkpoints:
                persisted.append((self._latest, self._latest_time))
            found = self._tiers.restore(persisted)
            if found is not None:
                if self._step_counter is not None:
                    self._last_step = _as_int(self._step_counter, "step_counter")
                return RestoredPath(*found)  # type: ignore[arg-type]
            if self._init_fn is not None:
                self._init_fn()
            return None
        latest = self.latest_checkpoint
        if latest is not None:
            status = self._checkpoint.restore(latest)
            if self._step_counter is not None:
                self._last_step = _as_int(self._step_counter, "step_counter")
            return RestoredPath(latest, status)  # type: ignore[arg-type]
        if self._init_fn is not None:
            self._init_fn()
        return None
