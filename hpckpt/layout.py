"""Layouts: how each tensor dimension is split over a mesh.

The block-distribution math is pure (functions of shapes and coordinates) and is
testable without MPI; :class:`Layout` binds it to a :class:`~hpckpt.mesh.Mesh`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .mesh import Mesh

__all__ = [
    "UNSHARDED",
    "Blocks",
    "Layout",
    "LayoutSpec",
    "block_range",
    "dim_bounds",
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


class Blocks(Sequence[int]):
    """The ``parts + 1`` block boundaries of the block distribution of ``n`` elements.

    Computed on access (a 100,000-rank mesh costs nothing until asked), so that a
    bisection over them costs O(log parts).
    """

    __slots__ = ("_base", "_rem", "n", "parts")

    def __init__(self, n: int, parts: int) -> None:
        self.n = n
        self.parts = parts
        self._base, self._rem = divmod(n, parts)

    def __len__(self) -> int:
        return self.parts + 1

    def __getitem__(self, i: int) -> int:  # type: ignore[override]
        if i < 0:
            i += self.parts + 1
        if not 0 <= i <= self.parts:
            raise IndexError(i)
        return self.n if i == self.parts else i * self._base + min(i, self._rem)

    def largest(self) -> int:
        """The size of the largest block."""
        return self._base + (1 if self._rem else 0)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Blocks({self.n}, {self.parts})"


def dim_bounds(n: int, parts: int, splits: Sequence[int] | None = None) -> Sequence[int]:
    """The ``parts + 1`` block boundaries of a dimension of ``n`` elements.

    ``splits`` (explicit ownership ranges, PETSc-style) when given, else the block
    distribution of :func:`block_range` (computed on access: :class:`Blocks`).
    """
    if splits is not None:
        return tuple(splits)
    return Blocks(n, parts)


def validate_splits(
    splits: Mapping[str, Sequence[int]], dim_names: Sequence[str], mesh_shape: Sequence[int]
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Check explicit block boundaries per mesh dimension; return them sorted by name.

    Each value has ``mesh.dim_size(d) + 1`` non-decreasing ints starting at 0 (blocks
    may be empty); its last value is the length of the tensor dimensions it splits.

    Raises:
        ValueError: A name that is no mesh dimension, a wrong count, negative or
            decreasing bounds, or a first bound other than 0.
    """
    if not isinstance(splits, Mapping):
        raise ValueError(f"splits must be a dict {{mesh dim: bounds}}, got {splits!r:.80}")
    out = []
    for name, bounds in splits.items():
        if name not in dim_names:
            raise ValueError(
                f"splits names {name!r}, which is no dimension of the mesh {tuple(dim_names)!r}"
            )
        k = mesh_shape[list(dim_names).index(name)]
        try:
            b = tuple(int(x) for x in bounds)
        except (TypeError, ValueError):
            raise ValueError(
                f"splits[{name!r}] must be a sequence of ints, got {bounds!r:.80}"
            ) from None
        if len(b) != k + 1:
            raise ValueError(
                f"splits[{name!r}] has {len(b)} bounds {list(b)!r}; mesh dimension {name!r} "
                f"of size {k} needs {k + 1} (the start of each block, then the end)"
            )
        if b[0] != 0 or any(y < x for x, y in itertools.pairwise(b)):
            raise ValueError(f"splits[{name!r}] = {list(b)!r} must start at 0 and never decrease")
        out.append((name, b))
    return tuple(sorted(out))


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
    splits: Mapping[str, Sequence[int]] | None = None,
) -> tuple[slice, ...]:
    """The hyperslab held at mesh position ``coords`` (one slice per tensor dimension).

    ``splits``: explicit block boundaries of some mesh dimensions (see :class:`Layout`).
    """
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
            b = splits.get(s) if splits else None
            if b is not None:
                out.append(slice(b[coords[i]], b[coords[i] + 1]))
            else:
                out.append(slice(*block_range(n, mesh_shape[i], coords[i])))
    return tuple(out)


