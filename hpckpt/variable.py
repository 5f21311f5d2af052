"""Variables: a global tensor of which each rank keeps its layout-defined shard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from ._dist import allgatherv_array
from .layout import Layout
from .mesh import default_mesh

__all__ = ["Variable", "check_dtype"]

_KINDS = "biufc"


def check_dtype(dtype: Any) -> np.dtype:
    """Return ``dtype`` as a native-byte-order numpy dtype, or raise ``TypeError``.

    Supported: bool and every numeric numpy dtype (signed and unsigned integers,
    floats, complex).
    """
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{dtype!r} is not a numpy dtype") from None
    if dt.kind not in _KINDS or dt.fields is not None or dt.subdtype is not None:
        raise TypeError(f"dtype {dt!r} is not supported: use bool or a numeric numpy dtype")
    return dt.newbyteorder("=")


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(n) for n in shape)
    except TypeError:
        raise ValueError(f"global_shape must be a sequence of ints, got {shape!r}") from None
    if any(n < 0 for n in out):
        raise ValueError(f"global_shape {out!r} has a negative size")
    return out


class Variable:
    """A global tensor sharded over a mesh.

    Every rank passes the same global ``initial_value``; each keeps only the shard
    its layout assigns to it (:attr:`local`).

    Args:
        initial_value: The global array (identical on every rank), or a scalar.
        layout: How the tensor is split over a mesh. ``None`` means replicated
            on the default 1-D mesh over ``MPI.COMM_WORLD`` (created collectively
            on first use).
        dtype: Cast ``initial_value`` to this dtype (bool or numeric).
        name: A name for messages and ``repr``.

    Raises:
        TypeError: The dtype is not bool or numeric.
        ValueError: The layout's rank differs from the value's number of dimensions.
    """

    def __init__(
        self,
        initial_value: Any,
        layout: Layout | None = None,
        dtype: Any = None,
        name: str | None = None,
    ) -> None:
        value = np.asarray(initial_value, dtype=dtype)
        dt = check_dtype(value.dtype)
        if layout is None:
            layout = Layout.replicated(default_mesh(), value.ndim)
        _check_layout(layout, value.shape)
        local = np.array(value[layout.local_slices(value.shape)], dtype=dt, order="C", copy=True)
        self._init(local, layout, value.shape, name)

    def _init(
        self, local: np.ndarray, layout: Layout, global_shape: tuple[int, ...], name: str | None
    ) -> None:
        self._local = local
        self._layout = layout
        self._shape = tuple(global_shape)
        self._name = name if name is not None else "Variable"
        self._start: tuple[int, ...] | None = None  # the hyperslab's start, on first use

    @property
    def local_start(self) -> tuple[int, ...]:
        """The global index of this rank's shard's first element (its hyperslab's start)."""
        st = self._start
        if st is None:
            st = self._start = tuple(s.start for s in self._layout.local_slices(self._shape))
        return st

    @classmethod
    def from_local(
        cls,
        local_value: Any,
        layout: Layout,
        global_shape: Sequence[int],
        name: str | None = None,
    ) -> Variable:
        """Build a Variable from each rank's own shard.

        Args:
            local_value: This rank's shard; its shape must be
                ``layout.local_shape(global_shape)``.
            layout: The layout.
            global_shape: The global tensor's shape.
            name: A name for messages and ``repr``.

        Raises:
            ValueError: The shard's shape does not match the layout.
        """
        shape = _check_shape(global_shape)
        _check_layout(layout, shape)
        arr = np.asarray(local_value)
        dt = check_dtype(arr.dtype)
        want = layout.local_shape(shape)
        if arr.shape != want:
            raise ValueError(
                f"local value of shape {arr.shape!r} does not match the local shape {want!r} "
                f"of a {shape!r} tensor with layout {list(layout.sharding_specs)!r}"
            )
        self = cls.__new__(cls)
        self._init(np.array(arr, dtype=dt, order="C", copy=True), layout, shape, name)
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        """The global shape."""
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype."""
        return self._local.dtype

    @property
    def layout(self) -> Layout:
        """The layout."""
        return self._layout

    @property
    def name(self) -> str:
        """The variable's name."""
        return self._name

    @property
    def local(self) -> np.ndarray:
        """This rank's shard (a writable, C-contiguous numpy array)."""
        return self._local

    @property
    def nbytes(self) -> int:
        """Bytes of the global tensor."""
        return int(np.prod(self._shape, dtype=np.int64)) * self.dtype.itemsize

    def numpy(self) -> np.ndarray:
        """The global array, gathered from the shards.

        Collective: call on all ranks of the layout's mesh (unless the variable is
        fully replicated, when no communication is needed).
        """
        if self._layout.is_fully_replicated():
            return self._local.copy()
        mesh = self._layout.mesh
        comm: MPI.Comm = mesh.comm
        out = np.empty(self._shape, dtype=self.dtype)
        size = comm.Get_size()
        slices = [self._layout.slices_at(mesh.coords_of(r), self._shape) for r in range(size)]
        counts = [int(np.prod([s.stop - s.start for s in sl], dtype=np.int64)) for sl in slices]
        flat = allgatherv_array(comm, self._local.reshape(-1), counts)
        displs = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64).tolist()
        for sl, d, c in zip(slices, displs, counts, strict=True):
            out[sl] = flat[d : d + c].reshape([s.stop - s.start for s in sl])
        return out

    def assign(self, value: Any) -> Variable:
        """Set the global value (identical on every rank); each rank keeps its shard.

        Raises:
            ValueError: ``value``'s shape differs from :attr:`shape`.
        """
        arr = np.asarray(value)
        if arr.shape != self._shape:
            raise ValueError(
                f"cannot assign a value of shape {arr.shape!r} to variable {self._name!r} "
                f"of shape {self._shape!r}"
            )
        self._local[...] = arr[self._layout.local_slices(self._shape)]
        return self

    def assign_local(self, value: Any) -> Variable:
        """Set this rank's shard.

        Raises:
            ValueError: ``value``'s shape differs from the local shard's.
        """
        arr = np.asarray(value)
        if arr.shape != self._local.shape:
            raise ValueError(
                f"cannot assign a local value of shape {arr.shape!r} to variable "
                f"{self._name!r} whose local shard has shape {self._local.shape!r}"
            )
        self._local[...] = arr
        return self

    def __copy__(self) -> Variable:
        """The variable itself (as ``copy.copy`` of a TensorFlow variable)."""
        return self

    def __deepcopy__(self, memo: dict) -> Variable:
        """A new variable: a copy of this rank's shard in a new buffer, the same layout
        (and mesh), shape and name. Local: each rank copies its own shard."""
        new = Variable.__new__(type(self))
        memo[id(self)] = new
        new._init(
            np.array(self._local, order="C", copy=True), self._layout, self._shape, self._name
        )
        return new

    def __repr__(self) -> str:
        return (
            f"<hpckpt.Variable {self._name!r} shape={self._shape} dtype={self.dtype} "
            f"layout={list(self._layout.sharding_specs)} local_shape={self._local.shape}>"
        )


def _check_layout(layout: Layout, shape: tuple[int, ...]) -> None:
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be an hpckpt.Layout, got {type(layout).__name__}")
    layout.check_shape(shape)
