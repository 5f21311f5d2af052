"""Checkpoint, DTensorCheckpoint and the load status of a restore.

A save walks the live object graph (:mod:`hpckpt.graph`), plans each rank's
slices, and hands them to the io layer's commit protocol. A restore reads the
index, matches the saved graph against live objects, reads each matched
variable's slice for its *current* layout, and queues restores for objects that
do not exist yet (restore-on-create).
"""

from __future__ import annotations

import os
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from mpi4py import MPI

from . import _dist, _faults, io
from ._async import AsyncWriter, async_supported
from ._dist import Deadline
from ._gcpause import gc_paused
from .errors import CheckpointError
from .graph import (
    Module,
    PythonState,
    SavedGraph,
    Trackable,
    _PendingRestore,
    build_save_graph,
    children_of,
    is_trackable,
    parse_graph,
    wrap,
)
from .index import CheckpointIndex
from .layout import UNSHARDED, Layout, block_range
from .mesh import Mesh, default_mesh
from .options import CheckpointOptions
from .statefile import CheckpointState, read_state, relative_to, write_state
from .variable import Variable

__all__ = ["Checkpoint", "CheckpointLoadStatus", "DTensorCheckpoint", "InitializationOnlyStatus"]

_RESERVED = ("save_counter",)


REPLICA_SPLIT_BYTES = 1 << 20


def _write_pieces(v: Variable, n: int) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """This rank's share of ``v`` (the ``n``-th variable saved) to write.

    Each element is written once. A shard held by several replicas is split by
    rows among them when it has at least ``REPLICA_SPLIT_BYTES``; a smaller one is
    written whole by one replica, chosen round-robin by ``n``, so that many small
    replicated tensors spread over the ranks without multiplying their slices.
    """
    a = v.local
    if a.size == 0:
        return []
    start = v.local_start
    index, count = v.layout.replica_position()
    if count == 1:
        return [(start, a)]
    if a.ndim == 0 or a.nbytes < REPLICA_SPLIT_BYTES:
        return [(start, a)] if index == n % count else []
    r0, r1 = block_range(a.shape[0], count, index)
    if r1 <= r0:
        return []
    return [((start[0] + r0, *start[1:]), a[r0:r1])]


def _replicated_layout(comm: MPI.Comm) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    return ((UNSHARDED,), ("x",), (comm.Get_size(),))


