"""Partner copies of the local tier: a node's data streamed over MPI to the next node.

The ``k``-th rank of node ``i`` sends its pieces (back to back: its region of node
``i``'s file) to rank ``k mod size`` of node ``i + 1``, which receives them straight into
a pre-faulted shared memory map of node ``i``'s partner file at the same offsets: a
byte-identical copy, one memory copy in all, no buffer.
"""

from __future__ import annotations

import mmap
import os

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..topology import NodeMap
from .datatypes import byte_ranges_spec

__all__ = ["CHUNK_BYTES", "GROUP_BYTES", "copy_to_partner"]

CHUNK_BYTES = 256 << 20  # stream bytes per round
GROUP_BYTES = 1 << 20  # smaller pieces travel together, larger ones alone
_TAG = 0x3100


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


def copy_to_partner(
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
    Each receiver first reserves its origins' regions (``posix_fallocate``), so that a
    full file system is an error here, never a fault on a mapped page, and maps them
    pre-faulted (``MAP_POPULATE``: one fault per page costs as much as the copy).
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
    maps: list[mmap.mmap] = []
    scratch = False
    if origins:
        try:
            fd = os.open(partner_file, os.O_RDWR)
            try:
                for r in origins:
                    os.posix_fallocate(fd, region[r], lengths[r])
                    mm, target = _map(fd, region[r], lengths[r])
                    maps.append(mm)
                    targets[r] = target
            finally:
                os.close(fd)
        except BaseException as e:  # receive into scratch (one round) to keep the rounds going
            exc, scratch = e, True
            targets = {r: np.empty(min(CHUNK_BYTES, lengths[r]), np.uint8) for r in origins}
    views = [a.reshape(-1).view(np.uint8) for _, _, a in own]
    for j in range(rounds):
        lo, hi = j * CHUNK_BYTES, (j + 1) * CHUNK_BYTES
        cache: list[MPI.Datatype] = []
        try:
            recvs: list[tuple[int, object]] = []
            for r in origins:
                shift = lo if scratch else 0
                for msg in _messages(theirs[r], lo, hi):
                    (k0, a0, _), (k1, _, b1) = msg[0], msg[-1]
                    a, b = starts[r][k0] + a0 - shift, starts[r][k1] + b1 - shift
                    recvs.append((r, targets[r][a:b]))
            sends: list[tuple[int, object]] = []
            for msg in _messages(mine, lo, hi):
                n = sum(b - a for _, a, b in msg)
                try:
                    spec: object = (
                        views[msg[0][0]][msg[0][1] : msg[0][2]]
                        if len(msg) == 1
                        else byte_ranges_spec([(own[k][2], a, b) for k, a, b in msg], cache)
                    )
                except BaseException as e:  # still send the bytes the partner expects
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
            except BaseException as e:
                exc = exc or e
    recvs = []
    targets.clear()
    for mm in maps:
        try:
            mm.flush()  # msync: durable with the fsync that follows
        except BaseException as e:
            exc = exc or e
        try:
            mm.close()
        except BufferError:  # a view still alive: unmapped when it goes
            pass
    if exc is not None:
        raise exc


def _map(fd: int, offset: int, length: int) -> tuple[mmap.mmap, np.ndarray]:
    """A shared, writable, pre-faulted map of bytes ``[offset, offset + length)`` of
    ``fd``, and those bytes as an array (maps start at a multiple of the page size)."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    mm = mmap.mmap(
        fd,
        length + offset - start,
        flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
        prot=mmap.PROT_READ | mmap.PROT_WRITE,
        offset=start,
    )
    return mm, np.frombuffer(mm, dtype=np.uint8, count=length, offset=offset - start)
