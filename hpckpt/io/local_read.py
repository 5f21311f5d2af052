"""Restoring from the local tier: every slice read and verified on the node that holds it.

A local checkpoint's slices are spread over node-local files: a slice can only be
read on the node whose directory holds it (its writer's node for the own copy, the
next node for the partner copy). Every saved slice a restore needs is read whole
by its *reader* (the rank that wrote it, or for a partner copy the rank that
received it), its checksum computed while it arrives; the ranks agree (no
unverified byte leaves its reader); then the parts go point to point to the ranks
that need them (MPI datatypes, no packing), as in :mod:`.read`.

:class:`LocalTierStorage` is the :class:`~hpckpt.io.Storage` of one local
checkpoint. When a node's copy fails its checksums (or is unreadable), its read is
repeated from the node's partner copy, with a warning naming what was skipped; when
no intact copy is left, the restore raises :class:`CorruptCheckpointError`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..errors import CheckpointError, CorruptCheckpointError
from ..topology import NodeMap, node_map
from .checksum import checksum_function
from .index import CheckpointIndex
from .local_scan import LocalCandidate, scan_local
from .mpiio import Piece, posix_io
from .options import IOOptions
from .read import (
    ReadRequest,
    agree_requests,
    exchange_parts,
    rel_slices,
    rounds_with_scratch,
)
from .scratch import ScratchPool
from .slicing import Box, TargetList, Targets, box_intersection, target_grid, volume
from .verify import SliceCheck, chunk_listener

__all__ = ["LocalTierStorage", "open_local"]

_TAG = 0x3300


@dataclass
class _Owned:
    t: int  # request number
    i: int  # slice number
    box: Box
    node: int  # the node whose data it is
    offset: int  # in that node's file
    buffer: np.ndarray | None = None
    in_place: bool = False
    local_part: Box | None = None
    sends: list[tuple[int, Box]] = field(default_factory=list)


@dataclass
class _Plan:
    owned: list[_Owned] = field(default_factory=list)
    recvs: list[tuple[int, int, Box]] = field(default_factory=list)  # (request, owner, part)


class LocalTierStorage:
    """The storage of one local checkpoint found by :func:`scan_local` (restores only).

    Args:
        candidate: The checkpoint (complete, saved by a job with this job's nodes).
        nodes: This job's node map.
    """

    def __init__(self, candidate: LocalCandidate, nodes: NodeMap) -> None:
        if not candidate.complete:
            raise CheckpointError(
                f"local checkpoint {candidate.path!r} cannot be restored: "
                + "; ".join(candidate.notes)
            )
        self.candidate = candidate
        self.nodes = nodes
        self.sources = candidate.sources()
        self._warned: set[int] = set()

    # -- Storage --

    def write(self, comm: MPI.Comm, prefix: str, *args: Any, **kwargs: Any) -> int:
        """Not supported: a local checkpoint is saved by a ``CheckpointManager``."""
        raise CheckpointError(
            f"cannot write {prefix!r}: local checkpoints are saved by a CheckpointManager "
            "with a local tier"
        )

    def read_index(
        self, comm: MPI.Comm, prefix: str, deadline: Deadline, *, through_hdf5: bool = False
    ) -> CheckpointIndex:
        """The checkpoint's index (read and validated when the tier was listed).

        Collective: call on all ranks (it warns, on rank 0, of nodes read from their
        partner copy).
        """
        self._warn_sources(comm)
        return self.candidate.index.index

    def read(
        self,
        comm: MPI.Comm,
        prefix: str,
        index: CheckpointIndex,
        requests: Sequence[ReadRequest],
        *,
        options: IOOptions,
        deadline: Deadline,
    ) -> list[np.ndarray]:
        """Read each rank's requests from the node-local files; fall back to partner
        copies of damaged nodes.

        Collective: call on all ranks.
        """
        c = self.candidate
        what = f"restore of local checkpoint {c.path!r}"
        while True:
            bad: set[tuple[int, str]] = set()
            try:
                return self._read(comm, requests, options, deadline, what, bad)
            except CheckpointError as e:
                # agreed on every rank: share which copies were found damaged
                found = _dist.allgather_json(comm, sorted(bad), deadline)
                damaged = sorted({(int(n), str(k)) for lst in found for n, k in lst})
                if not damaged:
                    raise
                for node, copy in damaged:
                    if copy == "own" and c.partner[node] and (node, "partner") not in damaged:
                        self.sources[node] = "partner"
                        self._warn(
                            comm,
                            f"local checkpoint {c.name!r}: the copy of node {node} in "
                            f"{c.directory(node)!r} is damaged ({e}); restoring node {node} "
                            f"from its partner copy in "
                            f"{c.directory(self.nodes.partner_node(node))!r}",
                        )
                        continue
                    raise CorruptCheckpointError(
                        f"local checkpoint {c.path!r}: no intact copy of node {node}'s data "
                        f"(its {copy} copy is damaged)",
                        getattr(e, "failures", ()),
                    ) from e

    # -- internals --

    def _warn(self, comm: MPI.Comm, message: str) -> None:
        if comm.Get_rank() == 0:
            warnings.warn(message, stacklevel=5)

    def _warn_sources(self, comm: MPI.Comm) -> None:
        c = self.candidate
        for node, src in enumerate(self.sources):
            if src == "partner" and node not in self._warned:
                self._warned.add(node)
                self._warn(
                    comm,
                    f"local checkpoint {c.name!r}: the copy of node {node} is missing from "
                    f"{c.directory(node)!r}; restoring node {node} from its partner copy in "
                    f"{c.directory(self.nodes.partner_node(node))!r}",
                )

    def _reader_of(self) -> np.ndarray:
        """The rank that reads each writer rank's slices (itself, or its partner)."""
        nodes = self.nodes
        return np.asarray(
            [
                w if self.sources[nodes.node_of[w]] == "own" else nodes.partner_rank(w)
                for w in range(nodes.nprocs)
            ]
            + [-1],  # index -1: empty slices have no reader
            dtype=np.int64,
        )

    def _read(
        self,
        comm: MPI.Comm,
        requests: Sequence[ReadRequest],
        options: IOOptions,
        deadline: Deadline,
        what: str,
        bad: set[tuple[int, str]],
    ) -> list[np.ndarray]:
        rank = comm.Get_rank()
        use_grid, boxes = agree_requests(comm, requests, deadline, what)
        exc: BaseException | None = None
        arrays: list[np.ndarray] = []
        plans: list[_Plan] = []
        try:
            _faults.point("read_data", rank)
            arrays = [r.destination() for r in requests]
            plans = self._plan(requests, boxes, use_grid, rank)
        except BaseException as e:
            exc = e
        _dist.agree(comm, what, exc, deadline)
        fn = checksum_function(self.candidate.index.index.checksum)
        for n, group, scratch in rounds_with_scratch(requests):
            self._round(
                comm, requests, arrays, plans, group, fn, options, deadline, what, n, bad, scratch
            )
        return arrays

    def _plan(
        self,
        requests: Sequence[ReadRequest],
        boxes: dict[int, list[Box]],
        use_grid: bool,
        rank: int,
    ) -> list[_Plan]:
        reader_of = self._reader_of()
        node_of = np.asarray(self.nodes.node_of, dtype=np.int64)
        li = self.candidate.index
        plans = []
        for k, req in enumerate(requests):
            plan = _Plan()
            plans.append(plan)
            e = req.entry
            loc = li.locations[e.key]
            readers = reader_of[loc.ranks]
            mine: Box = (tuple(req.start), tuple(req.shape))
            empty = bool(req.shape) and not volume(req.shape)
            targets: Targets = (
                target_grid(e.shape, req.layout)
                if use_grid and req.layout is not None
                else TargetList(e.shape, boxes[k])
            )
            if not empty:
                for i in e.slicing.query(mine):
                    owner = int(readers[i])
                    if owner != rank:
                        part = box_intersection(e.slicing.box(i), mine)
                        assert part is not None
                        plan.recvs.append((k, owner, part))
            for i in np.flatnonzero(readers == rank).tolist():
                sbox = e.slicing.box(i)
                if sbox[1] and not volume(sbox[1]):
                    continue
                o = _Owned(k, i, sbox, int(node_of[loc.ranks[i]]), int(loc.offsets[i]))
                o.local_part = None if empty else box_intersection(sbox, mine)
                for cbox, ranks in targets.query(sbox):
                    cpart = box_intersection(sbox, cbox)
                    if cpart is not None:
                        o.sends.extend((r, cpart) for r in ranks if r != rank)
                plan.owned.append(o)
        return plans

    def _file(self, node: int) -> tuple[str, str]:
        """``(path, copy)`` of the file this rank reads node ``node``'s slices from."""
        c = self.candidate
        copy = self.sources[node]
        where = node if copy == "own" else self.nodes.partner_node(node)
        return os.path.join(c.directory(where), c.index.data_file(node, copy)), copy

    def _round(
        self,
        comm: MPI.Comm,
        requests: Sequence[ReadRequest],
        arrays: list[np.ndarray],
        plans: list[_Plan],
        group: list[int],
        fn: Callable[..., int],
        options: IOOptions,
        deadline: Deadline,
        what: str,
        number: int,
        bad: set[tuple[int, str]],
        scratch: ScratchPool,
    ) -> None:
        exc: BaseException | None = None
        owned = [o for k in group for o in plans[k].owned]
        by_file: dict[int, list[tuple[Piece, SliceCheck | None]]] = {}
        try:
            for o in owned:
                req = requests[o.t]
                dest = arrays[o.t]
                rel = rel_slices(o.box, req.start)
                view = dest[rel] if rel else dest
                if o.box == o.local_part and view.flags.c_contiguous:
                    o.buffer, o.in_place = view, True  # straight into the variable
                else:
                    o.buffer = scratch.take(o.box[1], req.entry.dtype)
                check = (
                    SliceCheck(req.entry, o.i, o.buffer, fn) if options.verify_checksums else None
                )
                piece = Piece(o.offset, o.box[1], (0,) * len(o.box[1]), o.buffer)
                by_file.setdefault(o.node, []).append((piece, check))
        except BaseException as ex:
            exc, by_file = ex, {}
        for node, items in sorted(by_file.items()):
            path, copy = self._file(node)
            checks = {id(p.array): c for p, c in items if c is not None}

            try:
                posix_io(path, [p for p, _ in items], write=False, listener=chunk_listener(checks))
                for c in checks.values():
                    c.finish()
            except CorruptCheckpointError as e:
                bad.add((node, copy))
                exc = exc or CorruptCheckpointError(f"{path!r} ({copy} copy of node {node}): {e}")
            except OSError as e:
                bad.add((node, copy))
                exc = exc or CorruptCheckpointError(f"cannot read {path!r}: {e}")
        _dist.agree(comm, what, exc, deadline)  # no unverified byte leaves its reader
        for o in owned:
            if not o.in_place and o.local_part is not None and o.buffer is not None:
                req = requests[o.t]
                drel = rel_slices(o.local_part, req.start)
                srel = rel_slices(o.local_part, o.box[0])
                if drel:
                    arrays[o.t][drel] = o.buffer[srel]
                else:
                    arrays[o.t][...] = o.buffer
        exchange_parts(comm, requests, arrays, plans, owned, group, deadline, what, number, _TAG)


def open_local(
    comm: MPI.Comm, prefix: str, deadline: Deadline, nodes: NodeMap | None = None
) -> LocalTierStorage | None:
    """The storage of local checkpoint ``prefix`` (``PATTERN/NAME``), or ``None`` when
    no node holds its marker.

    Raises:
        CheckpointError: On every rank, when it exists but cannot be restored by this
            job (incomplete, or saved by another node layout).

    Collective: call on all ranks.
    """
    pattern, name = os.path.split(prefix)
    if not name:
        return None
    nodes = nodes if nodes is not None else node_map(comm, deadline)
    found = scan_local(comm, nodes, pattern or ".", deadline, names={name})
    if not found:
        return None
    return LocalTierStorage(found[0], nodes)
