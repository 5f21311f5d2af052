"""Restoring: matching a saved object graph against live objects, then reading values.

A :class:`RestoreContext` is one ``restore()`` call. It matches saved nodes to live
objects breadth-first, reads the values of the matched variables and Python
states (collectively, each rank its slice for the variable's *current* layout),
and leaves a :class:`~hpckpt.graph.PendingRestore` in live objects for saved
children that do not exist yet (restore-on-create).

Call order of a read (collective): every rank plans its requests (agreed); the
storage layer reads and verifies (agreed); the Python states' text is decoded
(agreed: bytes that are not UTF-8 are a damaged checkpoint); then, in place, the
variables already hold their values and the states are deserialized (agreed); with
``restore_in_place=False``, the states are deserialized first (agreed, and undone
on every rank if any rank failed), and only then are the variables assigned.

As in TensorFlow, the most recent ``restore()`` call wins: every restore gets an
increasing number (the same on every rank: restores are collective), each value
assigned records it, and a pending restore of an older call does not overwrite
a value assigned by a newer one.
"""

from __future__ import annotations

import itertools
import warnings
import weakref
from collections import deque
from typing import Any

import numpy as np
from mpi4py import MPI

from .. import _dist
from .._dist import Deadline
from .._gcpause import gc_paused
from .._interrupts import deferred
from ..dtypes import logical_name, storage_dtype
from ..errors import (
    CheckpointChangedError,
    CheckpointError,
    CheckpointValueError,
    CorruptCheckpointError,
    NotFoundError,
)
from ..graph import (
    PendingRestore,
    PythonState,
    RankState,
    SavedGraph,
    Trackable,
    children_of,
)
from ..io import SHARED_FILE, CheckpointIndex, ReadRequest, Storage, index_identity
from ..options import CheckpointOptions, io_options
from ..variable import Variable
from .progress import ProgressReport, reporter
from .save_plan import parse_rank_state_header, rank_state_header_bytes

__all__ = ["RestoreContext", "replaced_since"]

_UIDS = itertools.count(1)  # restore() calls, in order (collective: the same on every rank)


def _restore_uid(obj: Any) -> int:
    """The number of the restore that last assigned ``obj``'s value (0: none)."""
    if isinstance(obj, Trackable):
        return obj._hpckpt().restore_uid
    return int(getattr(obj, "_hpckpt_restore_uid", 0))


def _set_restore_uid(obj: Any, uid: int) -> None:
    if isinstance(obj, Trackable):
        obj._hpckpt().restore_uid = uid
    else:
        obj._hpckpt_restore_uid = uid


def replaced_since(comm: MPI.Comm, prefix: str, identity: Any, exc: BaseException) -> bool:
    """After an agreed failure: whether ``P``'s index was replaced since rank 0 noted its
    ``identity`` (rank 0 looks; agreed). Never after an interrupted rank (it is gone).

    Collective: call on all ranks.
    """
    if any(f.type in ("SystemExit", "KeyboardInterrupt") for f in getattr(exc, "failures", ())):
        return False
    changed = comm.Get_rank() == 0 and index_identity(prefix) != identity
    return bool(_dist.bcast_json(comm, changed, 0))