@dataclass(frozen=True)
class LayoutSpec:
    """A layout as plain data (what a checkpoint records): no communicator.

    Attributes:
        specs: One sharding spec per tensor dimension (a mesh dimension or ``UNSHARDED``).
        dim_names: The mesh's dimension names.
        mesh_shape: The mesh's shape.
        splits: Explicit block boundaries ``((mesh dim, bounds), ...)``, sorted by name.
    """

    specs: tuple[str, ...]
    dim_names: tuple[str, ...]
    mesh_shape: tuple[int, ...]
    splits: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def __hash__(self) -> int:  # remembered: layouts key the slicing and planning caches
        h: int | None = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.specs, self.dim_names, self.mesh_shape, self.splits))
            object.__setattr__(self, "_hash", h)
        return h

    @property
    def ndim(self) -> int:
        """The tensor rank the layout describes."""
        return len(self.specs)

    def splits_dict(self) -> dict[str, tuple[int, ...]]:
        """``splits`` as a dict."""
        return dict(self.splits)

    def bounds(self, shape: Sequence[int]) -> list[Sequence[int] | None]:
        """Per tensor dimension: its block boundaries, or ``None`` when unsharded."""
        sp = self.splits_dict()
        out: list[Sequence[int] | None] = []
        for n, s in zip(shape, self.specs, strict=True):
            if s == UNSHARDED:
                out.append(None)
            else:
                out.append(dim_bounds(n, self.mesh_shape[self.dim_names.index(s)], sp.get(s)))
        return out

    def replicas(self) -> int:
        """How many mesh positions hold each shard (the product of the unused mesh dims)."""
        return math.prod(
            k for n, k in zip(self.dim_names, self.mesh_shape, strict=True) if n not in self.specs
        )

    def is_replicated(self) -> bool:
        """Whether every position holds the whole tensor."""
        return all(s == UNSHARDED for s in self.specs)

    def shard(self, shape: Sequence[int], coords: Sequence[int]) -> tuple[slice, ...]:
        """The hyperslab held at mesh ``coords``."""
        return shard_slices(
            shape, self.specs, self.dim_names, self.mesh_shape, coords, self.splits_dict()
        )

    def check_shape(self, shape: Sequence[int]) -> None:
        """Check that ``splits`` fit a tensor of ``shape``.

        Raises:
            ValueError: A split dimension's length differs from its bounds' end.
        """
        sp = self.splits_dict()
        for d, (n, s) in enumerate(zip(shape, self.specs, strict=True)):
            b = sp.get(s)
            if b is not None and b[-1] != n:
                raise ValueError(
                    f"the layout splits mesh dimension {s!r} at {list(b)!r}, which covers "
                    f"{b[-1]} elements, but dimension {d} of the tensor has {n} (shape "
                    f"{tuple(shape)!r})"
                )


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
    over it) or :data:`UNSHARDED`. Blocks follow the block distribution (the first
    ``n % k`` blocks one element larger) unless ``splits`` gives a mesh dimension's
    boundaries explicitly (PETSc-style ownership ranges, e.g. the remainder on the
    last rank, or load-balanced blocks; empty blocks allowed).

    Args:
        sharding_specs: One spec per tensor dimension.
        mesh: The mesh.
        splits: ``{mesh dim: bounds}``: ``mesh.dim_size(dim) + 1`` non-decreasing ints
            from 0 to the length of the tensor dimension split over ``dim`` (block
            ``i`` is ``[bounds[i], bounds[i + 1])``). Such a layout fits only tensors
            whose split dimensions have that length.

    Raises:
        ValueError: A spec names no mesh dimension, a mesh dimension is used twice, or
            ``splits`` is malformed (the message names the bad value).
    """

    def __init__(
        self,
        sharding_specs: Sequence[str],
        mesh: Mesh,
        splits: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        if isinstance(sharding_specs, str):
            raise ValueError(f"sharding_specs must be a sequence of specs, got {sharding_specs!r}")
        self._specs = validate_specs(sharding_specs, mesh.dim_names)
        self._mesh = mesh
        self._splits = (
            validate_splits(splits, mesh.dim_names, mesh.shape) if splits is not None else ()
        )
        self._spec = LayoutSpec(self._specs, tuple(mesh.dim_names), tuple(mesh.shape), self._splits)
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

    @property
    def splits(self) -> dict[str, tuple[int, ...]]:
        """Explicit block boundaries by mesh dimension (empty: block distribution)."""
        return dict(self._splits)

    def spec(self) -> LayoutSpec:
        """The layout as plain data (what a checkpoint records)."""
        return self._spec

    def check_shape(self, global_shape: Sequence[int]) -> None:
        """Check that this layout fits a tensor of ``global_shape``.

        Raises:
            ValueError: The rank differs, or a split dimension has another length.
        """
        if len(global_shape) != self.rank:
            raise ValueError(
                f"layout {list(self._specs)!r} has rank {self.rank} but the value has shape "
                f"{tuple(global_shape)!r}"
            )
        self._spec.check_shape(global_shape)

    def slices_at(self, coords: Sequence[int], global_shape: Sequence[int]) -> tuple[slice, ...]:
        """The hyperslab held by the rank at mesh ``coords``."""
        return self._spec.shard(tuple(global_shape), coords)

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
        """``(sharding_specs, mesh dim_names, mesh shape)``."""
        return (self._specs, tuple(self._mesh.dim_names), tuple(self._mesh.shape))

    def to_dict(self) -> dict:
        """The layout's description as stored in a checkpoint index."""
        d: dict = {"sharding_specs": list(self._specs), "mesh": self._mesh.to_dict()}
        if self._splits:
            d["splits"] = {k: list(v) for k, v in self._splits}
        return d

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Layout):
            return NotImplemented
        return self._spec == other._spec

    def __hash__(self) -> int:
        return hash(self._spec)

    def __repr__(self) -> str:
        extra = f", splits={self.splits!r}" if self._splits else ""
        return f"Layout({list(self._specs)!r}, {self._mesh!r}{extra})"


def _check_rank(rank: int) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise ValueError(f"tensor rank must be a non-negative int, got {rank!r}")
    return rank


def num_elements(shape: Sequence[int]) -> int:
    """The number of elements of a tensor of ``shape``."""
    return math.prod(shape)
