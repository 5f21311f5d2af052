"""Reading a checkpoint collectively: the index, then each rank's new slices.

Call order (both functions are collective):

* :func:`read_index`: every rank names the same path (one reduction); rank 0 reads
  the index file (bounded, regular files only) and
  parses and validates it, and compares the data file's structure checksum (when the
  index has one and the restore reads raw bytes); the outcome is agreed; the validated
  bytes are broadcast and the other ranks parse them on trust; unless the structure
  was found unchanged, up to ``VALIDATORS`` ranks check a share each of the data
  file's HDF5 structure; agreed.
* :func:`read_tensors`: every rank plans (agreed: all ranks restore the same tensors
  with the same layouts); then, round by round (groups of tensors of at most
  ``ROUND_BYTES`` that may need scratch; tensors restored on the layout they were
  saved with need none, so such a restart is one round): every saved slice that
  some rank needs is read whole by exactly one *owner* rank, straight into its own
  variable when it lies inside it, else into a scratch buffer; its checksum is
  computed while it arrives (fused, in cache-sized chunks); the outcome is agreed, so
  no unverified byte leaves its reader; then the owners send the parts other ranks
  need, point to point, from buffer to buffer (MPI datatypes, no packing); agreed.

So every byte a restore hands over was checked against the checksum computed when it
was saved, whatever the change of layout, mesh or rank count, and no byte of the
file is read twice (replicas and resharded restores read once and share over MPI).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..errors import CheckpointError, CorruptCheckpointError
from ..layout import LayoutSpec
from ..variable import aligned_empty
from . import hdf5, phdf5
from .checksum import checksum_function
from .datatypes import message_specs
from .index import CheckpointIndex, TensorEntry
from .index_parse import parse_index
from .load import read_index_bytes
from .mpiio import Piece
from .options import IOOptions
from .paths import data_file_path, index_path
from .save_tensor import layout_text
from .scratch import ScratchPool
from .slicing import (
    Box,
    DerivedSlicing,
    Slicing,
    TargetList,
    Targets,
    box_intersection,
    owner_of,
    target_grid,
    volume,
)
from .transfer import ProgressCounter, move_pieces
from .verify import SliceCheck, chunk_listener

__all__ = [
    "ROUND_BYTES",
    "VALIDATORS",
    "ReadRequest",
    "exchange_parts",
    "read_index",
    "read_rounds",
    "read_tensors",
    "rel_slices",
    "rounds_with_scratch",
    "request_structure_hash",
]

VALIDATORS = 8  # ranks that share the structural check of a data file
ROUND_BYTES = 256 << 20  # tensors per exchange round, by global bytes that may need scratch
_TAG = 0x2000


@dataclass(frozen=True)
class ReadRequest:
    """This rank's new slice of a saved tensor.

    Attributes:
        entry: The saved tensor.
        start: The slice's first element in the global array.
        shape: The slice's shape.
        out: Where to read it: a writable array of ``shape`` and the entry's dtype,
            of any strides (a variable's own shard, or the caller's array it
            aliases: a restore needs no second buffer), or ``None`` for a new array.
        layout: The layout every rank's slice derives from (the same on every rank),
            or ``None`` when each rank has its own box (the boxes are gathered).
        mesh_rank: This rank's rank in ``layout``'s mesh (it must be its rank in the
            checkpoint's communicator for ``layout`` to be used; boxes otherwise).
    """

    entry: TensorEntry
    start: tuple[int, ...]
    shape: tuple[int, ...]
    out: np.ndarray | None = field(default=None, compare=False, repr=False)
    layout: LayoutSpec | None = None
    mesh_rank: int | None = None

    def destination(self) -> np.ndarray:
        """``out`` if it fits, else a new array."""
        o = self.out
        if (
            o is not None
            and o.shape == self.shape
            and o.dtype == self.entry.dtype
            and o.flags.writeable
        ):
            return o
        return aligned_empty(self.shape, self.entry.dtype)


def read_index(
    comm: MPI.Comm, prefix: str, deadline: Deadline, *, through_hdf5: bool = False
) -> CheckpointIndex:
    """Read, validate and broadcast the index of ``prefix`` (with its data file's structure).

    The data file's HDF5 structure is checked dataset by dataset, shared among up to
    ``VALIDATORS`` ranks, unless the restore reads raw bytes at the index's offsets
    (not ``through_hdf5``) and rank 0 finds the file's non-raw bytes unchanged since the
    save (the index's structure checksum, :func:`.hdf5.structure_unchanged`).

    Raises:
        NotFoundError: No committed checkpoint at ``prefix``, or its data file is gone.
        CorruptCheckpointError: The index or the data file is damaged or hostile.

    Collective: call on all ranks.
    """
    what = f"read of checkpoint {prefix!r}"
    _dist.agree_same_path(comm, prefix, deadline)  # before any rank opens a file
    rank, size = comm.Get_rank(), comm.Get_size()

    def load() -> tuple[bytes, CheckpointIndex, bool] | None:
        _faults.point("read_index", rank)
        if rank != 0:
            return None
        text = read_index_bytes(prefix)
        index = parse_index(text, source=index_path(prefix))
        unchanged = (
            not through_hdf5
            and index.structure_checksum is not None
            and hdf5.structure_unchanged(
                data_file_path(prefix, index.data_file),
                index.data_size,
                list(index.tensors.values()),
                index.structure_checksum,
                index.checksum,
            )
        )
        return text, index, unchanged

    loaded = _dist.run_agreed(comm, what, load, deadline)  # validated on rank 0 first
    # one broadcast: the validated bytes, then one byte for rank 0's structure outcome
    sent = loaded[0] + (b"\1" if loaded[2] else b"\0") if loaded is not None else None
    got = _dist.bcast_bytes(comm, sent, 0, deadline)
    text, unchanged = got[:-1], got[-1:] == b"\1"
    index: CheckpointIndex | None = None
    exc: BaseException | None = None
    try:
        index = loaded[1] if loaded is not None else parse_index(text, trusted=True)
    except BaseException as e:
        exc = e
    _dist.agree(comm, what, exc, deadline)
    assert index is not None
    if unchanged:
        return index
    validators = min(size, VALIDATORS)

    def validate() -> None:
        if rank < validators:
            tensors = list(index.tensors.values())[rank::validators]
            hdf5.validate_data_file(
                data_file_path(prefix, index.data_file),
                index.data_size,
                tensors,
                check_links=rank == 0,
                datasets=[t.dataset for t in index.tensors.values()] if rank == 0 else None,
            )

    _dist.run_agreed(comm, what, validate, deadline)
    return index


# --- planning (pure, the same on every rank) -------------------------------------------


@dataclass
class _Owned:
    """A saved slice this rank reads: where to, and who gets which part of it."""

    t: int  # request number
    i: int  # slice number
    box: Box
    buffer: np.ndarray | None = None  # the slice's bytes (a view of the destination, or scratch)
    in_place: bool = False
    local_part: Box | None = None  # the part this rank keeps
    sends: list[tuple[int, Box]] = field(default_factory=list)  # (rank, part)


@dataclass
class _Plan:
    owned: list[_Owned] = field(default_factory=list)
    recvs: list[tuple[int, int, Box]] = field(default_factory=list)  # (request, owner, part)


def _targets(req: ReadRequest, boxes: list[Box] | None) -> Targets:
    if boxes is None:
        assert req.layout is not None
        return target_grid(req.entry.shape, req.layout)
    return TargetList(req.entry.shape, boxes)


def _plan(
    requests: Sequence[ReadRequest],
    boxes: dict[int, list[Box]],
    use_grid: bool,
    rank: int,
    inplace: Sequence[bool] | None = None,
) -> list[_Plan]:
    """Per request: the slices this rank owns (reads) and the parts it receives.

    ``inplace``: :func:`in_place` of each request, when the caller has it already.
    """
    if inplace is None:
        inplace = [in_place(r, use_grid) for r in requests]
    plans = []
    for k, req in enumerate(requests):
        plan = _Plan()
        plans.append(plan)
        mine: Box = (tuple(req.start), tuple(req.shape))
        if req.shape and not volume(req.shape):
            continue
        slicing = req.entry.slicing
        if inplace[k]:
            # the common restart: the layout it was saved with, one rank per shard
            assert isinstance(slicing, DerivedSlicing)
            i = _own_shard(req, slicing, rank)
            if i is not None:
                plan.owned.append(_Owned(k, i, mine, local_part=mine))
                continue
        targets = _targets(req, None if (use_grid and req.layout is not None) else boxes[k])
        for i in slicing.query(mine):
            sbox = slicing.box(i)
            cells = targets.query(sbox)
            owner = owner_of(sbox, cells, i + k)
            part = box_intersection(sbox, mine)
            assert part is not None
            if owner != rank:
                plan.recvs.append((k, owner, part))
                continue
            o = _Owned(k, i, sbox, local_part=part)
            for cbox, ranks in cells:
                cpart = box_intersection(sbox, cbox)
                if cpart is None:
                    continue
                o.sends.extend((r, cpart) for r in ranks if r != rank)
            plan.owned.append(o)
    return plans


def _same_shards(req: ReadRequest, slicing: Slicing) -> bool:
    """Whether the request's layout is the one the tensor was saved with, unreplicated."""
    return (
        isinstance(slicing, DerivedSlicing)
        and req.layout is not None
        and req.layout == slicing.spec
        and slicing.replicas == 1
    )


def _own_shard(req: ReadRequest, slicing: DerivedSlicing, rank: int) -> int | None:
    """The saved slice that is exactly this rank's new slice, if there is one."""
    i, box = slicing.shard_of(rank)
    return i if box == (tuple(req.start), tuple(req.shape)) else None


def rounds_with_scratch(
    requests: Sequence[ReadRequest], inplace: Sequence[bool] | None = None
) -> Iterator[tuple[int, list[int], ScratchPool]]:
    """``(number, request numbers, scratch)`` of each round of a restore: the rounds run
    one after the other, so each gets the memory of the previous one's scratch (its
    exchange is complete when the next round starts)."""
    scratch = ScratchPool()
    for n, group in enumerate(read_rounds(requests, inplace)):
        scratch.reset()
        yield n, group, scratch


def in_place(req: ReadRequest, use_grid: bool) -> bool:
    """Whether every rank reads its slice of ``req`` straight into its variable: the
    layout it was saved with, one rank per shard (no scratch, no exchange).

    The same on every rank (it depends on agreed data only).
    """
    slicing = req.entry.slicing
    return use_grid and isinstance(slicing, DerivedSlicing) and _same_shards(req, slicing)


def read_rounds(
    requests: Sequence[ReadRequest], inplace: Sequence[bool] | None = None
) -> list[list[int]]:
    """Request numbers grouped in rounds of at most ``ROUND_BYTES`` that may need
    scratch (global sizes). Requests read in place (``inplace[k]``, from
    :func:`in_place`; none when not given) need none and weigh nothing: a restart on
    the saved layout is one round, one agreement."""
    rounds: list[list[int]] = []
    cur: list[int] = []
    size = 0
    for k, r in enumerate(requests):
        n = 0 if inplace is not None and inplace[k] else r.entry.nbytes
        if cur and size + n > ROUND_BYTES:
            rounds.append(cur)
            cur, size = [], 0
        cur.append(k)
        size += n
    if cur:
        rounds.append(cur)
    return rounds


def request_structure_hash(requests: Sequence[ReadRequest]) -> int:
    """A 63-bit hash of what every rank must agree on before a collective read.

    The same on every rank for the same requests (no salted ``hash()``).
    """
    parts = []
    for r in requests:
        lay = r.layout
        text = "boxes" if lay is None else layout_text(lay)
        e = r.entry
        parts.append(f"{e.key!r}|{e.shape}|{e.dtype.str}|{text}\n")
    digest = hashlib.blake2b("".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


# --- execution ---------------------------------------------------------------------------


def rel_slices(box: Box, origin: Sequence[int]) -> tuple[slice, ...]:
    """``box`` as slices of an array whose element 0 is at ``origin``."""
    return tuple(slice(a - o, a - o + n) for a, o, n in zip(box[0], origin, box[1], strict=True))


def read_tensors(
    comm: MPI.Comm,
    prefix: str,
    index: CheckpointIndex,
    requests: Sequence[ReadRequest],
    *,
    options: IOOptions,
    deadline: Deadline,
) -> list[np.ndarray]:
    """Read each request's slice (into its ``out`` where given); verify; agree.

    Returns one array per request: its ``out`` when that fits, else a new array. A
    failure found before the data moves changes no ``out`` array; one found while or
    after it moves (an IO error, a checksum mismatch) may leave ``out`` arrays
    holding part of the checkpoint's data.

    Raises:
        CorruptCheckpointError: On every rank, if any saved slice fails its checksum.
        CheckpointError: On every rank, if anything else fails on any rank.

    Collective: call on all ranks (each with its own slices of the same tensors).
    """
    what = f"read of checkpoint {prefix!r}"
    rank = comm.Get_rank()
    exc: BaseException | None = None
    arrays: list[np.ndarray] = []
    # 1. Agree on what is restored (keys, shapes, layouts): every rank derives the
    #    others' slices from the layouts; per-rank boxes are gathered.
    use_grid, boxes = agree_requests(comm, requests, deadline, what)
    plans: list[_Plan] = []
    inplace: list[bool] = []
    try:
        _faults.point("read_data", rank)
        arrays = [r.destination() for r in requests]
        inplace = [in_place(r, use_grid) for r in requests]
        plans = _plan(requests, boxes, use_grid, rank, inplace)
    except BaseException as e:
        exc = e
    # Agree before any byte lands in a variable: a failure found so far (planning,
    # a bad request) on any rank changes nothing anywhere.
    _dist.agree(comm, what, exc, deadline)
    path = data_file_path(prefix, index.data_file)
    fn = checksum_function(index.checksum)
    counter = ProgressCounter(options, _owned_bytes(requests, plans))
    for n, group, scratch in rounds_with_scratch(requests, inplace):
        _read_round(
            comm,
            path,
            requests,
            arrays,
            plans,
            group,
            fn,
            options,
            deadline,
            what,
            n,
            counter,
            scratch,
        )
    return arrays


def agree_requests(
    comm: MPI.Comm, requests: Sequence[ReadRequest], deadline: Deadline, what: str
) -> tuple[bool, dict[int, list[Box]]]:
    """Check that every rank restores the same tensors with the same layouts; return
    whether every rank's slices follow from the layouts (``use_grid``: each layout's
    mesh rank is the rank here) and, for the requests whose slices do not, every
    rank's box (one allgather).

    Raises:
        CheckpointError: On every rank, when the ranks' requests differ.

    Collective: call on all ranks.
    """
    rank = comm.Get_rank()
    h = request_structure_hash(requests)
    if _dist.allreduce_int(comm, h, MPI.MIN, deadline) != _dist.allreduce_int(
        comm, h, MPI.MAX, deadline
    ):
        raise CheckpointError(
            f"{what}: ranks restore different tensors or layouts (every rank must restore "
            f"the same objects with the same layouts)"
        )
    use_grid = _dist.all_true(
        comm, all(r.layout is None or r.mesh_rank == rank for r in requests), deadline
    )
    need = [k for k, r in enumerate(requests) if r.layout is None or not use_grid]
    gathered = (
        _dist.allgather_json(
            comm, [[list(requests[k].start), list(requests[k].shape)] for k in need], deadline
        )
        if need
        else []
    )
    return use_grid, {
        k: [(tuple(g[j][0]), tuple(g[j][1])) for g in gathered] for j, k in enumerate(need)
    }


def _owned_bytes(requests: Sequence[ReadRequest], plans: list[_Plan]) -> int:
    """Bytes this rank reads from the file (the saved slices it owns)."""
    return sum(
        volume(o.box[1]) * requests[o.t].entry.dtype.itemsize for p in plans for o in p.owned
    )


def _read_round(
    comm: MPI.Comm,
    path: str,
    requests: Sequence[ReadRequest],
    arrays: list[np.ndarray],
    plans: list[_Plan],
    group: list[int],
    fn: Callable[..., int],
    options: IOOptions,
    deadline: Deadline,
    what: str,
    number: int,
    counter: ProgressCounter,
    scratch: ScratchPool,
) -> None:
    exc: BaseException | None = None
    checks: dict[int, SliceCheck] = {}
    pieces: list[Piece] = []
    # --- io dispatch (issue 14): slices read by parallel HDF5 (compressed datasets; every
    # dataset with io="hdf5"), per request of the round, in the round's order
    h5: list[list[tuple[Sequence[int], np.ndarray]]] = [[] for _ in group]
    slot = {k: n for n, k in enumerate(group)}
    owned = [o for k in group for o in plans[k].owned]
    try:
        for o in owned:
            req = requests[o.t]
            dest = arrays[o.t]
            rel = rel_slices(o.box, req.start)
            view = dest[rel] if rel else dest
            if o.box == o.local_part:
                o.buffer, o.in_place = view, True  # straight into the variable (any strides)
            else:
                o.buffer = scratch.take(o.box[1], req.entry.dtype)
            e = req.entry
            if (e.offset is not None or e.filters is not None) and o.buffer.size:
                if options.verify_checksums:
                    checks[id(o.buffer)] = SliceCheck(e, o.i, o.buffer, fn)
                if e.offset is None or options.io == "hdf5":
                    h5[slot[o.t]].append((o.box[0], o.buffer))
                else:
                    pieces.append(Piece(e.offset, e.shape, o.box[0], o.buffer))
    except BaseException as ex:
        exc, pieces, h5 = ex, [], [[] for _ in group]

    entries = [requests[k].entry for k in group]
    for step in ("hdf5", "direct/mpiio"):  # both collective: every rank makes both
        try:
            if step == "hdf5":
                phdf5.read_pieces(
                    comm,
                    path,
                    entries,
                    h5,
                    options,
                    deadline=deadline,
                    what=what,
                    on_moved=counter.hook(),
                )
            else:
                move_pieces(
                    comm,
                    path,
                    pieces,
                    options,
                    write=False,
                    deadline=deadline,
                    listener=chunk_listener(checks),
                    on_moved=counter.hook(),
                )
        except MPI.Exception as e:
            exc = exc or CorruptCheckpointError(f"MPI-IO error reading {path!r}: {e}")
        except OSError as e:
            exc = exc or CorruptCheckpointError(f"error reading {path!r}: {e}")
        except BaseException as e:
            exc = exc or e
    if exc is None:
        try:
            for c in checks.values():
                c.finish()
        except BaseException as e:
            exc = e
    # no unverified byte leaves its reader
    _dist.agree(comm, what, exc, deadline)
    # keep this rank's parts of slices read into scratch
    for o in owned:
        if not o.in_place and o.local_part is not None and o.buffer is not None:
            req = requests[o.t]
            dest = arrays[o.t]
            drel = rel_slices(o.local_part, req.start)
            srel = rel_slices(o.local_part, o.box[0])
            if drel:
                dest[drel] = o.buffer[srel]
            else:
                dest[...] = o.buffer
    exchange_parts(comm, requests, arrays, plans, owned, group, deadline, what, number)


def exchange_parts(
    comm: MPI.Comm,
    requests: Sequence[ReadRequest],
    arrays: list[np.ndarray],
    plans: Sequence[Any],
    owned: Sequence[Any],
    group: list[int],
    deadline: Deadline,
    what: str,
    number: int,
    tag: int = _TAG,
) -> None:
    """Send the parts of owned slices to the ranks that need them; receive ours.

    ``owned`` items have ``buffer``, ``box`` and ``sends`` ((rank, part) pairs);
    ``plans[k].recvs`` lists (request, owner, part) for request ``k`` of ``group``
    (this module's plans and the local tier's, :mod:`.local_read`).

    Collective: call on all ranks.
    """
    out: dict[int, list[tuple[np.ndarray, Sequence[int], Box]]] = {}
    for o in owned:
        assert o.buffer is not None
        for r, part in o.sends:
            out.setdefault(r, []).append((o.buffer, o.box[0], part))
    inc: dict[int, list[tuple[np.ndarray, Sequence[int], Box]]] = {}
    for k in group:
        for _, owner, part in plans[k].recvs:
            inc.setdefault(owner, []).append((arrays[k], requests[k].start, part))
    cache: list[MPI.Datatype] = []
    exc: BaseException | None = None
    try:
        sends = [(r, m) for r, parts in sorted(out.items()) for m in message_specs(parts, cache)]
        recvs = [(r, m) for r, parts in sorted(inc.items()) for m in message_specs(parts, cache)]
        _dist.exchange(comm, sends, recvs, tag + number % 1000, deadline)
    except BaseException as e:
        exc = e
    finally:
        for t in cache:
            if t != MPI.DATATYPE_NULL:
                try:
                    t.Free()
                except MPI.Exception:
                    pass
    _dist.agree(comm, what, exc, deadline)
