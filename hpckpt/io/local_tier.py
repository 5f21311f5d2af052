"""Writing a local checkpoint: node-local files, partner copies, the commit.

The local tier of multi-level checkpointing keeps checkpoints on node-local
storage (``/dev/shm``, a node-local SSD): fast to write, lost with the node. Each
node's directory is the tier's path with ``{node}`` replaced by the node's index.

Call order of :func:`write_local` (collective over the checkpoint's communicator):

1. every rank: agree that all ranks save the same tensors (structure hash); every
   rank's byte count is gathered, which places each rank's region in its node's
   file (regions in rank order, 4 KiB aligned; a rank's pieces back to back);
2. each node's lowest rank (its *leader*) creates the node's data file
   ``P.node-<i>.own-<token>.bin`` at its final size and, with partner redundancy,
   the file for the partner copy of node ``i - 1``; agreed;
3. every rank writes its pieces into its node's file with ``pwrite`` while a worker
   thread checksums them (both in worker threads, during step 4);
4. partner copy: the ``k``-th rank of node ``i`` streams its bytes over MPI, in
   chunks of ``CHUNK_BYTES``, to rank ``k mod size`` of node ``i + 1``, which receives
   them straight into a memory map of ``P.node-<i>.partner-<token>.bin`` at the same
   offsets (a byte-identical copy); every rank takes part in every round, also after
   a local failure;
5. every rank syncs what it wrote; rank 0 gathers every rank's outcome, slice
   checksums and offsets, checks that every slice was written exactly once, and
   builds the local index (:mod:`.local_index`); the outcome is broadcast;
6. each leader writes ``P.local.json`` into its directory atomically (tmp + fsync +
   rename + directory fsync); agreed. A marker is written only once every node's
   data and partner copy are durable, so one marker anywhere proves the checkpoint
   complete. On failure, the leaders remove this save's files.

:func:`remove_local` applies retention (old checkpoints and leftovers of crashed
saves, in every node's directory); :func:`mapped_copies` gives a rank's pieces
of a committed local checkpoint as read-only memory maps of its node's file (the
source of a flush to the parallel file system: no copy in memory).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..errors import CheckpointError
from ..topology import NodeMap
from .checksum import DEFAULT_ALGORITHM, checksum
from .datatypes import byte_ranges_spec
from .fsutil import atomic_write, fsync_path, remove_later, remove_quietly
from .index import CheckpointIndex, dataset_name_for_key
from .local_index import LocalIndex, SliceLocations
from .mpiio import Piece, posix_io
from .paths import local_data_name, local_directory, local_marker_name, new_token, parse_local_name
from .write import SaveTensor, agree_structure, index_entries, library_versions

__all__ = [
    "CHUNK_BYTES",
    "LocalSave",
    "mapped_copies",
    "remove_local",
    "write_local",
]

CHUNK_BYTES = 256 << 20  # partner copy: stream bytes per round
GROUP_BYTES = 1 << 20  # partner copy: smaller pieces travel together, larger ones alone
REGION_ALIGN = 4096  # each rank's region in its node's file starts at a multiple of this
_TAG = 0x3100


@dataclass
class LocalSave:
    """What :func:`write_local` committed, as this rank sees it.

    Attributes:
        name: The checkpoint's name.
        token: The save's token.
        created: The save time recorded in the index.
        own_file: This rank's node's data file.
        pieces: ``(tensor number, piece number, byte offset in own_file, checksum)``
            of each non-empty piece this rank wrote.
    """

    name: str
    token: str
    created: float
    own_file: str
    pieces: list[tuple[int, int, int, int]] = field(default_factory=list)


def _align(n: int) -> int:
    return -(-n // REGION_ALIGN) * REGION_ALIGN


def _regions(nodes: NodeMap, lengths: list[int]) -> tuple[list[int], list[int]]:
    """Each rank's region offset in its node's file, and each node's file size."""
    offsets = [0] * nodes.nprocs
    sizes = []
    for node in range(nodes.nodes):
        pos = 0
        for r in nodes.ranks_of(node):
            offsets[r] = pos
            pos += _align(lengths[r])
        sizes.append(pos)
    return offsets, sizes


