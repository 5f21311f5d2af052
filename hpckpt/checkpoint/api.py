"""``Checkpoint`` and ``DTensorCheckpoint``: the public API.

A save walks the live object graph, plans each rank's pieces
(:mod:`.save_plan`) and hands them to the storage layer's commit protocol
(:mod:`.core`); ``save`` then updates the state file (:mod:`.state`). A restore
reads the index, matches the saved graph against live objects and reads each
matched variable's slice for its *current* layout (:mod:`.restore`).
"""

from __future__ import annotations

import copy
import os
import time
import weakref
from typing import Any

import numpy as np
from mpi4py import MPI

from .. import _dist
from .._dist import Deadline
from .._gcpause import gc_paused
from .._interrupts import deferring
from ..errors import (
    CheckpointChangedError,
    CheckpointError,
    CorruptCheckpointError,
    NotFoundError,
    WriteCallbackError,
)
from ..graph import Module, SavedGraph, Trackable, children_of, is_trackable, parse_graph, wrap
from ..io import READ_RETRIES as RETRIES
from ..io import (
    CheckpointState,
    Storage,
    index_identity,
    normalize_prefix,
    open_local,
    relative_to,
)
from ..layout import Layout
from ..mesh import Mesh, default_mesh
from ..options import CheckpointOptions, check_options
from ..variable import Variable
from .core import CheckpointCore
from .restore import RestoreContext, replaced_since
from .state import update_state_file
from .status import CheckpointLoadStatus, InitializationOnlyStatus

__all__ = ["Checkpoint", "DTensorCheckpoint", "restore_from"]

_RESERVED = ("save_counter",)


