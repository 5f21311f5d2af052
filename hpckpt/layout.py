"""Layouts: how each tensor dimension is split over a mesh.

The block-distribution math is pure (functions of shapes and coordinates) and is
testable without MPI; :class:`Layout` binds it to a :class:`~hpckpt.mesh.Mesh`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .mesh import Mesh

__all__ = [
    "UNSHARDED",
    "Layout",
    "block_range",
    "replica_position",
    "shard_slices",
    "validate_specs",
]

UNSHARDED = "unsharded"
"""The sharding spec of a tensor dimension that is not split (every rank holds all of it)."""


class MeshLike(Protocol):
    """What the layout math needs of a mesh."""

    @property
    def dim_names(self) -> tuple[str, ...]: ...

    @property
    def shape(self) -> tuple[int, ...]: ...


def block_range(n: int, parts: int, index: int) -> tuple[int, int]:
    """The ``[start, stop)`` of block ``index`` when ``n`` elements are split into ``parts``.

    The first ``n % parts`` blocks are one element larger; blocks may be empty.
    """
    base, rem = divmod(n, parts)
    start = index * base + min(index, rem)
    return start, start + base + (1 if index < rem else 0)


def validate_specs(specs: Sequence[str], dim_names: Sequence[str]) -> tuple[str, ...]:
    """Check sharding specs against mesh dimension names; return them as a tuple.

    Raises:
        ValueError: A spec names no mesh dimension, or a mesh dimension is used twice.
    """
    specs = tuple(specs)
    used: list[str] = []
    for s in specs:
        if not isinstance(s, str):
            raise ValueError(f"sharding spec {s!r} is not a string (a mesh dimension or UNSHARDED)")
        if s == UNSHARDED:
            continue
        if s not in dim_names:
            raise ValueError(
                f"sharding spec {s!r} names no dimension of the mesh {tuple(dim_names)!r}"
            )
        if s in used:
            raise ValueError(f"mesh dimension {s!r} is used twice in layout {specs!r}")
        used.append(s)
    return specs


def shard_slices(
    global_shape: Sequence[int],
    specs: Sequence[str],
    dim_names: Sequence[str],
    mesh_shape: Sequence[int],
    coords: Sequence[int],
) -> tuple[slice, ...]:
    """The hyperslab held at mesh position ``coords`` (one slice per tensor dimension)."""
    if len(global_shape) != len(specs):
        raise ValueError(
            f"a layout of rank {len(specs)} {tuple(specs)!r} cannot describe a tensor "
            f"of shape {tuple(global_shape)!r}"
        )
    out = []
    for n, s in zip(global_shape, specs, strict=True):
        if s == UNSHARDED:
            out.append(slice(0, n))
        else:
            i = list(dim_names).index(s)
            out.append(slice(*block_range(n, mesh_shape[i], coords[i])))
    return tuple(out)


def replica_position(
    specs: Sequence[str],
    dim_names: Sequence[str],
    mesh_shape: Sequence[int],
    coords: Sequence[int],
) -> tuple[int, int]:
    """``(index, count)`` of the position among the replicas holding the same shard.

    Positions that agree on every mesh dimension the layout uses hold the same
    shard; they are numbered over the unused dimensions in row-major order.
    """
    index, count = 0, 1
    for name, size, c in zip(dim_names, mesh_shape, coords, strict=True):
        if name not in specs:
            index = index * size + c
            count *= size
    return index, count


class Layout:
    """The sharding of a tensor over a mesh: one spec per tensor dimension.

    Each spec is a mesh dimension name (that tensor dimension is split in blocks
    over it) or :data:`UNSHARDED`.

    Args:
        sharding_specs: One spec per tensor dimension.
        mesh: The mesh.

    Raises:
        ValueError: A spec names no mesh dimension or a mesh dimension is used twice.
    """

    def __init__(self, sharding_specs: Sequence[str], mesh: Mesh) -> None:
        if isinstance(sharding_specs, str):
            raise ValueError(f"sharding_specs must be a sequence of specs, got {sharding_specs!r}")
        self._specs = validate_specs(sharding_specs, mesh.dim_names)
        self._mesh = mesh
        self._replica: tuple[int, int] | None = None

    @classmethod
    def replicated(cls, mesh: Mesh, rank: int) -> Layout:
        """A layout of ``rank`` dimensions held whole by every rank."""
        return cls([UNSHARDED] * _check_rank(rank), mesh)

    @classmethod
    def batch_sharded(cls, mesh: Mesh, batch_dim: str, rank: int) -> Layout:
        """A layout sharding tensor dimension 0 over mesh dimension ``batch_dim``."""
        if _check_rank(rank) < 1:
            raise ValueError(f"batch_sharded needs a tensor rank of at least 1, got {rank!r}")
        return cls([batch_dim] + [UNSHARDED] * (rank - 1), mesh)

    @property
    def sharding_specs(self) -> tuple[str, ...]:
        """One spec per tensor dimension."""
        return self._specs

    @property
    def mesh(self) -> Mesh:
        """The mesh this layout shards over."""
        return self._mesh

    @property
    def rank(self) -> int:
        """The tensor rank (number of dimensions) this layout describes."""
        return len(self._specs)

    def is_fully_replicated(self) -> bool:
        """Whether every rank holds the whole tensor."""
        return all(s == UNSHARDED for s in self._specs)

    def slices_at(self, coords: Sequence[int], global_shape: Sequence[int]) -> tuple[slice, ...]:
        """The hyperslab held by the rank at mesh ``coords``."""
        return shard_slices(
            tuple(global_shape), self._specs, self._mesh.dim_names, self._mesh.shape, coords
        )

    def local_slices(self, global_shape: Sequence[int]) -> tuple[slice, ...]:
        """This rank's hyperslab of a tensor of ``global_shape``."""
        return self.slices_at(self._mesh.coords, global_shape)

    def local_shape(self, global_shape: Sequence[int]) -> tuple[int, ...]:
        """The shape of this rank's shard of a tensor of ``global_shape``."""
        return tuple(s.stop - s.start for s in self.local_slices(global_shape))

    def replica_position(self) -> tuple[int, int]:
        """``(index, count)`` of this rank among the ranks holding the same shard."""
        rp = self._replica
        if rp is None:
            rp = self._replica = replica_position(
                self._specs, self._mesh.dim_names, self._mesh.shape, self._mesh.coords
            )
        return rp

    def index_key(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
        """``(sharding_specs, mesh dim_names, mesh shape)``, as a checkpoint index records it."""
        return (self._specs, tuple(self._mesh.dim_names), tuple(self._mesh.shape))

    def to_dict(self) -> dict:
        """The layout's description as stored in a checkpoint index."""
        return {"sharding_specs": list(self._specs), "mesh": self._mesh.to_dict()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        return self._specs == other._specs and (
            self._mesh is other._mesh
            or (
                self._mesh.dim_names == other._mesh.dim_names
                and self._mesh.shape == other._mesh.shape
            )
        )

    def __hash__(self) -> int:
        return hash((self._specs, self._mesh.dim_names, self._mesh.shape))

    def __repr__(self) -> str:
        return f"Layout({list(self._specs)!r}, {self._mesh!r})"


def _check_rank(rank: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"tensor rank must be a non-negative int, got {rank!r}")
    return rank


def num_elements(shape: Sequence[int]) -> int:
    """The number of elements of a tensor of ``shape``."""
    return math.prod(shape)
