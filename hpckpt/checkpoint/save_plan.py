"""Save planning: from the live object graph to each rank's pieces to write.

Call order of :func:`plan_save` (collective): every rank walks the graph and
builds its tensors, serializing its Python and per-rank states (agreed); every
rank's per-rank boxes and per-rank state sizes are allgathered; every rank checks
that the boxes tile their tensors (a gap or an overlap raises, naming the ranks,
before anything is written) and picks the replica that writes each box (agreed);
rank 0's Python-state sizes are broadcast; every rank checks that it has the same
Python-state and RankState objects as rank 0 (agreed).

Pieces are views of the variables' own buffers (``Variable.local``, which may be
the caller's strided array): nothing is copied here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..dtypes import logical_name, storage_dtype
from ..errors import CheckpointError, CorruptCheckpointError
from ..graph import build_save_graph
from ..io import CheckpointIndex, SaveTensor, derived_slicing, tiling_problem, use_rows
from ..variable import Variable

__all__ = [
    "SaveMemo",
    "SavePlan",
    "box_pieces",
    "parse_rank_state_header",
    "plan_save",
    "rank_state_header",
    "rank_state_header_bytes",
    "write_pieces",
]

Piece = tuple[tuple[int, ...], np.ndarray]


def _stored(a: np.ndarray) -> np.ndarray:
    """``a`` as the stored dtype (an ``ml_dtypes`` float as same-width unsigned ints; a view)."""
    st = storage_dtype(a.dtype)
    return a if st == a.dtype else a.view(st)


def write_pieces(v: Variable, ordinal: int) -> tuple[list[Piece], list[int]]:
    """This rank's share of ``v`` (the ``ordinal``-th variable saved) and its slice numbers.

    The slices are those the index derives from the layout (``io.derived_slicing``):
    each element is written once. A shard held by several replicas is split by rows
    among them when it is large; a small one is written whole by one replica, chosen
    round-robin by ``ordinal``, so that many small replicated tensors spread over the
    ranks. The pieces are views of ``v.local`` (no copy, whatever its strides).
    """
    layout = v.layout
    assert layout is not None
    spec = layout.spec()
    st = storage_dtype(v.dtype)
    local = v.local
    if use_rows(v.shape, spec, st):  # strided shards: the io layer aggregates rows
        return [(v.local_start, _stored(local))], []
    slicing = derived_slicing(v.shape, spec, st)
    _, count = layout.replica_position()
    if count == 1:  # a shard held by this rank alone: the whole of it, one slice
        if not local.size and v.shape:
            return [], []
        return [(v.local_start, _stored(local))], [slicing.shard_index(layout.mesh.coords)]
    i = slicing.written_by(layout.mesh.coords, ordinal)
    if i is None:
        return [], []
    start, shape = slicing.box(i)
    rel = tuple(
        slice(a - b, a - b + n) for a, b, n in zip(start, v.local_start, shape, strict=True)
    )
    piece = local[rel] if rel else local
    return [(start, _stored(piece))], [i]


def box_pieces(
    v: Variable, boxes: list[list[list[int]]], rank: int, ordinal: int, key: str
) -> list[Piece]:
    """This rank's piece of a Variable of per-rank boxes (``boxes``: every rank's).

    Ranks with identical boxes hold replicas: one of them, chosen round-robin by
    ``ordinal``, writes the box.

    Raises:
        CheckpointError: The boxes do not tile the tensor (naming the ranks).
    """
    problem = tiling_problem(v.shape, [(tuple(b[0]), tuple(b[1])) for b in boxes])
    if problem is not None:
        raise CheckpointError(
            f"the per-rank boxes of tensor {key!r} of shape {list(v.shape)} do not tile it: "
            f"{problem}. Nothing was written"
        )
    mine = boxes[rank]
    if not math.prod(mine[1]):  # an empty box (a scalar's box, shape [], has one element)
        return []
    holders = [r for r, b in enumerate(boxes) if b == mine]
    if holders[ordinal % len(holders)] != rank:
        return []
    return [(tuple(mine[0]), _stored(v.local))]


def rank_state_header(lengths: list[int]) -> np.ndarray:
    """The header of a per-rank state tensor: ``n + 1`` little-endian int64 offsets.

    Rank ``r``'s bytes are ``[offsets[r], offsets[r + 1])`` of the tensor, after the
    header (``offsets[0]`` is the header's size).
    """
    head = 8 * (len(lengths) + 1)
    return np.concatenate(([head], head + np.cumsum(lengths, dtype=np.int64))).astype("<i8")


def rank_state_header_bytes(index: CheckpointIndex) -> int:
    """The size of the per-rank state header of a checkpoint saved by ``index.nprocs`` ranks."""
    return 8 * (index.nprocs + 1)


def parse_rank_state_header(raw: np.ndarray, total: int, key: str) -> np.ndarray:
    """The offsets of a per-rank state tensor of ``total`` bytes from its header bytes.

    Raises:
        CorruptCheckpointError: The header does not describe the tensor.
    """
    offsets = np.frombuffer(raw.tobytes(), dtype="<i8").astype(np.int64)
    if (
        len(offsets) < 2
        or offsets[0] != raw.size
        or offsets[-1] != total
        or np.any(np.diff(offsets) < 0)
    ):
        raise CorruptCheckpointError(f"per-rank state {key!r} has a damaged header")
    return offsets


class SaveMemo(NamedTuple):
    """A Variable's last planned share (``Variable._save_memo``): what it was planned
    from (the first six fields, compared at each save) and what the plan made.

    A tuple: one object per Variable for Python's garbage collector to walk (its
    pieces and slice numbers are tuples of untracked items).
    """

    layout: Any
    local: np.ndarray
    ordinal: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: np.dtype
    storage_dtype: np.dtype
    global_shape: tuple[int, ...]
    spec: Any
    pieces: tuple
    ids: tuple
    logical_dtype: str | None
    mesh_rank: int
    rows: bool
    io: dict  # the io layer's numbers and text for this tensor (``SaveTensor.memo``)


def _layout_tensor(key: str, v: Variable, ordinal: int) -> SaveTensor:
    """The :class:`SaveTensor` of a layout-based Variable: its pieces (``write_pieces``)
    and how it is saved.

    The result depends only on the Variable's layout, its shard array (the object, its
    dtype, shape and strides) and ``ordinal``; it is remembered in the Variable
    (:class:`SaveMemo`) and reused while all of these are the same (the remembered
    pieces are views of that very array, so they see its current values). A fresh
    ``SaveTensor`` is returned every time (callers may replace its pieces).
    """
    local = v.local
    layout = v.layout
    assert layout is not None
    m = v._save_memo
    if (
        m is None
        or m.layout is not layout
        or m.local is not local
        or m.ordinal != ordinal
        or m.shape != local.shape
        or m.strides != local.strides
        or m.dtype != local.dtype
    ):
        spec = layout.spec()
        st = storage_dtype(v.dtype)
        pieces, ids = write_pieces(v, ordinal)
        m = v._save_memo = SaveMemo(
            layout,
            local,
            ordinal,
            local.shape,
            local.strides,
            local.dtype,
            st,
            v.shape,
            spec,
            tuple(pieces),
            tuple(ids),
            logical_name(v.dtype),
            layout.mesh.rank,
            use_rows(v.shape, spec, st),
            {},
        )
    return SaveTensor(
        key,
        m.storage_dtype,
        m.global_shape,
        m.spec,
        list(m.pieces),
        list(m.ids),
        m.logical_dtype,
        mesh_rank=m.mesh_rank,
        ordinal=ordinal,
        rows=m.rows,
        memo=m.io,
    )


@dataclass
class SavePlan:
    """What one save writes.

    Attributes:
        tensors: Every tensor, sorted by key, with this rank's pieces.
        graph: The object graph as stored in the index, on rank 0 (``None`` on the
            other ranks: only rank 0 writes an index).
    """

    tensors: list[SaveTensor]
    graph: dict[str, Any] | None

    @property
    def nbytes(self) -> int:
        """Bytes of this rank's pieces."""
        return sum(a.nbytes for t in self.tensors for _, a in t.pieces)