class Checkpoint(Module):
    """Groups trackable objects, saving and restoring them (``tf.train.Checkpoint``).

    Args:
        root: The root object; its dependencies become the checkpoint's. A
            ``weakref.ref`` to it is accepted too: the checkpoint then holds the root
            only weakly (a dead root has no dependencies).
        **kwargs: Trackable objects (or nests of them) saved under these names.

    Raises:
        ValueError: A value is not trackable, a name is reserved, or ``root``
            tracks a different object under a keyword argument's name.

    Every method that touches files is collective over the checkpoint's
    communicator (``MPI.COMM_WORLD``; the mesh's for :class:`DTensorCheckpoint`).
    """

    _hpckpt_core: CheckpointCore
    _hpckpt_save_counter: Variable | None
    _hpckpt_root: Any

    def __init__(self, root: Any = None, **kwargs: Any) -> None:
        self._hpckpt_init(MPI.COMM_WORLD, None, root, kwargs)

    def _hpckpt_init(self, comm: MPI.Comm, mesh: Mesh | None, root: Any, kwargs: dict) -> None:
        object.__setattr__(self, "_hpckpt_core", CheckpointCore(self, comm, mesh))
        object.__setattr__(self, "_hpckpt_save_counter", None)
        object.__setattr__(self, "_hpckpt_root", None)
        if root is not None:
            target = root() if isinstance(root, weakref.ref) else wrap(root)
            if not is_trackable(target):
                raise ValueError(
                    f"Checkpoint was expecting root to be a trackable object (a Module, "
                    f"Variable or trackable container), got {target!r:.80}"
                )
            held = root if isinstance(root, weakref.ref) else target
            object.__setattr__(self, "_hpckpt_root", held)
            root = target
        for name, value in kwargs.items():
            if name in _RESERVED:
                raise ValueError(f"{name!r} is reserved by Checkpoint and cannot be a keyword")
            value = wrap(value)
            if not is_trackable(value):
                raise ValueError(
                    f"Checkpoint was expecting {name!r} to be a trackable object (a Module, "
                    f"Variable or a nest of them), got {value!r:.80}"
                )
            if root is not None:
                existing = dict(children_of(root)).get(name)
                if existing is not None and existing is not value:
                    raise ValueError(
                        f"Cannot create a Checkpoint with keyword argument {name!r}: the root "
                        f"already tracks a different object under that name"
                    )
            setattr(self, name, value)

    # -- graph --

    def _root(self) -> Any:
        """The root object (``None`` without one, or when a weakly held root is gone)."""
        root = self._hpckpt_root
        return root() if isinstance(root, weakref.ref) else root

    def _checkpoint_children(self) -> list[tuple[str, Any]]:
        own = super()._checkpoint_children()
        root = self._root()
        if root is None:
            return own
        names = {n for n, _ in own}
        return [(n, c) for n, c in children_of(root) if n not in names] + own

    def _defer_target(self, name: str) -> Trackable:
        root = self._root()
        if (
            isinstance(root, Trackable)
            and name not in self._hpckpt().children
            and name not in _RESERVED
        ):
            return root
        return self

    @property
    def save_counter(self) -> Variable:
        """An int64 scalar Variable counting saves; created on first access.

        Collective on first access (it may restore a pending value).
        """
        sc = self._hpckpt_save_counter
        if sc is None:
            core_mesh = self._hpckpt_core.mesh
            mesh = core_mesh if core_mesh is not None else default_mesh()
            sc = Variable(np.int64(0), layout=Layout.replicated(mesh, 0), name="save_counter")
            object.__setattr__(self, "_hpckpt_save_counter", sc)
            self._track_child("save_counter", sc)
        return sc

    # -- saving --

    @deferring
    def write(
        self, file_prefix: str | os.PathLike, options: CheckpointOptions | None = None
    ) -> str:
        """Write a checkpoint at ``file_prefix`` (no numbering, no state file).

        Returns:
            ``file_prefix``.

        Collective: call on all ranks.
        """
        options = check_options(options)
        prefix = normalize_prefix(file_prefix)
        self._hpckpt_core.write(prefix, options, Deadline(options.timeout, f"write of {prefix!r}"))
        return prefix

    @deferring
    def save(self, file_prefix: str | os.PathLike, options: CheckpointOptions | None = None) -> str:
        """Save a numbered checkpoint ``f"{file_prefix}-{n}"`` and update the state file.

        ``n`` is :attr:`save_counter` after it is incremented. On failure the counter
        is left as it was.

        Returns:
            The checkpoint's path.

        Collective: call on all ranks.
        """
        options = check_options(options)
        base = normalize_prefix(file_prefix)
        self._hpckpt_core.sync()  # the previous asynchronous save is complete
        sc = self.save_counter
        n = int(sc.local) + 1
        path = f"{base}-{n}"
        deadline = Deadline(options.timeout, f"save of {path!r}")
        directory = os.path.dirname(path) or "."

        def update_state(comm: MPI.Comm) -> None:
            # As TF: the state file lists only this checkpoint (it does not grow with
            # every save). Its time is also the last preserved timestamp, so that a
            # CheckpointManager created later never adopts (nor deletes) it.
            def make_state(_: CheckpointState | None) -> CheckpointState:
                now = time.time()
                rel = relative_to(directory, path)
                return CheckpointState([(rel, now)], rel, now)

            update_state_file(
                comm,
                directory,
                make_state,
                deadline,
                f"state file update for {path!r}",
                read_current=False,
            )

        def rollback() -> None:
            sc.local[...] = n - 1

        sc.local[...] = n
        try:
            self._hpckpt_core.write(path, options, deadline, after=update_state, on_error=rollback)
        except WriteCallbackError:
            raise  # the checkpoint is committed: it keeps its number
        except BaseException:
            rollback()
            raise
        return path

    # -- restoring --

    def restore(
        self, save_path: str | os.PathLike | None, options: CheckpointOptions | None = None
    ) -> CheckpointLoadStatus | InitializationOnlyStatus:
        """Restore a checkpoint made by :meth:`save` (it expects ``save_counter``).

        Values are assigned at once to existing objects; values of objects that
        do not exist yet are restored when they are attached (restore-on-create).
        ``None`` restores nothing and returns a status whose assertions fail.

        Raises:
            NotFoundError: No checkpoint at ``save_path``.
            CheckpointError: On every rank, if anything fails on any rank.

        Collective: call on all ranks.
        """
        if save_path is None:
            return InitializationOnlyStatus()
        self.save_counter  # noqa: B018 - created so that it is matched
        return self._restore(save_path, options)

    def read(
        self, save_path: str | os.PathLike, options: CheckpointOptions | None = None
    ) -> CheckpointLoadStatus:
        """Restore a checkpoint made by :meth:`write` (does not expect ``save_counter``).

        Collective: call on all ranks.
        """
        if save_path is None:
            raise ValueError("read() needs a checkpoint path, got None")
        return self._restore(save_path, options)

    @deferring
    def _restore(
        self,
        save_path: str | os.PathLike,
        options: CheckpointOptions | None,
        storage: Storage | None = None,
    ) -> CheckpointLoadStatus:
        options = check_options(options)
        prefix = normalize_prefix(save_path)
        self._hpckpt_core.sync()
        with gc_paused():
            return self._restore_paused(prefix, options, storage)

    def _restore_paused(
        self, prefix: str, options: CheckpointOptions, storage: Storage | None = None
    ) -> CheckpointLoadStatus:
        # A checkpoint replaced by write(P) while it is read (its old data file removed)
        # is read again: a healthy checkpoint is never reported damaged.
        comm = self._hpckpt_core.comm
        for _ in range(RETRIES + 1):
            identity = index_identity(prefix) if comm.Get_rank() == 0 else None
            tried: list[RestoreContext] = []
            try:
                return self._restore_once(prefix, options, identity, tried, storage)
            except (CorruptCheckpointError, NotFoundError) as e:
                if not replaced_since(comm, prefix, identity, e):
                    raise
                for ctx in tried:
                    ctx.abandoned = True
        raise CheckpointChangedError(
            f"checkpoint {prefix!r} was replaced while being restored, {RETRIES + 1} times "
            f"in a row; nothing is wrong with it: restore it again later"
        )

    def _restore_once(
        self,
        prefix: str,
        options: CheckpointOptions,
        identity: Any,
        tried: list[RestoreContext],
        storage: Storage | None = None,
    ) -> CheckpointLoadStatus:
        deadline = Deadline(options.timeout, f"restore of {prefix!r}")
        hdf5 = options.io == "hdf5"  # datasets are read through HDF5: check them in full
        core = self._hpckpt_core
        comm = core.comm
        if storage is None:
            storage = core.storage
            try:
                index = storage.read_index(comm, prefix, deadline, through_hdf5=hdf5)
            except NotFoundError:
                # not in the standard format: a local-tier checkpoint (multi-level)?
                local = open_local(comm, prefix, deadline)
                if local is None:
                    raise
                storage = local
                index = storage.read_index(comm, prefix, deadline, through_hdf5=hdf5)
        else:
            index = storage.read_index(comm, prefix, deadline, through_hdf5=hdf5)

        def check_graph() -> SavedGraph:
            if index.graph is None:
                raise CheckpointError(f"checkpoint {prefix!r} has no object graph")
            return parse_graph(index.graph, set(index.tensors))

        graph = _dist.run_agreed(comm, f"restore of {prefix!r}", check_graph, deadline)
        ctx = RestoreContext(comm, prefix, index, graph, options, storage, identity)
        tried.append(ctx)
        try:
            ctx.restore_subtree(0, self)
        except BaseException:
            ctx.expect_partial = True  # the error says it all; no warning on top
            raise
        return CheckpointLoadStatus(ctx, self)

    def sync(self) -> None:
        """Wait for everything in flight: an asynchronous save, and the removal of old files.

        Raises the save's error if it failed: the same :class:`CheckpointError` on
        every rank. When it returns, the last save is committed and files that
        retention or an overwrite made obsolete are gone.

        Collective: call on all ranks.
        """
        self._hpckpt_core.sync_all()

    def __copy__(self) -> Checkpoint:
        """A new checkpoint over the same communicator with the same objects. Local."""
        new = super().__copy__()
        core = self._hpckpt_core
        object.__setattr__(
            new, "_hpckpt_core", CheckpointCore(new, core.comm, core.mesh, core.storage)
        )
        return new  # type: ignore[return-value]

    def __deepcopy__(self, memo: dict[int, Any]) -> Checkpoint:
        """A new checkpoint over the same communicator (and mesh) with deep copies of
        its objects: new Variables with new buffers, on the same meshes. Local."""
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        core = self._hpckpt_core
        object.__setattr__(
            new, "_hpckpt_core", CheckpointCore(new, core.comm, core.mesh, core.storage)
        )
        for name, value in self.__dict__.items():
            if name != "_hpckpt_core":
                object.__setattr__(new, name, copy.deepcopy(value, memo))
        return new

    def __repr__(self) -> str:
        names = [n for n, _ in self._checkpoint_children()]
        return f"<hpckpt.{type(self).__name__} {names}>"


class DTensorCheckpoint(Checkpoint):
    """A :class:`Checkpoint` over a mesh's communicator.

    The counterpart of ``tf.experimental.dtensor.DTensorCheckpoint``.

    Args:
        mesh: The mesh; its communicator is the one every method is collective over,
            and ``save_counter`` is replicated on it.
        root: The root object.
        **kwargs: Trackable objects saved under these names.
    """

    def __init__(self, mesh: Mesh, root: Any = None, **kwargs: Any) -> None:
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be an hpckpt.Mesh, got {type(mesh).__name__}")
        self._hpckpt_init(mesh.comm, mesh, root, kwargs)


def restore_from(
    checkpoint: Checkpoint,
    save_path: str,
    storage: Storage,
    options: CheckpointOptions | None = None,
) -> CheckpointLoadStatus:
    """``checkpoint.restore(save_path)`` from ``storage`` (a local tier's checkpoint).

    Collective: call on all ranks.
    """
    checkpoint.save_counter  # noqa: B018 - created so that it is matched
    return checkpoint._restore(save_path, options, storage)
