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
3. every rank writes its pieces into its node's file with ``pwrite``, checksumming
   each chunk just before it is written (in a worker thread, during step 4);
4. partner copy: the ``k``-th rank of node ``i`` streams its bytes over MPI, in
   chunks (:mod:`.partner`), to rank ``k mod size`` of node ``i + 1``, which receives
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

import dataclasses
import math
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..errors import CheckpointError
from ..topology import NodeMap
from .checksum import DEFAULT_ALGORITHM, checksum_function
from .fsutil import atomic_write, fsync_path, remove_later, remove_quietly
from .index import CheckpointIndex, dataset_name_for_key
from .local_index import LocalIndex, SliceLocations
from .partner import copy_to_partner
from .paths import local_data_name, local_directory, local_marker_name, new_token, parse_local_name
from .write import (
    SaveTensor,
    index_entries,
    library_versions,
    structure_hash,
    without_rows,
)

__all__ = [
    "LocalSave",
    "mapped_copies",
    "remove_local",
    "write_local",
]

REGION_ALIGN = 4096  # each rank's region in its node's file starts at a multiple of this
WRITE_CHUNK_BYTES = 4 << 20  # own pieces: checksummed and written chunk by chunk


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
        tensors: The tensors as saved (tensors planned in row bands are saved in the
            slices their layout derives: there is no shared file to write bands into).
    """

    name: str
    token: str
    created: float
    own_file: str
    pieces: list[tuple[int, int, int, int]] = field(default_factory=list)
    tensors: list[SaveTensor] = field(default_factory=list)


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


def _create(path: str, size: int, reuse: str | None) -> None:
    """Create ``path`` of ``size`` bytes; from the file ``reuse`` (renamed) if it exists.

    A reused file keeps its pages: writing into memory that a file system already
    allocated (and, for ``/dev/shm``, zeroed) costs half as much as into a new file.
    """
    if reuse is not None:
        try:
            os.replace(reuse, path)
        except FileNotFoundError:
            pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _chunks(a: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(byte offset, bytes)`` of ``a`` in C order, in chunks of about ``WRITE_CHUNK_BYTES``
    (views of a C-contiguous array; copies of a few rows of a strided one)."""
    if a.flags.c_contiguous:
        flat = a.reshape(-1).view(np.uint8)
        for lo in range(0, len(flat), WRITE_CHUNK_BYTES):
            yield lo, flat[lo : lo + WRITE_CHUNK_BYTES]
        return
    row = a[0].nbytes if a.ndim else a.nbytes
    step = max(1, WRITE_CHUNK_BYTES // max(row, 1))
    for r in range(0, a.shape[0], step):
        yield r * row, np.ascontiguousarray(a[r : r + step]).reshape(-1).view(np.uint8)


def _write_own(path: str, pieces: list[tuple[int, np.ndarray]]) -> list[int]:
    """``pwrite`` each ``(offset, array)`` (any strides) in C order, chunk by chunk,
    checksumming each chunk just before it is written (still in the cache: one pass over
    memory); returns the checksums."""
    fn = checksum_function(DEFAULT_ALGORITHM)
    out = []
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, a in pieces:
            crc = 0
            for lo, chunk in _chunks(a):
                crc = fn(chunk, crc)
                view = memoryview(chunk.data)
                done = 0
                while done < len(view):
                    n = os.pwrite(fd, view[done:], offset + lo + done)
                    if n <= 0:
                        raise OSError(f"short write to {path!r} (no space?)")
                    done += n
            out.append(int(crc))
    finally:
        os.close(fd)
    return out


def _region_views(
    path: str,
    base: int,
    own: list[tuple[int, int, np.ndarray]],
    rel: list[int],
    length: int,
    ok: bool,
) -> list[tuple[int, int, np.ndarray]]:
    """This rank's pieces as contiguous byte views of its region of ``path`` (zeros of
    the same sizes when the region could not be written: the partner copy still gets
    the bytes it expects, and the save fails anyway)."""
    if not length:
        return []
    region = (
        np.memmap(path, dtype=np.uint8, mode="r", offset=base, shape=(length,))
        if ok
        else np.zeros(length, dtype=np.uint8)
    )
    return [(i, j, region[r : r + a.nbytes]) for (i, j, a), r in zip(own, rel, strict=True)]


def _agree_structure(
    comm: MPI.Comm, tensors: Sequence[SaveTensor], deadline: Deadline, what: str
) -> None:
    h = structure_hash(tensors)
    got = _dist.allreduce_max(comm, np.array([h, -h], dtype=np.int64), deadline)
    if got[0] == -got[1]:
        return
    hashes = _dist.allgather_json(comm, h, deadline)
    odd = [r for r, x in enumerate(hashes) if x != hashes[0]]
    raise CheckpointError(
        f"{what}: ranks disagree on the tensors to save, or on their layouts (ranks {odd} "
        f"differ from rank 0): every rank must save the same keys, dtypes, shapes and layouts"
    )


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
    recycle: tuple[str, str] | None = None,
) -> LocalSave:
    """Write and commit local checkpoint ``name`` of the tier at ``pattern``.

    ``recycle`` (name, token): a committed local checkpoint that this save replaces;
    each leader first removes its marker (uncommitting it), then renames its data files
    to this save's names and writes over them (SCR reuses its cache the same way). A
    crash meanwhile leaves it incomplete (its files gone under its name), never
    damaged: readers judge a checkpoint by its files' names and sizes.

    Raises:
        CheckpointError: On every rank, if anything failed on any rank (nothing is
            committed then, and this save's files are removed).

    Collective: call on all ranks.
    """
    what = f"local save of {name!r} to {pattern!r}"
    rank = comm.Get_rank()
    tensors = [without_rows(t) for t in tensors]  # no shared file: each rank its slices
    _agree_structure(comm, tensors, deadline, what)
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
        if not leader:
            return
        os.makedirs(directory, exist_ok=True)
        old_own = old_partner = None
        if recycle is not None:
            r_name, r_token = recycle
            remove_quietly(os.path.join(directory, local_marker_name(r_name)))
            old_own = os.path.join(directory, local_data_name(r_name, node, "own", r_token))
            old_partner = os.path.join(
                directory, local_data_name(r_name, origin, "partner", r_token)
            )
        _create(own_file, sizes[node], old_own)
        if partner:
            _create(partner_file, sizes[origin], old_partner)

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
    # This rank's pieces are checksummed and written (chunk by chunk) in a worker thread
    # (both release the GIL) while this thread streams the partner copy.
    values: list[int] = [0] * len(own)
    waited = False
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpckpt-local") as pool:
        pieces = [(base + r, a) for r, (_, _, a) in zip(rel, own, strict=True)]
        written: Future = pool.submit(_write_own, own_file, pieces)
        if redundancy == "partner":
            stream = own
            if any(not a.flags.c_contiguous for _, _, a in own):
                # strided pieces (the caller's own arrays): stream their bytes from this
                # rank's region of the node file once it is written
                waited = True
                try:
                    values = written.result()
                    _faults.point("local_data", rank)
                except BaseException as e:
                    exc = e
                stream = _region_views(own_file, base, own, rel, lengths[rank], exc is None)
            try:
                copy_to_partner(comm, nodes, stream, lengths, region, partner_file, deadline)
            except BaseException as e:
                exc = exc or e
        if not waited:
            try:
                values = written.result()
                _faults.point("local_data", rank)
            except BaseException as e:
                exc = exc or e
        try:
            if exc is None:
                if own:
                    fsync_path(own_file)
                if nodes.origins_of(rank) and redundancy == "partner":
                    fsync_path(partner_file)
        except BaseException as e:
            exc = exc or e
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
            except BaseException as e:
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
        list(tensors),
    )


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
    entries = index_entries(tensors, names, offsets, derived[:, :4], listed, what)
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


def mapped_copies(save: LocalSave) -> list[SaveTensor]:
    """The tensors of ``save`` with this rank's pieces replaced by read-only maps of its
    file (C-contiguous, whatever the strides of the arrays saved).

    Each piece keeps its save-time checksum (``SaveTensor.checksums``): a write of
    these copies checks its bytes against it. The maps stay valid after the file is
    removed (the pages go when the last map does).

    Raises:
        CheckpointError: This rank's pieces differ from those of ``save``.
    """
    tensors = save.tensors
    where = {(i, j): (off, crc) for i, j, off, crc in save.pieces}
    if not where:
        return [dataclasses.replace(t, checksums=None) for t in tensors]
    lo = min(off for off, _ in where.values())
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
        out.append(dataclasses.replace(t, pieces=pieces, checksums=crcs))
    return out