class RestoreContext:
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
        storage: Storage = SHARED_FILE,
        identity: Any = None,
    ) -> None:
        self.comm = comm
        self.identity = identity  # rank 0: the index file's identity when it was read
        self.abandoned = False  # a restore started again: its pending restores do nothing
        self.prefix = prefix
        self.index = index
        self.graph = graph
        self.options = options
        self.storage = storage
        self.matched: dict[int, Any] = {}  # node -> weakref (or object)
        self.matched_ids: dict[int, int] = {}  # id(object) -> node
        self.pending_slots: list[tuple[int, int, str, int]] = []
        self.consumed: set[str] = set()
        self.expect_partial = False
        self.uid = next(_UIDS)
        self.with_values = graph.with_values()

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
        if self.abandoned:
            return
        with deferred(), gc_paused():
            self._restore_subtree(node, obj)

    def restore_deferred(self, node: int, obj: Any) -> None:
        """:meth:`restore_subtree` for an object attached after ``restore()`` returned.

        If the checkpoint was replaced since ``restore()`` read it (``write(P)`` again),
        the data may be gone: that is reported as :class:`CheckpointChangedError`.

        Collective: call on all ranks.
        """
        try:
            self.restore_subtree(node, obj)
        except (CorruptCheckpointError, NotFoundError) as e:
            if replaced_since(self.comm, self.prefix, self.identity, e):
                raise CheckpointChangedError(
                    f"checkpoint {self.prefix!r} was replaced after restore() read it: the "
                    f"values of objects attached later are no longer there ({e})"
                ) from e
            raise

    def _restore_subtree(self, node: int, obj: Any) -> None:
        reads: list[tuple[int, Variable]] = []
        states: list[tuple[int, PythonState | RankState]] = []
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
            elif saved.kind == "rank_state":
                if isinstance(o, RankState):
                    states.append((n, o))
            if isinstance(o, Trackable) and not o._restorable():
                # a list changed in a way that renamed its items: matching its items by
                # name would put values on the wrong objects; they stay unrestored
                continue
            live_children = dict(children_of(o, check=False))
            for name, c in saved.children:
                child = live_children.get(name)
                if child is not None:
                    queue.append((c, child))
                elif isinstance(o, Trackable) and c in self.with_values:
                    o._defer_target(name)._defer(name, PendingRestore(c, self.restore_deferred))
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
        if slot is None:
            slot = owner._create_slot_for_restore(var, slot_name)
        if slot is not None:
            queue.append((slot_node, slot))
        else:
            owner._defer_slot(var, slot_name, PendingRestore(slot_node, self.restore_deferred))

    def _read(
        self,
        reads: list[tuple[int, Variable]],
        states: list[tuple[int, PythonState | RankState]],
    ) -> None:
        # The most recent restore() wins: skip what a newer restore already assigned.
        nodes = self.graph.nodes
        for n, o in [*reads, *states]:
            if _restore_uid(o) > self.uid:
                self.consumed.add(nodes[n].key)  # type: ignore[arg-type]
        reads = [(n, v) for n, v in reads if _restore_uid(v) <= self.uid]
        states = [(n, s) for n, s in states if _restore_uid(s) <= self.uid]
        if not reads and not states:
            return
        comm = self.comm
        what = f"restore of checkpoint {self.prefix!r}"
        deadline = Deadline(self.options.timeout, what)
        in_place = self.options.restore_in_place

        def plan() -> list[ReadRequest]:
            requests = [self._variable_request(nodes[n].key, v, in_place) for n, v in reads]
            for n, s in states:
                key = nodes[n].key
                assert key is not None
                e = self.index.tensors[key]
                if e.dtype != np.uint8 or len(e.shape) != 1:
                    raise CheckpointError(f"python state {key!r} is not a byte string")
                if isinstance(s, RankState):
                    requests.append(ReadRequest(e, (0,), (rank_state_header_bytes(self.index),)))
                else:
                    requests.append(ReadRequest(e, (0,), e.shape))
            return requests

        requests = _dist.run_agreed(comm, what, plan, deadline)
        total = sum(r.entry.nbytes for r in requests)
        report = reporter(self.options.progress, comm, what, total)
        arrays = self._storage_read(requests, deadline, report)
        if report is not None:
            report.finish()
        raws = self._state_values(states, requests[len(reads) :], arrays[len(reads) :], deadline)
        texts = self._decode_states(states, raws, deadline) if states else []
        if in_place:
            # the variables already hold what was read (directly in their buffers)
            self._assign(reads, requests, arrays)
            self._deserialize(states, texts, deadline, rollback=False)
        else:
            # all or nothing: the Python states first (undone on every rank if any rank
            # fails), then the variables
            self._deserialize(states, texts, deadline, rollback=True)
            self._assign(reads, requests, arrays)

    def _decode_states(
        self,
        states: list[tuple[int, PythonState | RankState]],
        raws: list[bytes | list[bytes]],
        deadline: Deadline,
    ) -> list[str | bytes]:
        """The value of each Python state (text, or bytes for a binary state; a RankState
        saved by another number of ranks goes through its ``reshard``); agreed (nothing
        is assigned if any rank fails)."""
        nodes = self.graph.nodes

        def text(key: str | None, raw: bytes) -> str:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorruptCheckpointError(
                    f"python state {key!r} in checkpoint {self.prefix!r} is not "
                    f"UTF-8 text ({e.reason} at byte {e.start})"
                ) from None

        def decode() -> list[str | bytes]:
            values: list[str | bytes] = []
            for (n, s), raw in zip(states, raws, strict=True):
                binary, key = nodes[n].binary, nodes[n].key
                if isinstance(raw, list):  # a RankState saved by another number of ranks
                    assert isinstance(s, RankState)
                    value = s.reshard([r if binary else text(key, r) for r in raw])
                    if not isinstance(value, (str, bytes)):
                        raise TypeError(
                            f"{type(s).__name__}.reshard() returned {type(value).__name__}, "
                            f"not str or bytes"
                        )
                    values.append(value)
                else:
                    values.append(raw if binary else text(key, raw))
            return values

        return _dist.run_agreed(
            self.comm, f"restore of checkpoint {self.prefix!r}", decode, deadline
        )

    def _deserialize(
        self,
        states: list[tuple[int, PythonState | RankState]],
        values: list[str | bytes],
        deadline: Deadline,
        *,
        rollback: bool,
    ) -> None:
        """Deserialize every state; agreed. With ``rollback``, a failure on any rank puts
        each state back as it was (its own ``serialize()`` taken before)."""
        if not states:
            return
        nodes = self.graph.nodes
        before: list[tuple[PythonState | RankState, Any, int]] = []
        exc: BaseException | None = None
        try:
            for (n, s), value in zip(states, values, strict=True):
                if rollback:
                    before.append((s, s.serialize(), _restore_uid(s)))
                s.deserialize(value)
                _set_restore_uid(s, self.uid)
                self.consumed.add(nodes[n].key)  # type: ignore[arg-type]
        except BaseException as e:
            exc = e
        try:
            _dist.agree(self.comm, f"restore of checkpoint {self.prefix!r}", exc, deadline)
        except BaseException:
            for n, _ in states:
                self.consumed.discard(nodes[n].key)  # type: ignore[arg-type]
            for s, old, uid in reversed(before):
                try:
                    s.deserialize(old)
                    _set_restore_uid(s, uid)
                except Exception:  # the state's own error was reported; keep undoing the rest
                    pass
            raise

    def _assign(
        self,
        reads: list[tuple[int, Variable]],
        requests: list[ReadRequest],
        arrays: list[np.ndarray],
    ) -> None:
        nodes = self.graph.nodes
        for (n, v), req, a in zip(reads, requests, arrays, strict=False):
            if a is not req.out:
                dest = v.local
                st = storage_dtype(dest.dtype)
                (dest if st == dest.dtype else dest.view(st))[...] = a
            _set_restore_uid(v, self.uid)
            self.consumed.add(nodes[n].key)  # type: ignore[arg-type]

    def _storage_read(
        self,
        requests: list[ReadRequest],
        deadline: Deadline,
        report: ProgressReport | None = None,
    ) -> list[np.ndarray]:
        return self.storage.read(
            self.comm,
            self.prefix,
            self.index,
            requests,
            options=io_options(self.options, report.local if report is not None else None),
            deadline=deadline,
        )

    def _variable_request(self, key: str | None, v: Variable, in_place: bool) -> ReadRequest:
        """This rank's read of ``v``'s slice (into ``v.local`` itself when ``in_place``)."""
        assert key is not None
        comm = self.comm
        e = self.index.tensors[key]
        if e.shape != v.shape:
            raise CheckpointValueError(
                f"shape mismatch for {key!r}: the checkpoint has {e.shape}, the "
                f"variable {v.name!r} has {v.shape}"
            )
        if e.dtype != storage_dtype(v.dtype) or e.logical_dtype != logical_name(v.dtype):
            saved = e.logical_dtype or e.dtype.name
            raise CheckpointValueError(
                f"dtype mismatch for {key!r}: the checkpoint has {saved}, the "
                f"variable {v.name!r} has {v.dtype}"
            )
        if v.comm.Get_size() != comm.Get_size():
            raise ValueError(
                f"variable {key!r} lives on {v.comm.Get_size()} ranks but the "
                f"checkpoint's communicator has {comm.Get_size()}"
            )
        if not v.local.flags.writeable:
            raise ValueError(f"variable {v.name!r} ({key!r}): its local array is read-only")
        out = v.local.view(e.dtype) if in_place else None
        lay = v.layout
        return ReadRequest(
            e,
            v.local_start,
            v.local.shape,
            out=out,
            layout=lay.spec() if lay is not None else None,
            mesh_rank=lay.mesh.rank if lay is not None else None,
        )

    def _state_values(
        self,
        states: list[tuple[int, PythonState | RankState]],
        requests: list[ReadRequest],
        arrays: list[np.ndarray],
        deadline: Deadline,
    ) -> list[bytes | list[bytes]]:
        """Each state's saved bytes; for a RankState, this rank's own (same number of
        ranks) or every saved rank's (a list: another number of ranks).

        Collective: call on all ranks (a second read for the RankStates' bodies).
        """
        out: list[bytes | list[bytes]] = [a.tobytes() for a in arrays]
        ranked = [i for i, (_, s) in enumerate(states) if isinstance(s, RankState)]
        if not ranked:
            return out
        size, rank = self.comm.Get_size(), self.comm.Get_rank()
        what = f"restore of checkpoint {self.prefix!r}"

        def plan() -> list[tuple[ReadRequest, np.ndarray]]:
            todo = []
            for i in ranked:
                e = requests[i].entry
                offsets = parse_rank_state_header(arrays[i], e.shape[0], e.key)
                if len(offsets) - 1 == size:
                    box = (int(offsets[rank]),), (int(offsets[rank + 1] - offsets[rank]),)
                else:
                    box = (int(offsets[0]),), (int(offsets[-1] - offsets[0]),)
                todo.append((ReadRequest(e, box[0], box[1]), offsets))
            return todo

        todo = _dist.run_agreed(self.comm, what, plan, deadline)
        bodies = self._storage_read([r for r, _ in todo], deadline)
        for i, (_, offsets), body in zip(ranked, todo, bodies, strict=True):
            if len(offsets) - 1 == size:
                out[i] = body.tobytes()
            else:
                rel = offsets - offsets[0]
                out[i] = [body[a:b].tobytes() for a, b in itertools.pairwise(rel.tolist())]
        return out

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
