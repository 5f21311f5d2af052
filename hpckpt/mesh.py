"""Cartesian communicator meshes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

from mpi4py import MPI

__all__ = ["Mesh", "create_mesh", "default_mesh"]


def _check_mesh_spec(dim_names: Sequence[str], shape: Sequence[int], comm_size: int) -> None:
    if len(dim_names) != len(shape):
        raise ValueError(
            f"mesh dim_names {tuple(dim_names)!r} and shape {tuple(shape)!r} differ in length"
        )
    if not dim_names:
        raise ValueError("a mesh needs at least one dimension")
    for name in dim_names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"mesh dimension names must be non-empty strings, got {name!r}")
    dupes = sorted({n for n in dim_names if list(dim_names).count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate mesh dimension name(s) {dupes!r} in {tuple(dim_names)!r}")
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"mesh shape {tuple(shape)!r} has an invalid size {n!r}")
    if math.prod(shape) != comm_size:
        raise ValueError(
            f"mesh shape {tuple(shape)!r} has {math.prod(shape)} positions but the "
            f"communicator has {comm_size} ranks"
        )


class Mesh:
    """A named Cartesian mesh of ranks over an ``MPI.Cartcomm``.

    Args:
        dim_names: One name per mesh dimension, e.g. ``("x", "y")``.
        shape: The size of each mesh dimension; the product must equal the
            communicator's size.
        comm: The communicator to arrange; defaults to ``MPI.COMM_WORLD``.

    Raises:
        ValueError: On a shape whose product differs from the communicator size,
            duplicate or empty names, or non-positive sizes.

    Collective: call on all ranks of ``comm`` (it calls ``Create_cart``).
    """

    def __init__(
        self,
        dim_names: Sequence[str],
        shape: Sequence[int],
        comm: MPI.Comm | None = None,
    ) -> None:
        comm = MPI.COMM_WORLD if comm is None else comm
        dim_names = tuple(dim_names)
        shape = tuple(shape)
        _check_mesh_spec(dim_names, shape, comm.Get_size())
        self._dim_names: tuple[str, ...] = dim_names
        self._shape: tuple[int, ...] = shape
        # Communicator construction: a collective MPI cannot bound (see hpckpt._dist).
        self._comm: MPI.Cartcomm = cast(MPI.Intracomm, comm).Create_cart(
            dims=list(shape), periods=[False] * len(shape), reorder=False
        )
        self._coords: tuple[int, ...] = tuple(self._comm.Get_coords(self._comm.Get_rank()))

    @property
    def dim_names(self) -> tuple[str, ...]:
        """The mesh dimension names."""
        return self._dim_names

    @property
    def shape(self) -> tuple[int, ...]:
        """The size of each mesh dimension."""
        return self._shape

    @property
    def size(self) -> int:
        """The number of ranks in the mesh."""
        return math.prod(self._shape)

    @property
    def rank(self) -> int:
        """This process's rank in the mesh communicator."""
        return self._comm.Get_rank()

    @property
    def coords(self) -> tuple[int, ...]:
        """This rank's coordinates, one per mesh dimension."""
        return self._coords

    @property
    def comm(self) -> MPI.Cartcomm:
        """The Cartesian communicator."""
        return self._comm

    def _index(self, dim: str) -> int:
        try:
            return self._dim_names.index(dim)
        except ValueError:
            raise ValueError(
                f"{dim!r} is not a dimension of this mesh {self._dim_names!r}"
            ) from None

    def dim_size(self, dim: str) -> int:
        """The size of mesh dimension ``dim``."""
        return self._shape[self._index(dim)]

    def coord(self, dim: str) -> int:
        """This rank's coordinate along mesh dimension ``dim``."""
        return self._coords[self._index(dim)]

    def coords_of(self, rank: int) -> tuple[int, ...]:
        """The coordinates of ``rank`` in this mesh."""
        return tuple(self._comm.Get_coords(rank))

    def to_dict(self) -> dict[str, list]:
        """The mesh's description as stored in a checkpoint index."""
        return {"dim_names": list(self._dim_names), "shape": list(self._shape)}

    def __copy__(self) -> Mesh:
        return self

    def __deepcopy__(self, memo: dict) -> Mesh:
        """A mesh is its communicator: copies (of variables, layouts) share it."""
        return self

    def __repr__(self) -> str:
        dims = ", ".join(f"{n}={s}" for n, s in zip(self._dim_names, self._shape, strict=True))
        return f"Mesh({dims})"


def create_mesh(
    mesh_dims: Sequence[tuple[str, int]] | None = None, comm: MPI.Comm | None = None
) -> Mesh:
    """Create a mesh from ``[(name, size), ...]``.

    Args:
        mesh_dims: The mesh dimensions in order; ``None`` makes a 1-D mesh
            ``("x", comm.size)``.
        comm: The communicator; defaults to ``MPI.COMM_WORLD``.

    Collective: call on all ranks of ``comm``.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    if mesh_dims is None:
        return Mesh(("x",), (comm.Get_size(),), comm)
    try:
        pairs = [(name, size) for name, size in mesh_dims]
    except (TypeError, ValueError):
        raise ValueError(
            f"mesh_dims must be a list of (name, size) pairs, got {mesh_dims!r}"
        ) from None
    return Mesh([p[0] for p in pairs], [p[1] for p in pairs], comm)


_DEFAULT_MESH: Mesh | None = None


def default_mesh() -> Mesh:
    """The 1-D mesh over ``MPI.COMM_WORLD`` used when no layout is given.

    Collective on first use: every rank must make its first default-layout
    Variable in the same order.
    """
    global _DEFAULT_MESH
    if _DEFAULT_MESH is None:
        _DEFAULT_MESH = create_mesh(None)
    return _DEFAULT_MESH