class Checkpoint(Module):
    """Groups trackable objects, saving and restoring them (``tf.train.Checkpoint``).

    Args:
        root: The root object; its dependencies become the checkpoint's.
        **kwargs: Trackable objects (or nests of them) saved under these names.

    Raises:
        ValueError: A value is not trackable, a name is reserved, or ``root``
            tracks a different object under a keyword argument's name.

    Every method that touches files is collective over the checkpoint's
    communicator (``MPI.COMM_WORLD``; the mesh's for :class:`DTensorCheckpoint`).
    """

    def __init__(self, root: Any = None, **kwargs: Any) -> None:
        self._hpckpt_init(MPI.COMM_WORLD, None, root, kwargs)

    def _hpckpt_init(self, comm: MPI.Comm, mesh: Mesh | None, root: Any, kwargs: dict) -> None:
        object.__setattr__(self, "_hpckpt_comm", comm)
        object.__setattr__(self, "_hpckpt_mesh", mesh)
        object.__setattr__(self, "_hpckpt_save_counter", None)
        object.__setattr__(self, "_hpckpt_root", None)
        object.__setattr__(self, "_hpckpt_async", None)
        if root is not None:
            root = wrap(root)
            if not is_trackable(root):
                raise ValueError(
                    f"Checkpoint was expecting root to be a trackable object (a Module, "
                    f"Variable or trackable container), got {root!r:.80}"
                )
            object.__setattr__(self, "_hpckpt_root", root)
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

    def _checkpoint_children(self) -> list[tuple[str, Any]]:
        own = super()._checkpoint_children()
        if self._hpckpt_root is None:
            return own
        names = {n for n, _ in own}
        return [(n, c) for n, c in children_of(self._hpckpt_root) if n not in names] + own

    def _defer_target(self, name: str) -> Trackable:
        root = self._hpckpt_root
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
            mesh = self._hpckpt_mesh if self._hpckpt_mesh is not None else default_mesh()
            sc = Variable(np.int64(0), layout=Layout.replicated(mesh, 0), name="save_counter")
            object.__setattr__(self, "_hpckpt_save_counter", sc)
            self._track_child("save_counter", sc)
        return sc

    # -- saving --

    def _options(self, options: CheckpointOptions | None) -> CheckpointOptions:
        if options is None:
            return CheckpointOptions()
        if not isinstance(options, CheckpointOptions):
            raise TypeError(f"options must be a CheckpointOptions, got {type(options).__name__}")
        return options

    def write(
        self, file_prefix: str | os.PathLike, options: CheckpointOptions | None = None
    ) -> str:
        """Write a checkpoint at ``file_prefix`` (no numbering, no state file).

        Returns:
            ``file_prefix``.

        Collective: call on all ranks.
        """
        options = self._options(options)
        prefix = io.normalize_prefix(file_prefix)
        self._write(prefix, options, Deadline(options.timeout, f"write of {prefix!r}"))
        return prefix

    def save(self, file_prefix: str | os.PathLike, options: CheckpointOptions | None = None) -> str:
        """Save a numbered checkpoint ``f"{file_prefix}-{n}"`` and update the state file.

        ``n`` is :attr:`save_counter` after it is incremented. On failure the counter
        is left as it was.

        Returns:
            The checkpoint's path.

        Collective: call on all ranks.
        """
        options = self._options(options)
        base = io.normalize_prefix(file_prefix)
        self.sync()
        sc = self.save_counter
        n = int(sc.local) + 1
        path = f"{base}-{n}"
        deadline = Deadline(options.timeout, f"save of {path!r}")
        directory = os.path.dirname(path) or "."

        def update_state(comm: MPI.Comm) -> None:
            def rank0() -> None:
                if comm.Get_rank() != 0:
                    return
                _faults.point("after_commit", 0)
                state = read_state(directory) or CheckpointState()
                rel = relative_to(directory, path)
                kept = [(p, t) for p, t in state.checkpoints if p != rel]
                state.checkpoints = [*kept, (rel, time.time())]
                state.latest = rel
                write_state(directory, state)
                _faults.point("state", 0)

            _dist.run_agreed(comm, f"state file update for {path!r}", rank0, deadline)

        def rollback() -> None:
            sc.local[...] = n - 1

        sc.local[...] = n
        try:
            self._write(path, options, deadline, after=update_state, on_error=rollback)
        except BaseException:
            rollback()
            raise
        return path

    def _async_writer(self) -> AsyncWriter:
        w = self._hpckpt_async
        if w is None:
            w = AsyncWriter(self._hpckpt_comm)
            object.__setattr__(self, "_hpckpt_async", w)
        return w

    def _write(
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
        retention); ``on_error`` when the write fails in the background; and
        ``finally_`` at the end in every case. Collective.
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
        comm = self._hpckpt_comm
        what = f"write of checkpoint {prefix!r}"

        def plan() -> tuple[Any, list[io.SaveTensor], list[str]]:
            _faults.point("plan", comm.Get_rank())
            g = build_save_graph(self)
            tensors = []
            for n, (key, v) in enumerate(g.variables):
                if v.layout.mesh.size != comm.Get_size():
                    raise ValueError(
                        f"variable {key!r} lives on a mesh of {v.layout.mesh.size} ranks but "
                        f"the checkpoint's communicator has {comm.Get_size()}"
                    )
                tensors.append(
                    io.SaveTensor(key, v.dtype, v.shape, v.layout.index_key(), _write_pieces(v, n))
                )
            strings = []
            for key, s in g.python_states:
                value = s.serialize()
                if not isinstance(value, str):
                    raise TypeError(
                        f"{type(s).__name__}.serialize() for {key!r} returned "
                        f"{type(value).__name__}, not str"
                    )
                strings.append(value)
            return g, tensors, strings

        g, tensors, strings = _dist.run_agreed(comm, what, plan, deadline)
        # Python state is saved from rank 0; every rank must have the same objects.
        keys = [k for k, _ in g.python_states]
        root = _dist.bcast_json(comm, [keys, strings], 0, deadline)

        def same_states() -> None:
            if root[0] != keys:
                raise CheckpointError(
                    f"{what}: this rank's PythonState objects {keys[:5]} differ from rank 0's "
                    f"{root[0][:5]}"
                )

        _dist.run_agreed(comm, what, same_states, deadline)
        strings = root[1]
        for (key, _), text in zip(g.python_states, strings, strict=True):
            data = np.frombuffer(text.encode(), dtype=np.uint8)
            pieces = [((0,), data)] if comm.Get_rank() == 0 else []
            tensors.append(
                io.SaveTensor(key, np.dtype(np.uint8), data.shape, _replicated_layout(comm), pieces)
            )
        tensors.sort(key=lambda t: t.key)
        graph = g.to_json()

        if options.enable_async:
            # Snapshot into host memory when every rank can, within the budget.
            need = sum(a.nbytes for t in tensors for _, a in t.pieces)
            budget = options.async_memory_budget
            fits = async_supported() and (budget is None or need <= budget)
            if comm.allreduce(fits, op=MPI.LAND):
                staging = self._async_writer().staging  # the previous write has finished
                for t in tensors:
                    t.pieces = [
                        (start, staging.copy(t.key, i, a)) for i, (start, a) in enumerate(t.pieces)
                    ]
                staging.commit()

                def job(c: MPI.Comm) -> None:
                    try:
                        with gc_paused():
                            io.write_checkpoint(
                                c, prefix, tensors, graph=graph, options=options, deadline=deadline
                            )
                        if after is not None:
                            after(c)
                    finally:
                        if finally_ is not None:
                            finally_()

                self._async_writer().submit(job, on_error)
                return True
            if self._hpckpt_async is not None:
                self._hpckpt_async.staging.clear()  # over the budget: hold no snapshot
        io.write_checkpoint(comm, prefix, tensors, graph=graph, options=options, deadline=deadline)
        if after is not None:
            after(comm)
        return False

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

    def _restore(
        self, save_path: str | os.PathLike, options: CheckpointOptions | None
    ) -> CheckpointLoadStatus:
        options = self._options(options)
        prefix = io.normalize_prefix(save_path)
        self.sync()
        with gc_paused():
            return self._restore_paused(prefix, options)

    def _restore_paused(self, prefix: str, options: CheckpointOptions) -> CheckpointLoadStatus:
        deadline = Deadline(options.timeout, f"restore of {prefix!r}")
        comm = self._hpckpt_comm
        index = io.read_index(comm, prefix, deadline)

        def check_graph() -> SavedGraph:
            if index.graph is None:
                raise CheckpointError(f"checkpoint {prefix!r} has no object graph")
            return parse_graph(index.graph, set(index.tensors))

        graph = _dist.run_agreed(comm, f"restore of {prefix!r}", check_graph, deadline)
        ctx = _RestoreContext(comm, prefix, index, graph, options)
        try:
            ctx.restore_subtree(0, self)
        except BaseException:
            ctx.expect_partial = True  # the error says it all; no warning on top
            raise
        return CheckpointLoadStatus(ctx, self)

    def sync(self) -> None:
        """Wait for a running asynchronous save; raise its error if it failed.

        The error is the same :class:`CheckpointError` on every rank. A no-op when
        no asynchronous save is running.

        Collective: call on all ranks.
        """
        w = self._hpckpt_async
        if w is not None:
            w.wait()

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


