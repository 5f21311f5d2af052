"""Variables: a global tensor of which each rank keeps its shard (a layout's block, or any box).

A Variable's shard (:attr:`Variable.local`) is either its own array or, with
``from_local(..., copy=False)``, the caller's array itself (any strided numpy view,
or a CPU object with ``__dlpack__`` or the buffer protocol, converted without a copy).
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Sequence
from typing import Any

import numpy as np
from mpi4py import MPI

from ._dist import allgather_json, allgatherv_array
from .dtypes import check_dtype
from .layout import Layout
from .mesh import default_mesh

__all__ = [
    "Variable",
    "aligned_copy",
    "aligned_empty",
    "aligned_zeros",
    "as_local_array",
    "check_dtype",
]


def as_local_array(value: Any, copy: bool) -> np.ndarray:
    """``value`` as a numpy array: the same memory when ``copy`` is False.

    Without a copy, ``value`` must be a numpy array (any strides), or a CPU object
    exporting ``__dlpack__`` (``numpy.from_dlpack``) or the buffer protocol
    (``numpy.asarray(memoryview(value))``).

    Raises:
        TypeError: ``copy`` is False and ``value`` offers none of these.
    """
    if isinstance(value, np.ndarray):
        return value
    if not copy:
        if hasattr(value, "__dlpack__"):
            try:
                return np.from_dlpack(value)
            except (TypeError, BufferError, RuntimeError, ValueError) as e:
                raise TypeError(
                    f"cannot use {type(value).__name__} without a copy through DLPack: {e}"
                ) from None
        try:
            mv = memoryview(value)
        except TypeError:
            raise TypeError(
                f"copy=False needs a numpy array, or an object with __dlpack__ or the buffer "
                f"protocol; got {type(value).__name__}"
            ) from None
        return np.asarray(mv)
    return np.asarray(value)


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(n) for n in shape)
    except TypeError:
        raise ValueError(f"global_shape must be a sequence of ints, got {shape!r}") from None
    if any(n < 0 for n in out):
        raise ValueError(f"global_shape {out!r} has a negative size")
    return out


def _check_offset(
    offset: Sequence[int] | None, local: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[int, ...]:
    """The start of this rank's box, checked against the global shape."""
    if offset is None:
        if local == shape:
            return (0,) * len(shape)
        raise ValueError(
            f"from_local without a layout needs offset= (the start of this rank's box): the "
            f"local value of shape {local!r} is not the whole {shape!r} tensor"
        )
    try:
        off = tuple(int(x) for x in offset)
    except TypeError:
        raise ValueError(f"offset must be a sequence of ints, got {offset!r}") from None
    if len(off) != len(shape) or len(local) != len(shape):
        raise ValueError(
            f"offset {off!r} and the local value of shape {local!r} must both have one entry "
            f"per dimension of the {shape!r} tensor"
        )
    if any(o < 0 or o + n > g for o, n, g in zip(off, local, shape, strict=True)):
        raise ValueError(
            f"the box at offset {off!r} of shape {local!r} does not fit in the {shape!r} tensor"
        )
    return off


def _mismatch_message(arr: np.ndarray, layout: Layout, shape: tuple[int, ...]) -> str:
    want = layout.local_shape(shape)
    rule = (
        f"the layout's own splits {layout.splits!r}"
        if layout.splits
        else "the block rule (a dimension of n elements over k ranks: the first n % k blocks "
        "get n // k + 1 elements, the others n // k)"
    )
    return (
        f"local value of shape {arr.shape!r} does not match the local shape {want!r} that "
        f"layout {list(layout.sharding_specs)!r} gives this rank (mesh coordinates "
        f"{layout.mesh.coords!r}) of a {shape!r} tensor under {rule}. If your code splits "
        f"differently (e.g. the remainder on the last rank), state your boundaries with "
        f"Layout(..., splits={{mesh dim: [0, ..., n]}}), or pass offset=<start of this "
        f"rank's box> and no layout (any box per rank)"
    )


ALIGN_MIN_BYTES = 1 << 20
"""Arrays of at least this many bytes that hpckpt allocates are page-aligned."""

PAGE_BYTES = mmap.PAGESIZE


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A new uninitialized C-ordered array, page-aligned when it is large.

    The kernel copies file data into page-aligned memory 2-3x faster than into the
    16-byte-aligned blocks ``malloc`` returns for large numpy arrays (``preadv`` of a
    warm file here: 4.5 GiB/s against 1.7 GiB/s), so the shards and the restore scratch
    hpckpt allocates are page-aligned: a view of a numpy allocation one page larger,
    which keeps numpy's transparent-huge-page advice (one fault per 2 MiB instead of
    one per 4 KiB page when it is first written).
    """
    dt = np.dtype(dtype)
    count = math.prod(shape)
    nbytes = count * dt.itemsize
    if nbytes < ALIGN_MIN_BYTES:
        return np.empty(shape, dtype=dt)
    raw = np.empty(nbytes + PAGE_BYTES, dtype=np.uint8)
    skip = -raw.ctypes.data % PAGE_BYTES
    return raw[skip : skip + nbytes].view(dt).reshape(shape)


def aligned_copy(value: Any, dtype: Any) -> np.ndarray:
    """A C-ordered copy of ``value`` as ``dtype`` in an :func:`aligned_empty` array."""
    src = np.asarray(value, dtype=dtype)
    out = aligned_empty(src.shape, src.dtype)
    out[...] = src
    return out


def aligned_zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An :func:`aligned_empty` array of zeros."""
    out = aligned_empty(shape, dtype)
    out.fill(0)
    return out


