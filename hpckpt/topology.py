"""Nodes of a job: which ranks share a node, each node's partner.

A node is the ranks of one ``MPI.COMM_TYPE_SHARED`` communicator (the ranks that
share memory). ``HPCKPT_RANKS_PER_NODE=k`` makes every ``k`` consecutive ranks one
*emulated* node instead (tests and demos of multi-level checkpointing on one
machine). Nodes are numbered in the order of their lowest rank; the partner of
node ``i`` is node ``(i + 1) mod n``.

:class:`NodeMap` is pure; :func:`node_map` builds it collectively.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mpi4py import MPI

from . import _dist
from ._dist import Deadline

__all__ = ["RANKS_PER_NODE_ENV", "NodeMap", "emulated_ranks_per_node", "node_map"]

RANKS_PER_NODE_ENV = "HPCKPT_RANKS_PER_NODE"


@dataclass(frozen=True)
class NodeMap:
    """The node of every rank of a communicator.

    Attributes:
        node_of: The node index of each rank (nodes numbered ``0..n-1`` in the order
            of their lowest rank; every node holds at least one rank).

    Raises:
        ValueError: ``node_of`` is empty, or its nodes are not numbered ``0..n-1``
            in the order of their lowest rank.
    """

    node_of: tuple[int, ...]
    _ranks: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        node_of = tuple(int(x) for x in self.node_of)
        if not node_of:
            raise ValueError("a node map needs at least one rank")
        ranks: list[list[int]] = []
        for r, n in enumerate(node_of):
            if n == len(ranks):
                ranks.append([r])
            elif 0 <= n < len(ranks):
                ranks[n].append(r)
            else:
                raise ValueError(
                    f"node map {list(node_of)[:16]}: rank {r} is on node {n}, but nodes must be "
                    f"numbered 0..n-1 in the order of their lowest rank"
                )
        object.__setattr__(self, "node_of", node_of)
        object.__setattr__(self, "_ranks", tuple(tuple(x) for x in ranks))

    @classmethod
    def blocks(cls, nprocs: int, ranks_per_node: int) -> NodeMap:
        """Every ``ranks_per_node`` consecutive ranks of ``nprocs`` form one node."""
        if nprocs < 1 or ranks_per_node < 1:
            raise ValueError(f"bad node blocks: {nprocs} ranks, {ranks_per_node} per node")
        return cls(tuple(r // ranks_per_node for r in range(nprocs)))

    @property
    def nprocs(self) -> int:
        """Number of ranks."""
        return len(self.node_of)

    @property
    def nodes(self) -> int:
        """Number of nodes."""
        return len(self._ranks)

    def ranks_of(self, node: int) -> tuple[int, ...]:
        """The ranks of ``node``, ascending."""
        return self._ranks[node]

    def leader(self, node: int) -> int:
        """The lowest rank of ``node`` (it creates and lists the node's files)."""
        return self._ranks[node][0]

    def is_leader(self, rank: int) -> bool:
        """Whether ``rank`` is the lowest rank of its node."""
        return self.leader(self.node_of[rank]) == rank

    def local_index(self, rank: int) -> int:
        """The position of ``rank`` among the ranks of its node."""
        return self._ranks[self.node_of[rank]].index(rank)

    def partner_node(self, node: int) -> int:
        """The node that holds ``node``'s partner copy: ``(node + 1) mod n``."""
        return (node + 1) % self.nodes

    def origin_node(self, node: int) -> int:
        """The node whose partner copy ``node`` holds: ``(node - 1) mod n``."""
        return (node - 1) % self.nodes

    def partner_rank(self, rank: int) -> int:
        """The rank of the partner node that receives (and reads back) ``rank``'s data.

        The ``k``-th rank of node ``i`` pairs with rank ``k mod size`` of node ``i + 1``.
        """
        peers = self._ranks[self.partner_node(self.node_of[rank])]
        return peers[self.local_index(rank) % len(peers)]

    def origins_of(self, rank: int) -> list[int]:
        """The ranks whose partner rank is ``rank`` (ascending)."""
        node = self.node_of[rank]
        if self.nodes < 2:
            return []
        return [r for r in self._ranks[self.origin_node(node)] if self.partner_rank(r) == rank]

    def describe(self) -> str:
        """``"4 ranks on 2 nodes"``."""
        return f"{self.nprocs} rank{'s' * (self.nprocs != 1)} on {self.nodes} node" + (
            "s" * (self.nodes != 1)
        )


def emulated_ranks_per_node(environ: dict[str, str] | None = None) -> int | None:
    """``HPCKPT_RANKS_PER_NODE`` as a positive int, or ``None`` when it is not set.

    Raises:
        ValueError: The variable is set to anything but a positive integer.
    """
    env = os.environ if environ is None else environ
    raw = env.get(RANKS_PER_NODE_ENV, "").strip()
    if not raw:
        return None
    try:
        k = int(raw)
    except ValueError:
        k = 0
    if k < 1:
        raise ValueError(f"{RANKS_PER_NODE_ENV} must be a positive integer, got {raw!r}")
    return k


def node_map(comm: MPI.Comm, deadline: Deadline | None = None) -> NodeMap:
    """The nodes of ``comm``'s ranks (emulated with ``HPCKPT_RANKS_PER_NODE``).

    Rank 0's ``HPCKPT_RANKS_PER_NODE`` decides for every rank.

    Raises:
        ValueError: On every rank, when rank 0's ``HPCKPT_RANKS_PER_NODE`` is invalid.

    Collective: call on all ranks (without emulation it splits ``comm`` by
    ``COMM_TYPE_SHARED``: communicator construction, which MPI cannot bound).
    """
    deadline = deadline or Deadline(None)
    what = "node topology"

    def read_env() -> int | None:
        return emulated_ranks_per_node() if comm.Get_rank() == 0 else None

    k = _dist.bcast_json(comm, _dist.run_agreed(comm, what, read_env, deadline), 0, deadline)
    if k is not None:
        return NodeMap.blocks(comm.Get_size(), int(k))
    shared = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        lowest = _dist.allreduce_int(shared, comm.Get_rank(), MPI.MIN, deadline)
    finally:
        shared.Free()
    leaders = _dist.allgather_json(comm, lowest, deadline)
    order = {leader: i for i, leader in enumerate(sorted(set(leaders)))}
    return NodeMap(tuple(order[x] for x in leaders))