class _RestoreContext:
    """One restore: the saved graph, what has been matched, and pending restores.

    Holds weak references to live objects so that pending restores (queued in
    live objects) keep it alive exactly as long as something may still match.
    """

    def __init__(
        self,
        comm: MPI.Comm,
        prefix: str,
        index: CheckpointIndex,
        graph: SavedGraph,
        options: CheckpointOptions,
    ) -> None:
        self.comm = comm
        self.prefix = prefix
        self.index = index
        self.graph = graph
        self.options = options
        self.matched: dict[int, Any] = {}  # node -> weakref (or object)
        self.matched_ids: dict[int, int] = {}  # id(object) -> node
        self.pending_slots: list[tuple[int, int, str, int]] = []
        self.consumed: set[str] = set()
        self.expect_partial = False

    def _ref(self, obj: Any) -> Any:
        try:
            return weakref.ref(obj)
        except TypeError:
            return lambda: obj

    def live(self, node: int) -> Any:
        r = self.matched.get(node)
        return None if r is None else r()

    def is_matched(self, obj: Any) -> bool:
        n = self.matched_ids.get(id(obj))
        return n is not None and self.live(n) is obj

    def restore_subtree(self, node: int, obj: Any) -> None:
        """Match ``obj`` to saved ``node`` and restore it and its dependencies.

        Collective: call on all ranks (it reads the checkpoint).
        """
        with gc_paused():
            self._restore_subtree(node, obj)

    def _restore_subtree(self, node: int, obj: Any) -> None:
        reads: list[tuple[int, Variable]] = []
        states: list[tuple[int, PythonState]] = []
        queue: deque[tuple[int, Any]] = deque([(node, obj)])
        nodes = self.graph.nodes
        while queue:
            n, o = queue.popleft()
            if self.live(n) is o:
                continue
            self.matched[n] = self._ref(o)
            self.matched_ids[id(o)] = n
            saved = nodes[n]
            if saved.kind == "variable":
                if isinstance(o, Variable):
                    reads.append((n, o))
            elif saved.kind == "python_state":
                if isinstance(o, PythonState):
                    states.append((n, o))
            live_children = dict(children_of(o))
            for name, c in saved.children:
                child = live_children.get(name)
                if child is not None:
                    queue.append((c, child))
                elif isinstance(o, Trackable):
                    target = o._defer_target(name) if isinstance(o, Checkpoint) else o
                    target._defer(name, _PendingRestore(c, self.restore_subtree))
            for v, slot_name, s in saved.slots:
                self._match_slot(n, o, v, slot_name, s, queue)
            for p in [p for p in self.pending_slots if p[1] == n]:
                owner = self.live(p[0])
                if owner is not None:
                    self.pending_slots.remove(p)
                    self._match_slot(p[0], owner, p[1], p[2], p[3], queue)
        self._read(reads, states)

    def _match_slot(
        self,
        owner_node: int,
        owner: Any,
        var_node: int,
        slot_name: str,
        slot_node: int,
        queue: deque,
    ) -> None:
        if not isinstance(owner, Trackable):
            return
        var = self.live(var_node)
        if var is None:
            self.pending_slots.append((owner_node, var_node, slot_name, slot_node))
            return
        slot = owner._get_slot(var, slot_name)
        if slot is not None:
            queue.append((slot_node, slot))
        else:
            owner._defer_slot(var, slot_name, _PendingRestore(slot_node, self.restore_subtree))

    def _read(
        self, reads: list[tuple[int, Variable]], states: list[tuple[int, PythonState]]
    ) -> None:
        if not reads and not states:
            return
        comm = self.comm
        what = f"restore of checkpoint {self.prefix!r}"
        deadline = Deadline(self.options.timeout, what)
        nodes = self.graph.nodes

        def plan() -> list[io.ReadRequest]:
            requests = []
            for n, v in reads:
                key = nodes[n].key
                assert key is not None
                e = self.index.tensors[key]
                if e.shape != v.shape:
                    raise CheckpointError(
                        f"shape mismatch for {key!r}: the checkpoint has {e.shape}, the "
                        f"variable {v.name!r} has {v.shape}"
                    )
                if e.dtype != v.dtype:
                    raise CheckpointError(
                        f"dtype mismatch for {key!r}: the checkpoint has {e.dtype}, the "
                        f"variable {v.name!r} has {v.dtype}"
                    )
                if v.layout.mesh.size != comm.Get_size():
                    raise ValueError(
                        f"variable {key!r} lives on a mesh of {v.layout.mesh.size} ranks but "
                        f"the checkpoint's communicator has {comm.Get_size()}"
                    )
                requests.append(
                    io.ReadRequest(
                        e,
                        v.local_start,
                        v.local.shape,
                        out=v.local if self.options.restore_in_place else None,
                    )
                )
            for n, _ in states:
                key = nodes[n].key
                assert key is not None
                e = self.index.tensors[key]
                if e.dtype != np.uint8 or len(e.shape) != 1:
                    raise CheckpointError(f"python state {key!r} is not a byte string")
                requests.append(io.ReadRequest(e, (0,), e.shape))
            return requests

        requests = _dist.run_agreed(comm, what, plan, deadline)
        arrays = io.read_tensors(
            comm, self.prefix, self.index, requests, options=self.options, deadline=deadline
        )
        for (n, v), a in zip(reads, arrays, strict=False):
            if a is not v.local:
                v.local[...] = a
            self.consumed.add(nodes[n].key)  # type: ignore[arg-type]

        def apply_states() -> None:
            for (n, s), a in zip(states, arrays[len(reads) :], strict=True):
                s.deserialize(a.tobytes().decode())
                self.consumed.add(nodes[n].key)  # type: ignore[arg-type]

        if states:
            _dist.run_agreed(comm, what, apply_states, deadline)

    def unmatched_keys(self) -> list[str]:
        return sorted(
            n.key
            for i, n in enumerate(self.graph.nodes)
            if n.key is not None and n.key not in self.consumed
        )

    def __del__(self) -> None:
        try:
            if self.expect_partial or self.comm.Get_rank() != 0:
                return
            missing = self.unmatched_keys()
            if missing:
                shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
                warnings.warn(
                    f"{len(missing)} value(s) in checkpoint {self.prefix!r} were never restored "
                    f"(no matching object was created): {shown}. Call expect_partial() on the "
                    "load status to silence this warning.",
                    stacklevel=1,
                )
        except Exception:
            pass