class Variable:
    """A global tensor of which each rank keeps a shard.

    Every rank passes the same global ``initial_value``; each keeps only the shard
    its layout assigns to it (:attr:`local`). :meth:`from_local` builds a Variable
    from each rank's own shard instead: a layout's block, or any box (``offset``).

    Args:
        initial_value: The global array (identical on every rank), or a scalar.
        layout: How the tensor is split over a mesh. ``None`` means replicated
            on the default 1-D mesh over ``MPI.COMM_WORLD`` (created collectively
            on first use).
        dtype: Cast ``initial_value`` to this dtype (bool, numeric, or an
            ``ml_dtypes`` float such as ``bfloat16``).
        name: A name for messages and ``repr``.

    Raises:
        TypeError: The dtype is not supported.
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
        local = aligned_copy(value[layout.local_slices(value.shape)], dt)
        self._init(local, layout, value.shape, name)

    def _init(
        self,
        local: np.ndarray,
        layout: Layout | None,
        global_shape: tuple[int, ...],
        name: str | None,
        offset: tuple[int, ...] | None = None,
        comm: MPI.Comm | None = None,
    ) -> None:
        self._local = local
        self._layout = layout
        self._shape = tuple(global_shape)
        self._name = name if name is not None else "Variable"
        self._start: tuple[int, ...] | None = offset  # the box's start (layouts: on first use)
        self._comm = comm if layout is None else None
        # the save planner's memo of this Variable's pieces (checkpoint.save_plan.SaveMemo)
        self._save_memo: Any = None

    @property
    def local_start(self) -> tuple[int, ...]:
        """The global index of this rank's shard's first element (same as :attr:`offset`)."""
        st = self._start
        if st is None:
            assert self._layout is not None
            st = self._start = tuple(s.start for s in self._layout.local_slices(self._shape))
        return st

    @property
    def offset(self) -> tuple[int, ...]:
        """The start of this rank's box in the global array."""
        return self.local_start

    @property
    def comm(self) -> MPI.Comm:
        """The communicator over which the shards are spread (the layout's mesh's)."""
        if self._layout is not None:
            return self._layout.mesh.comm
        assert self._comm is not None
        return self._comm

    @classmethod
    def from_local(
        cls,
        local_value: Any,
        layout: Layout | None = None,
        global_shape: Sequence[int] | None = None,
        name: str | None = None,
        *,
        offset: Sequence[int] | None = None,
        copy: bool = True,
        comm: MPI.Comm | None = None,
    ) -> Variable:
        """Build a Variable from each rank's own shard.

        Either a ``layout`` says where each rank's shard lies (its shape must be
        ``layout.local_shape(global_shape)``), or, without a layout, ``offset`` gives
        the start of this rank's box: any box per rank (load-balanced, non-Cartesian);
        ranks with identical boxes hold replicas. The boxes must tile the global shape
        (no gap, no overlap): a save checks it on all ranks.

        Args:
            local_value: This rank's shard.
            layout: The layout, or ``None`` for per-rank boxes.
            global_shape: The global tensor's shape.
            name: A name for messages and ``repr``.
            offset: Without a layout: the start of this rank's box (default: the
                origin, when the shard is the whole tensor).
            copy: ``False``: keep ``local_value`` itself as :attr:`local` (no copy):
                a numpy array of any strides (a view such as ``u[1:-1, 1:-1]`` of a
                field with ghost cells), or a CPU object with ``__dlpack__`` or the
                buffer protocol. Saves read from it, restores write into it.
            comm: Without a layout: the communicator of the ranks holding the boxes
                (default ``MPI.COMM_WORLD``); its size must be the checkpoint's.

        Raises:
            ValueError: The shard's shape does not match the layout (the message
                names the block rule and how to state other boundaries), the box does
                not fit, or ``layout`` and ``offset`` are both given.
            TypeError: The dtype is not supported, or ``copy=False`` and the value
                cannot be used without a copy.
        """
        if global_shape is None:
            raise ValueError("from_local needs global_shape (the whole tensor's shape)")
        shape = _check_shape(global_shape)
        arr = as_local_array(local_value, copy)
        dt = check_dtype(arr.dtype)
        if copy:
            arr = aligned_copy(arr, dt)
        elif arr.dtype != dt:
            raise TypeError(
                f"copy=False needs native byte order, got dtype {arr.dtype.str!r} (use copy=True)"
            )
        self = cls.__new__(cls)
        if layout is not None:
            if offset is not None or comm is not None:
                raise ValueError(
                    "from_local takes either a layout or a box (offset=, comm=), not both"
                )
            _check_layout(layout, shape)
            if arr.shape != layout.local_shape(shape):
                raise ValueError(_mismatch_message(arr, layout, shape))
            self._init(arr, layout, shape, name)
        else:
            off = _check_offset(offset, arr.shape, shape)
            self._init(arr, None, shape, name, off, comm if comm is not None else MPI.COMM_WORLD)
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
    def layout(self) -> Layout | None:
        """The layout (``None`` for a Variable of per-rank boxes, see :meth:`from_local`)."""
        return self._layout

    @property
    def name(self) -> str:
        """The variable's name."""
        return self._name

    @property
    def local(self) -> np.ndarray:
        """This rank's shard: a writable numpy array (the caller's own with ``copy=False``)."""
        return self._local

    @local.setter
    def local(self, value: Any) -> None:
        """Re-point the Variable to another buffer of the same shape and dtype (no copy).

        Raises:
            ValueError: The shape or dtype differs.
            TypeError: ``value`` cannot be used without a copy.
        """
        arr = as_local_array(value, copy=False)
        if arr.shape != self._local.shape or arr.dtype != self._local.dtype:
            raise ValueError(
                f"variable {self._name!r}: cannot re-point its shard of shape "
                f"{self._local.shape!r} and dtype {self._local.dtype} to an array of shape "
                f"{arr.shape!r} and dtype {arr.dtype}"
            )
        self._local = arr

    @property
    def nbytes(self) -> int:
        """Bytes of the global tensor."""
        return int(np.prod(self._shape, dtype=np.int64)) * self.dtype.itemsize

    def numpy(self) -> np.ndarray:
        """The global array, gathered from the shards.

        Collective: call on all ranks of the layout's mesh (unless the variable is
        fully replicated, when no communication is needed), or of :attr:`comm` for
        per-rank boxes.
        """
        lay = self._layout
        if lay is not None and lay.is_fully_replicated():
            return np.array(self._local, order="C", copy=True)
        comm = self.comm
        size = comm.Get_size()
        if lay is not None:
            mesh = lay.mesh
            slices = [lay.slices_at(mesh.coords_of(r), self._shape) for r in range(size)]
        else:
            boxes = allgather_json(comm, [list(self.local_start), list(self._local.shape)])
            slices = [
                tuple(slice(a, a + n) for a, n in zip(st, sh, strict=True)) for st, sh in boxes
            ]
        out = np.empty(self._shape, dtype=self.dtype)
        counts = [int(np.prod([s.stop - s.start for s in sl], dtype=np.int64)) for sl in slices]
        flat = allgatherv_array(comm, np.ascontiguousarray(self._local).reshape(-1), counts)
        displs = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64).tolist()
        for sl, d, c in zip(slices, displs, counts, strict=True):
            out[sl] = flat[d : d + c].reshape([s.stop - s.start for s in sl])
        return out

    def _global_slices(self) -> tuple[slice, ...]:
        return tuple(
            slice(a, a + n) for a, n in zip(self.local_start, self._local.shape, strict=True)
        )

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
        self._local[...] = arr[self._global_slices()]
        return self

    def assign_local(self, value: Any) -> Variable:
        """Set this rank's shard (copied into :attr:`local`).

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

    def zeros_like(self, name: str | None = None) -> Variable:
        """A new Variable of zeros with the same shape, dtype and layout (or box)."""
        new = Variable.__new__(Variable)
        new._init(
            aligned_zeros(self._local.shape, self.dtype),
            self._layout,
            self._shape,
            name,
            self._start if self._layout is None else None,
            self._comm,
        )
        return new

    def __copy__(self) -> Variable:
        """The variable itself (as ``copy.copy`` of a TensorFlow variable)."""
        return self

    def __deepcopy__(self, memo: dict) -> Variable:
        """A new variable: a copy of this rank's shard in a new buffer, the same layout
        (and mesh) or box, shape and name. Local: each rank copies its own shard."""
        new = Variable.__new__(type(self))
        memo[id(self)] = new
        new._init(
            aligned_copy(self._local, self.dtype),
            self._layout,
            self._shape,
            self._name,
            self._start if self._layout is None else None,
            self._comm,
        )
        return new

    def __repr__(self) -> str:
        where = (
            f"layout={list(self._layout.sharding_specs)}"
            if self._layout is not None
            else f"offset={self.local_start}"
        )
        return (
            f"<hpckpt.Variable {self._name!r} shape={self._shape} dtype={self.dtype} "
            f"{where} local_shape={self._local.shape}>"
        )


def _check_layout(layout: Layout, shape: tuple[int, ...]) -> None:
    if not isinstance(layout, Layout):
        raise TypeError(f"layout must be an hpckpt.Layout, got {type(layout).__name__}")
    layout.check_shape(shape)