def _create(path: str, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def write_local(
    comm: MPI.Comm,
    nodes: NodeMap,
    pattern: str,
    name: str,
    tensors: Sequence[SaveTensor],
    *,
    graph: dict | None,
    redundancy: str,
    created: float,
    deadline: Deadline,
) -> LocalSave:
    """Write and commit local checkpoint ``name`` of the tier at ``pattern``.

    Raises:
        CheckpointError: On every rank, if anything failed on any rank (nothing is
            committed then, and this save's files are removed).

    Collective: call on all ranks.
    """
    what = f"local save of {name!r} to {pattern!r}"
    rank = comm.Get_rank()
    agree_structure(comm, tensors, deadline, what)
    own = [(i, j, a) for i, t in enumerate(tensors) for j, (_, a) in enumerate(t.pieces) if a.size]
    rel, pos = [], 0
    for _, _, a in own:
        rel.append(pos)
        pos += a.nbytes
    lengths = [int(x) for x in _dist.allgather_json(comm, pos, deadline)]
    region, sizes = _regions(nodes, lengths)
    token = str(_dist.bcast_json(comm, new_token() if rank == 0 else None, 0, deadline))
    node = nodes.node_of[rank]
    partner = redundancy == "partner" and nodes.nodes > 1
    directory = local_directory(pattern, node)
    own_file = os.path.join(directory, local_data_name(name, node, "own", token))
    origin = nodes.origin_node(node)
    partner_file = os.path.join(directory, local_data_name(name, origin, "partner", token))
    leader = nodes.is_leader(rank)

    def create() -> None:
        _faults.point("local_create", rank)
        if leader:
            os.makedirs(directory, exist_ok=True)
            _create(own_file, sizes[node])
            if partner:
                _create(partner_file, sizes[origin])

    try:
        _dist.run_agreed(comm, what, create, deadline)
        return _write_and_commit(
            comm, nodes, pattern, name, tensors, own, rel, lengths, region, sizes, token,
            graph, redundancy if partner else "none", created, own_file, partner_file,
            deadline, what,
        )  # fmt: skip
    except BaseException:
        if leader:  # uncommit and remove this save's files (best effort, local)
            remove_quietly(os.path.join(directory, local_marker_name(name)))
            remove_quietly(own_file)
            if partner:
                remove_quietly(partner_file)
        raise


def _write_and_commit(
    comm: MPI.Comm,
    nodes: NodeMap,
    pattern: str,
    name: str,
    tensors: Sequence[SaveTensor],
    own: list[tuple[int, int, np.ndarray]],
    rel: list[int],
    lengths: list[int],
    region: list[int],
    sizes: list[int],
    token: str,
    graph: dict | None,
    redundancy: str,
    created: float,
    own_file: str,
    partner_file: str,
    deadline: Deadline,
    what: str,
) -> LocalSave:
    rank = comm.Get_rank()
    base = region[rank]
    exc: BaseException | None = None
    # Every rank makes every collective call below, also after a local failure.
    # The checksums and the write of this rank's pieces run in worker threads (both
    # release the GIL) while this thread streams the partner copy.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="hpckpt-local") as pool:
        crcs: Future = pool.submit(lambda: [checksum(a) for _, _, a in own])
        pieces = [
            Piece(base + r, a.shape, (0,) * a.ndim, a)
            for r, (_, _, a) in zip(rel, own, strict=True)
        ]
        written = pool.submit(posix_io, own_file, pieces, write=True, fsync=False)
        if redundancy == "partner":
            try:
                _copy_to_partner(comm, nodes, own, lengths, region, partner_file, deadline)
            except Exception as e:
                exc = e
        try:
            written.result()
            _faults.point("local_data", rank)
        except Exception as e:
            exc = exc or e
        try:
            if exc is None:
                if own:
                    fsync_path(own_file)
                if nodes.origins_of(rank) and redundancy == "partner":
                    fsync_path(partner_file)
            values: list[int] = crcs.result()
        except Exception as e:
            exc = exc or e
            values = [0] * len(own)
    derived, listed = _rows(tensors, own, values, rel, base, rank)
    errors = _dist.gather_json(comm, _dist.failure_record(exc), 0, deadline)
    got_derived = _dist.gather_rows(comm, derived, 0, deadline)
    got_listed = _dist.gather_rows(comm, listed, 0, deadline)
    text: bytes | None = None
    if rank == 0:
        assert errors is not None and got_derived is not None and got_listed is not None
        if all(r is None for r in errors):
            try:
                index = _local_index(
                    comm, nodes, name, tensors, token, graph, redundancy, created, sizes,
                    got_derived, got_listed, what,
                )  # fmt: skip
                text = index.to_json().encode()
                _faults.point("local_commit", rank)
            except Exception as e:
                exc = e
                errors[0] = _dist.failure_record(e)
    errors = _dist.bcast_json(comm, errors, 0, deadline)
    _dist.raise_failures(comm, what, errors, exc)
    marker_text = _dist.bcast_bytes(comm, text, 0, deadline)
    node = nodes.node_of[rank]

    def commit() -> None:
        if nodes.is_leader(rank):
            d = local_directory(pattern, node)
            atomic_write(os.path.join(d, local_marker_name(name)), marker_text, f"{token}{node:x}")
            _faults.point("local_marker", rank)

    _dist.run_agreed(comm, what, commit, deadline)
    return LocalSave(
        name,
        token,
        created,
        own_file,
        [(i, j, base + r, int(c)) for (i, j, _), r, c in zip(own, rel, values, strict=True)],
    )


def _messages(sizes: list[int], lo: int, hi: int) -> list[list[tuple[int, int, int]]]:
    """The messages that move bytes ``[lo, hi)`` of a stream of pieces of ``sizes``.

    Each message is consecutive segments ``(piece, start, end)`` of the stream (so one
    contiguous range at the receiver): a segment of at least ``GROUP_BYTES`` alone (a
    contiguous send, which MPI moves in one copy), smaller ones grouped up to that size.
    Sender and receiver compute the same messages from the same sizes.
    """
    out: list[list[tuple[int, int, int]]] = []
    cur: list[tuple[int, int, int]] = []
    cur_n = pos = 0
    for k, n in enumerate(sizes):
        a, b = max(lo, pos), min(hi, pos + n)
        if a < b:
            seg = (k, a - pos, b - pos)
            if b - a >= GROUP_BYTES:
                if cur:
                    out.append(cur)
                    cur, cur_n = [], 0
                out.append([seg])
            else:
                cur.append(seg)
                cur_n += b - a
                if cur_n >= GROUP_BYTES:
                    out.append(cur)
                    cur, cur_n = [], 0
        pos += n
        if pos >= hi:
            break
    if cur:
        out.append(cur)
    return out


def _piece_sizes(
    comm: MPI.Comm, mine: list[int], dest: int, origins: list[int], deadline: Deadline
) -> dict[int, list[int]]:
    """Send this rank's piece sizes to its partner rank; receive its origins'."""
    counts = {r: np.zeros(1, dtype=np.int64) for r in origins}
    _dist.exchange(
        comm,
        [(dest, np.array([len(mine)], dtype=np.int64))],
        list(counts.items()),
        _TAG,
        deadline,
    )
    sizes = {r: np.zeros(int(c[0]), dtype=np.int64) for r, c in counts.items()}
    _dist.exchange(
        comm,
        [(dest, np.asarray(mine, dtype=np.int64))],
        [(r, a) for r, a in sizes.items()],
        _TAG + 1,
        deadline,
    )
    return {r: [int(x) for x in a] for r, a in sizes.items()}


def _copy_to_partner(
    comm: MPI.Comm,
    nodes: NodeMap,
    own: list[tuple[int, int, np.ndarray]],
    lengths: list[int],
    region: list[int],
    partner_file: str,
    deadline: Deadline,
) -> None:
    """Stream this rank's bytes to its partner rank; receive what the origins send.

    The piece sizes go first; then round ``j`` moves bytes ``[j * CHUNK_BYTES,
    (j + 1) * CHUNK_BYTES)`` of every rank's stream (its pieces back to back) from the
    sender's variables straight into a shared memory map of the receiver's partner
    file (no buffer, no packing, one copy), in the messages of :func:`_messages`.
    Each receiver first reserves its origins' regions (``posix_fallocate``),
    so that a full file system is an error here, never a fault on a mapped page.
    Every rank takes part in every round, also after a local failure.
    """
    rank = comm.Get_rank()
    dest = nodes.partner_rank(rank)
    origins = nodes.origins_of(rank)
    mine = [a.nbytes for _, _, a in own]
    theirs = _piece_sizes(comm, mine, dest, origins, deadline)
    starts = {r: np.concatenate(([0], np.cumsum(v, dtype=np.int64))) for r, v in theirs.items()}
    origins = [r for r in origins if lengths[r]]
    rounds = max((-(-n // CHUNK_BYTES) for n in lengths), default=0)
    exc: BaseException | None = None
    targets: dict[int, np.ndarray] = {}
    maps: list[np.memmap] = []
    if origins:
        try:
            fd = os.open(partner_file, os.O_RDWR)
            try:
                for r in origins:
                    os.posix_fallocate(fd, region[r], lengths[r])
            finally:
                os.close(fd)
            for r in origins:
                mm = np.memmap(
                    partner_file, dtype=np.uint8, mode="r+", offset=region[r], shape=(lengths[r],)
                )
                maps.append(mm)
                targets[r] = mm
        except Exception as e:  # receive into scratch to keep the rounds going
            exc = e
            targets = {r: np.empty(lengths[r], np.uint8) for r in origins}
    views = [a.reshape(-1).view(np.uint8) for _, _, a in own]
    for j in range(rounds):
        lo, hi = j * CHUNK_BYTES, (j + 1) * CHUNK_BYTES
        cache: list[MPI.Datatype] = []
        try:
            recvs: list[tuple[int, object]] = []
            for r in origins:
                for msg in _messages(theirs[r], lo, hi):
                    (k0, a0, _), (k1, _, b1) = msg[0], msg[-1]
                    recvs.append((r, targets[r][starts[r][k0] + a0 : starts[r][k1] + b1]))
            sends: list[tuple[int, object]] = []
            for msg in _messages(mine, lo, hi):
                n = sum(b - a for _, a, b in msg)
                try:
                    spec: object = (
                        views[msg[0][0]][msg[0][1] : msg[0][2]]
                        if len(msg) == 1
                        else byte_ranges_spec([(own[k][2], a, b) for k, a, b in msg], cache)
                    )
                except Exception as e:  # still send the bytes the partner expects
                    exc = exc or e
                    spec = np.zeros(n, dtype=np.uint8)
                sends.append((dest, spec))
            _dist.exchange(comm, sends, recvs, _TAG + 2, deadline)
        finally:
            for dt in cache:
                dt.Free()
        if j == 0:
            try:
                _faults.point("partner", rank)
            except Exception as e:
                exc = exc or e
    try:
        for mm in maps:
            mm.flush()  # msync: durable with the fsync that follows
    except Exception as e:
        exc = exc or e
    finally:
        del targets, maps
    if exc is not None:
        raise exc


def _rows(
    tensors: Sequence[SaveTensor],
    own: list[tuple[int, int, np.ndarray]],
    values: list[int],
    rel: list[int],
    base: int,
    rank: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Slice records: ``[tensor, slice, crc, rank, offset]`` (layout-based tensors) and
    ``[tensor, crc, rank, *start, *shape, offset]`` (listed ones, padded)."""
    width = max((len(t.shape) for t in tensors if t.layout is None), default=0)
    d_rows, l_rows = [], []
    for (i, j, a), crc, r in zip(own, values, rel, strict=True):
        t = tensors[i]
        if t.layout is not None:
            d_rows.append([i, t.slice_ids[j], crc, rank, base + r])
        else:
            start = list(t.pieces[j][0])
            row = [i, crc, rank] + [0] * (2 * width) + [base + r]
            row[3 : 3 + len(start)] = start
            row[3 + width : 3 + width + len(start)] = list(a.shape)
            l_rows.append(row)
    derived = np.asarray(d_rows, dtype=np.int64).reshape(len(d_rows), 5)
    listed = np.asarray(l_rows, dtype=np.int64).reshape(len(l_rows), 4 + 2 * width)
    return derived, listed


def _local_index(
    comm: MPI.Comm,
    nodes: NodeMap,
    name: str,
    tensors: Sequence[SaveTensor],
    token: str,
    graph: dict | None,
    redundancy: str,
    created: float,
    sizes: list[int],
    derived: np.ndarray,
    listed: np.ndarray,
    what: str,
) -> LocalIndex:
    """Rank 0: the index of the local checkpoint (slices checked, located)."""
    names = [dataset_name_for_key(t.key) for t in tensors]
    offsets: list[int | None] = []
    pos = 0  # the tensors' places in a virtual single data file (the standard index's view)
    for t in tensors:
        n = math.prod(t.shape) * t.dtype.itemsize
        offsets.append(pos if n else None)
        pos += n
    entries = index_entries(tensors, names, offsets, derived, listed, what)
    locations: dict[str, SliceLocations] = {}
    d_sorted = derived[np.argsort(derived[:, 0], kind="stable")] if len(derived) else derived
    l_sorted = listed[np.argsort(listed[:, 0], kind="stable")] if len(listed) else listed
    for i, t in enumerate(tensors):
        e = entries[t.key]
        ranks = np.full(len(e.slicing), -1, dtype=np.int64)
        offs = np.zeros(len(e.slicing), dtype=np.int64)
        if t.layout is not None:
            rows = d_sorted[d_sorted[:, 0] == i] if len(d_sorted) else d_sorted
            ranks[rows[:, 1]] = rows[:, 3]
            offs[rows[:, 1]] = rows[:, 4]
        else:
            rows = l_sorted[l_sorted[:, 0] == i] if len(l_sorted) else l_sorted
            ranks[: len(rows)] = rows[:, 2]
            offs[: len(rows)] = rows[:, -1]
        locations[t.key] = SliceLocations(ranks, offs)
    index = CheckpointIndex(
        data_file=f"{name}.data-{token}.h5",
        data_size=pos,
        tensors=entries,
        nprocs=comm.Get_size(),
        created=created,
        graph=graph,
        library=library_versions(),
        checksum=DEFAULT_ALGORITHM,
    )
    return LocalIndex(name, created, token, nodes, redundancy, sizes, locations, index)


def remove_local(
    comm: MPI.Comm,
    nodes: NodeMap,
    pattern: str,
    checkpoint_name: str,
    keep: dict[str, str],
    deadline: Deadline,
) -> None:
    """Remove, in every node's directory, the files of local checkpoints
    ``{checkpoint_name}-N`` not in ``keep`` (name -> token): markers first
    (uncommitting them), then data files (in the background), and leftovers of
    interrupted saves (data files of a kept name with another token, temporary files).

    Collective: call on all ranks (each node's leader removes its directory's files).
    """
    own = re.compile(rf"^{re.escape(checkpoint_name)}-\d+$")
    rank = comm.Get_rank()

    def remove() -> None:
        if not nodes.is_leader(rank):
            return
        d = local_directory(pattern, nodes.node_of[rank])
        try:
            names = sorted(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            return
        found = [(n, parse_local_name(n)) for n in names]
        gone = [(n, i) for n, i in found if i is not None and own.match(i.checkpoint)]
        gone = [
            (n, i)
            for n, i in gone
            if i.checkpoint not in keep
            or i.kind == "tmp"
            or (i.kind == "data" and i.token != keep[i.checkpoint])
        ]
        for n, i in gone:
            if i.kind == "marker":
                remove_quietly(os.path.join(d, n))
        for n, i in gone:
            if i.kind == "data":
                remove_later(os.path.join(d, n))
            elif i.kind == "tmp":
                remove_quietly(os.path.join(d, n))

    _dist.run_agreed(comm, f"removing old local checkpoints of {pattern!r}", remove, deadline)


def mapped_copies(save: LocalSave, tensors: Sequence[SaveTensor]) -> list[SaveTensor]:
    """``tensors`` with this rank's pieces replaced by read-only maps of ``save``'s file.

    Each piece keeps its save-time checksum (``SaveTensor.checksums``): a write of
    these copies checks its bytes against it. The maps stay valid after the file is
    removed (the pages go when the last map does).

    Raises:
        CheckpointError: This rank's pieces differ from those of ``save``.
    """
    where = {(i, j): (off, crc) for i, j, off, crc in save.pieces}
    spans = [off for off, _ in where.values()]
    if not spans:
        return [_replace(t, [(s, a) for s, a in t.pieces], None) for t in tensors]
    lo = min(spans)
    hi = max(off + tensors[i].pieces[j][1].nbytes for (i, j), (off, _) in where.items())
    region = np.memmap(save.own_file, dtype=np.uint8, mode="r", offset=lo, shape=(hi - lo,))
    out = []
    for i, t in enumerate(tensors):
        pieces, crcs = [], []
        for j, (start, a) in enumerate(t.pieces):
            if not a.size:
                pieces.append((start, a))
                crcs.append(0)
                continue
            if (i, j) not in where:
                raise CheckpointError(f"piece {j} of {t.key!r} is not in local checkpoint")
            off, crc = where[(i, j)]
            view = region[off - lo : off - lo + a.nbytes].view(a.dtype).reshape(a.shape)
            pieces.append((start, view))
            crcs.append(crc)
        out.append(_replace(t, pieces, crcs))
    return out


def _replace(
    t: SaveTensor, pieces: list[tuple[tuple[int, ...], np.ndarray]], crcs: list[int] | None
) -> SaveTensor:
    return SaveTensor(
        t.key, t.dtype, t.shape, t.layout, pieces, list(t.slice_ids), t.logical_dtype, crcs
    )