def plan_save(root: Any, comm: MPI.Comm, deadline: Deadline, what: str) -> SavePlan:
    """Walk the graph from ``root`` and plan this rank's pieces.

    Raises:
        CheckpointError: On every rank, if planning failed on any rank or ranks
            hold different Python-state objects.

    Collective: call on all ranks.
    """

    rank = comm.Get_rank()

    def encode(key: str, obj: Any) -> tuple[bytes, bool]:
        value = obj.serialize()
        if not isinstance(value, (str, bytes)):
            raise TypeError(
                f"{type(obj).__name__}.serialize() for {key!r} returned "
                f"{type(value).__name__}, not str or bytes"
            )
        return (value if isinstance(value, bytes) else value.encode()), isinstance(value, bytes)

    def plan() -> tuple[Any, list[SaveTensor], list, list, list]:
        _faults.point("plan", comm.Get_rank())
        g = build_save_graph(root)
        tensors, boxed = [], []
        for n, (key, v) in enumerate(g.variables):
            if v.comm.Get_size() != comm.Get_size():
                raise ValueError(
                    f"variable {key!r} lives on {v.comm.Get_size()} ranks but the "
                    f"checkpoint's communicator has {comm.Get_size()}"
                )
            if v.layout is not None:
                tensors.append(_layout_tensor(key, v, n))
            else:
                st, logical = storage_dtype(v.dtype), logical_name(v.dtype)
                boxed.append((len(tensors), v, n))
                tensors.append(SaveTensor(key, st, v.shape, None, [], [], logical))
        states = [encode(k, s) for k, s in g.python_states]
        ranked = [encode(k, s) for k, s in g.rank_states]
        return g, tensors, boxed, states, ranked

    g, tensors, boxed, states, ranked = _dist.run_agreed(comm, what, plan, deadline)
    # Per-rank boxes and per-rank states: every rank learns every rank's (one allgather).
    mine = {
        "boxes": [[list(v.local_start), list(v.local.shape)] for _, v, _ in boxed],
        "ranked": [[len(d), b] for d, b in ranked],
    }
    everyone = _dist.allgather_json(comm, mine, deadline)

    def place_boxes() -> None:
        if any(len(e["boxes"]) != len(boxed) or len(e["ranked"]) != len(ranked) for e in everyone):
            raise CheckpointError(
                f"{what}: ranks hold different numbers of per-rank-box variables or RankState "
                f"objects (every rank must save the same objects)"
            )
        for j, (t, v, n) in enumerate(boxed):
            boxes = [e["boxes"][j] for e in everyone]
            tensors[t].pieces = box_pieces(v, boxes, rank, n, tensors[t].key)

    _dist.run_agreed(comm, what, place_boxes, deadline)
    # Python state is saved from rank 0 (its lengths and kinds are broadcast); every
    # rank must have the same objects.
    keys = [k for k, _ in g.python_states]
    rkeys = [k for k, _ in g.rank_states]
    from_root = _dist.bcast_json(comm, [keys, [len(d) for d, _ in states], rkeys], 0, deadline)

    def same_states() -> None:
        if from_root[0] != keys or from_root[2] != rkeys:
            raise CheckpointError(
                f"{what}: this rank's PythonState/RankState objects {(keys + rkeys)[:5]} "
                f"differ from rank 0's {(from_root[0] + from_root[2])[:5]}"
            )
        for j, key in enumerate(rkeys):
            kinds = [e["ranked"][j][1] for e in everyone]
            odd = [r for r, b in enumerate(kinds) if b != kinds[0]]
            if odd:
                raise CheckpointError(
                    f"{what}: RankState {key!r}: serialize() returned str on some ranks and "
                    f"bytes on others (ranks {odd[:8]} differ from rank 0)"
                )

    _dist.run_agreed(comm, what, same_states, deadline)
    binary_keys = {k for k, (_, b) in zip(keys, states, strict=True) if b}
    binary_keys |= {k for j, k in enumerate(rkeys) if everyone[0]["ranked"][j][1]}
    for node in g.nodes:
        node.binary = node.key in binary_keys
    is_root = rank == 0
    for i, (key, _) in enumerate(g.python_states):
        n = int(from_root[1][i])
        pieces: list[Piece] = (
            [((0,), np.frombuffer(states[i][0], dtype=np.uint8))] if is_root else []
        )
        tensors.append(SaveTensor(key, np.dtype(np.uint8), (n,), None, pieces))
    for j, key in enumerate(rkeys):
        offsets = rank_state_header([int(e["ranked"][j][0]) for e in everyone])
        pieces = [((0,), offsets.view(np.uint8))] if is_root else []
        if ranked[j][0]:
            pieces.append(((int(offsets[rank]),), np.frombuffer(ranked[j][0], dtype=np.uint8)))
        tensors.append(SaveTensor(key, np.dtype(np.uint8), (int(offsets[-1]),), None, pieces))
    tensors.sort(key=lambda t: t.key)
    return SavePlan(tensors, g.to_json() if is_root else None)
