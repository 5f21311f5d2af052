"""Save planning: from the live object graph to each rank's pieces to write.

Call order of :func:`plan_save` (collective): every rank walks the graph and
builds its tensors (agreed); rank 0's Python-state strings are broadcast; every
rank checks that it has the same Python-state objects as rank 0 (agreed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..errors import CheckpointError
from ..graph import build_save_graph
from ..io import SaveTensor, derived_slicing, use_rows
from ..variable import Variable

__all__ = ["SavePlan", "plan_save", "write_pieces"]


def write_pieces(
    v: Variable, ordinal: int
) -> tuple[list[tuple[tuple[int, ...], np.ndarray]], list[int]]:
    """This rank's share of ``v`` (the ``ordinal``-th variable saved) and its slice numbers.

    The slices are those the index derives from the layout (``io.derived_slicing``):
    each element is written once. A shard held by several replicas is split by rows
    among them when it is large; a small one is written whole by one replica, chosen
    round-robin by ``ordinal``, so that many small replicated tensors spread over the
    ranks.
    """
    spec = v.layout.spec()
    local = v.local
    if use_rows(v.shape, spec, v.dtype):  # strided shards: the io layer aggregates rows
        return [(v.local_start, local)], []
    slicing = derived_slicing(v.shape, spec, v.dtype)
    _, count = v.layout.replica_position()
    if count == 1:  # a shard held by this rank alone: the whole of it, one slice
        if not local.size and v.shape:
            return [], []
        return [(v.local_start, local)], [slicing.shard_index(v.layout.mesh.coords)]
    i = slicing.written_by(v.layout.mesh.coords, ordinal)
    if i is None:
        return [], []
    start, shape = slicing.box(i)
    rel = tuple(
        slice(a - b, a - b + n) for a, b, n in zip(start, v.local_start, shape, strict=True)
    )
    piece = local[rel] if rel else local
    return [(start, np.ascontiguousarray(piece))], [i]


@dataclass
class SavePlan:
    """What one save writes.

    Attributes:
        tensors: Every tensor, sorted by key, with this rank's pieces.
        graph: The object graph as stored in the index.
    """

    tensors: list[SaveTensor]
    graph: dict[str, Any]

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

    def plan() -> tuple[Any, list[SaveTensor], list[bytes], list[bool]]:
        _faults.point("plan", comm.Get_rank())
        g = build_save_graph(root)
        tensors = []
        for n, (key, v) in enumerate(g.variables):
            if v.layout.mesh.size != comm.Get_size():
                raise ValueError(
                    f"variable {key!r} lives on a mesh of {v.layout.mesh.size} ranks but "
                    f"the checkpoint's communicator has {comm.Get_size()}"
                )
            pieces, ids = write_pieces(v, n)
            tensors.append(
                SaveTensor(
                    key,
                    v.dtype,
                    v.shape,
                    v.layout.spec(),
                    pieces,
                    ids,
                    mesh_rank=v.layout.mesh.rank,
                    ordinal=n,
                    rows=use_rows(v.shape, v.layout.spec(), v.dtype),
                )
            )
        data, binary = [], []
        for key, s in g.python_states:
            value = s.serialize()
            if not isinstance(value, (str, bytes)):
                raise TypeError(
                    f"{type(s).__name__}.serialize() for {key!r} returned "
                    f"{type(value).__name__}, not str or bytes"
                )
            binary.append(isinstance(value, bytes))
            data.append(value if isinstance(value, bytes) else value.encode())
        return g, tensors, data, binary

    g, tensors, data, binary = _dist.run_agreed(comm, what, plan, deadline)
    # Python state is saved from rank 0 (its lengths and kinds are broadcast); every
    # rank must have the same objects.
    keys = [k for k, _ in g.python_states]
    mine = [keys, [len(d) for d in data], binary]
    from_root = _dist.bcast_json(comm, mine, 0, deadline)

    def same_states() -> None:
        if from_root[0] != keys:
            raise CheckpointError(
                f"{what}: this rank's PythonState objects {keys[:5]} differ from rank 0's "
                f"{from_root[0][:5]}"
            )

    _dist.run_agreed(comm, what, same_states, deadline)
    binary_keys = {k for k, b in zip(keys, from_root[2], strict=True) if b}
    for node in g.nodes:
        node.binary = node.key in binary_keys
    is_root = comm.Get_rank() == 0
    for i, (key, _) in enumerate(g.python_states):
        n = int(from_root[1][i])
        pieces: list[tuple[tuple[int, ...], np.ndarray]] = (
            [((0,), np.frombuffer(data[i], dtype=np.uint8))] if is_root else []
        )
        tensors.append(SaveTensor(key, np.dtype(np.uint8), (n,), None, pieces))
    tensors.sort(key=lambda t: t.key)
    return SavePlan(tensors, g.to_json())