class CheckpointLoadStatus:
    """The status of a restore; its assertions check how much was matched."""

    def __init__(self, ctx: _RestoreContext, root: Checkpoint) -> None:
        self._ctx = ctx
        self._root = root

    def _live_unmatched(self) -> list[str]:
        """Paths of live objects holding values (variables, Python state) not matched.

        As in TF, containers and modules without values of their own are not counted.
        """
        g = build_save_graph(self._root)
        return [
            node.path
            for node in g.nodes
            if node.key is not None and not self._ctx.is_matched(node.obj)
        ]

    def assert_consumed(self) -> CheckpointLoadStatus:
        """Assert that every checkpointed value was restored and every live object matched.

        Raises:
            AssertionError: Something is unmatched, in either direction.
        """
        missing = self._ctx.unmatched_keys()
        if missing:
            raise AssertionError(
                f"unresolved values in checkpoint {self._ctx.prefix!r}: {len(missing)} not "
                f"restored: {missing[:10]}"
            )
        live = self._live_unmatched()
        if live:
            raise AssertionError(
                f"objects with no value in checkpoint {self._ctx.prefix!r}: {live[:10]}"
            )
        return self

    def assert_existing_objects_matched(self) -> CheckpointLoadStatus:
        """Assert that every existing object in the graph was matched to the checkpoint.

        Raises:
            AssertionError: An existing object has no value in the checkpoint.
        """
        live = self._live_unmatched()
        if live:
            raise AssertionError(
                f"objects with no value in checkpoint {self._ctx.prefix!r}: {live[:10]}"
            )
        return self

    def assert_nontrivial_match(self) -> CheckpointLoadStatus:
        """Assert that something besides the root and ``save_counter`` was matched.

        Raises:
            AssertionError: Nothing else was matched.
        """
        sc = self._root._hpckpt_save_counter
        for n, ref in self._ctx.matched.items():
            o = ref()
            if n != 0 and o is not None and o is not sc:
                return self
        raise AssertionError(
            f"nothing except the root and save_counter was matched in checkpoint "
            f"{self._ctx.prefix!r}"
        )

    def expect_partial(self) -> CheckpointLoadStatus:
        """Silence the warning about values that were never restored."""
        self._ctx.expect_partial = True
        return self

    def run_restore_ops(self, session: Any = None) -> None:
        """No-op (values are restored eagerly); kept for compatibility."""

    def initialize_or_restore(self, session: Any = None) -> None:
        """No-op (values are restored eagerly); kept for compatibility."""


class InitializationOnlyStatus:
    """The status of ``restore(None)``: nothing was restored; assertions fail."""

    def _fail(self) -> None:
        raise AssertionError("no checkpoint was given (save_path=None): nothing was restored")

    def assert_consumed(self) -> InitializationOnlyStatus:
        self._fail()
        return self

    def assert_existing_objects_matched(self) -> InitializationOnlyStatus:
        self._fail()
        return self

    def assert_nontrivial_match(self) -> InitializationOnlyStatus:
        self._fail()
        return self

    def expect_partial(self) -> InitializationOnlyStatus:
        return self

    def run_restore_ops(self, session: Any = None) -> None:
        """No-op."""

    def initialize_or_restore(self, session: Any = None) -> None:
        """No-op: variables already hold their initial values."""
