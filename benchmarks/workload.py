"""Workloads: sets of sharded hpckpt Variables with deterministic contents.

Every competitor saves the same bytes from the same memory (the Variables'
local shards) and restores into buffers of the same shapes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

import hpckpt
from hpckpt.layout import block_range
from hpckpt.variable import aligned_zeros

from .context import RunContext

__all__ = [
    "Tensor",
    "Workload",
    "big_matrices",
    "factor_2d",
    "heat_field",
    "make_mesh",
    "model",
    "relayout",
]


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).reshape(-1).view(np.uint8)) if a.size else 0


@dataclass
class Tensor:
    """One Variable of a workload and the bookkeeping the competitors need.

    Attributes:
        name: A flat name (a file, dataset and dict key).
        variable: The hpckpt Variable (its local shard is the data every competitor saves).
        crc: CRC-32 of the local shard as created (to check restores).
        write_crc: CRC-32 of the rows this rank writes, as created (for competitors
            that restore only those rows).
    """

    name: str
    variable: hpckpt.Variable
    crc: int
    write_crc: int = 0
    _restore: np.ndarray | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.variable.shape

    @property
    def dtype(self) -> np.dtype:
        return self.variable.dtype

    @property
    def layout(self) -> hpckpt.Layout:
        return self.variable.layout

    @property
    def local(self) -> np.ndarray:
        return self.variable.local

    @property
    def nbytes(self) -> int:
        """Bytes of the global tensor."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def local_slices(self) -> tuple[slice, ...]:
        """This rank's hyperslab of the global tensor."""
        return self.layout.local_slices(self.shape)

    @property
    def write_rows(self) -> tuple[int, int]:
        """Rows ``[r0, r1)`` of the local shard this rank writes.

        Replicas split their shard by rows, like hpckpt does, so that every byte
        is written exactly once.
        """
        a = self.local
        if a.size == 0:
            return 0, 0
        index, count = self.layout.replica_position()
        return block_range(a.shape[0], count, index)

    @property
    def write_start(self) -> tuple[int, ...]:
        """Global start of the rows this rank writes."""
        start = [s.start for s in self.local_slices]
        start[0] += self.write_rows[0]
        return tuple(start)

    @property
    def write_array(self) -> np.ndarray:
        """The (C-contiguous) part of the local shard this rank writes."""
        r0, r1 = self.write_rows
        return self.local[r0:r1]

    @property
    def restore_buf(self) -> np.ndarray:
        """A preallocated array shaped like the local shard that raw competitors read into
        (page-aligned like hpckpt's own shards: the kernel copies into aligned memory
        faster, and the comparison must not handicap the raw ways)."""
        if self._restore is None:
            self._restore = aligned_zeros(self.local.shape, self.local.dtype)
        return self._restore

    def restored_ok(self, a: np.ndarray, *, written_rows: bool = False) -> bool:
        """Whether ``a`` holds this rank's shard (or only its written rows) as created."""
        if written_rows:
            return a.shape == self.write_array.shape and _crc(a) == self.write_crc
        return a.shape == self.local.shape and _crc(a) == self.crc


@dataclass
class Workload:
    """Tensors on one mesh, and an hpckpt Module that tracks them by name."""

    mesh: hpckpt.Mesh
    tensors: list[Tensor]
    description: str

    @property
    def total_bytes(self) -> int:
        """Bytes of all global tensors (the checkpoint's payload)."""
        return sum(t.nbytes for t in self.tensors)

    def root(self) -> hpckpt.Module:
        """A Module tracking every Variable under ``vars/<name>``."""
        m = hpckpt.Module()
        m.vars = {t.name: t.variable for t in self.tensors}
        return m

    def bad_restores(
        self, arrays: Callable[[Tensor], np.ndarray], *, written_rows: bool = False
    ) -> list[str]:
        """Names of the tensors whose restored array (``arrays(t)``) is wrong on this rank."""
        return [
            t.name for t in self.tensors if not t.restored_ok(arrays(t), written_rows=written_rows)
        ]

    def scramble(self) -> None:
        """Zero the restore buffers (before a checked restore)."""
        for t in self.tensors:
            t.restore_buf[...] = 0


def factor_2d(n: int) -> tuple[int, int]:
    """The most square ``(a, b)`` with ``a * b == n`` and ``a >= b``."""
    b = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return n // b, b


def make_mesh(ctx: RunContext, kind: str) -> hpckpt.Mesh:
    """A ``"1d"`` mesh ``x`` or a ``"2d"`` mesh ``(x, y)`` over every rank.

    Collective: call on all ranks.
    """
    if kind == "1d":
        return hpckpt.create_mesh([("x", ctx.size)], comm=ctx.comm)
    if kind == "2d":
        a, b = factor_2d(ctx.size)
        return hpckpt.create_mesh([("x", a), ("y", b)], comm=ctx.comm)
    raise ValueError(f"unknown mesh kind {kind!r} (use 1d or 2d)")


def heat_field(
    shape: tuple[int, int], rows: slice, cols: slice, seed: int, dtype: np.dtype
) -> np.ndarray:
    """A block of a smooth 2-D temperature field, as a heat solver holds one.

    Three hot spots diffused for a while: the heat equation's solution from point
    sources (Gaussians whose width grows with time) on a unit square, plus a cold
    linear background, computed in float64 and stored in ``dtype``. Values depend on
    the global position only, so every decomposition sees the same field.
    """
    rng = np.random.default_rng(seed)
    y = (np.arange(rows.start, rows.stop, dtype=np.float64) + 0.5) / shape[0]
    x = (np.arange(cols.start, cols.stop, dtype=np.float64) + 0.5) / shape[1]
    u = 0.2 + 0.1 * x[None, :] + 0.05 * y[:, None]
    for _ in range(3):
        cy, cx = rng.uniform(0.2, 0.8, 2)
        width = rng.uniform(0.01, 0.05)  # 4 D t
        u = u + np.exp(-((y[:, None] - cy) ** 2 + (x[None, :] - cx) ** 2) / width)
    return u.astype(dtype)


def _new_variable(
    shape: tuple[int, ...],
    layout: hpckpt.Layout,
    dtype: np.dtype,
    name: str,
    seed: int,
    data: str = "random",
) -> Tensor:
    """A Variable whose shard values depend on ``seed`` and the shard's position only.

    Replicas (ranks holding the same hyperslab) therefore hold identical values.
    ``data``: ``"random"`` (uniform floats: incompressible mantissas) or ``"smooth"``
    (:func:`heat_field`, for 2-D float tensors).
    """
    v = hpckpt.Variable.from_local(
        np.empty(layout.local_shape(shape), dtype=dtype), layout, shape, name=name
    )
    rng = np.random.default_rng(
        [seed, zlib.crc32(name.encode())] + [s.start for s in layout.local_slices(shape)]
    )
    if v.local.size:
        if data == "smooth" and dtype.kind == "f" and len(shape) == 2:
            rs, cs = layout.local_slices(shape)
            v.local[...] = heat_field(
                (shape[0], shape[1]), rs, cs, zlib.crc32(name.encode()) + seed, dtype
            )
        elif dtype.kind == "f" and dtype.itemsize in (4, 8):
            rng.random(out=v.local.reshape(-1), dtype=dtype.type)
        else:
            v.local[...] = rng.integers(0, 100, size=v.local.shape).astype(dtype)
    t = Tensor(name, v, _crc(v.local))
    t.write_crc = _crc(t.write_array)
    return t


def big_matrices(
    ctx: RunContext,
    total_bytes: int,
    nvars: int = 4,
    *,
    cols: int = 4096,
    mesh_kind: str = "1d",
    dtype: str = "float32",
    seed: int = 0,
    data: str = "random",
) -> Workload:
    """``nvars`` matrices of ``total_bytes`` in all, sharded on every mesh dimension.

    On a 1-D mesh rows are split over ``x``; on a 2-D mesh rows over ``x`` and
    columns over ``y``. ``data``: ``"random"`` or ``"smooth"`` (a heat field).

    Collective: call on all ranks.
    """
    dt = np.dtype(dtype)
    mesh = make_mesh(ctx, mesh_kind)
    per_var = max(total_bytes // nvars, dt.itemsize)
    cols = max(1, min(cols, per_var // dt.itemsize // max(ctx.size, 1)))
    rows = max(1, per_var // (cols * dt.itemsize))
    specs = ["x", hpckpt.UNSHARDED] if mesh_kind == "1d" else ["x", "y"]
    layout = hpckpt.Layout(specs, mesh)
    tensors = [_new_variable((rows, cols), layout, dt, f"w{i}", seed, data) for i in range(nvars)]
    desc = f"{nvars} x ({rows}, {cols}) {dt.name} ({data}), layout {specs} on mesh {mesh}"
    return Workload(mesh, tensors, desc)


def model(
    ctx: RunContext,
    nsmall: int,
    *,
    min_bytes: int = 1 << 10,
    max_bytes: int = 64 << 10,
    nbig: int = 4,
    big_bytes: int = 16 << 20,
    seed: int = 0,
) -> Workload:
    """A model-like mix: ``nsmall`` tensors of log-uniform size plus ``nbig`` matrices.

    Two thirds of the small tensors are 2-D kernels sharded by rows over ``x``
    (rows a multiple of the rank count; replicated when they have fewer rows than
    ranks), one third are 1-D vectors
    (biases, norm scales), replicated. The big matrices are sharded by rows.
    All float32. Shapes depend on ``seed`` only, values on ``seed`` and the shard.

    Collective: call on all ranks.
    """
    dt = np.dtype(np.float32)
    mesh = make_mesh(ctx, "1d")
    shapes_rng = np.random.default_rng(seed)
    sharded = hpckpt.Layout(["x", hpckpt.UNSHARDED], mesh)
    tensors = []
    sizes = np.exp(shapes_rng.uniform(math.log(min_bytes), math.log(max_bytes), nsmall))
    for i, nb in enumerate(sizes):
        n = max(1, int(nb) // dt.itemsize)
        layer = i // 3
        if i % 3 == 2:
            shape: tuple[int, ...] = (n,)
            layout = hpckpt.Layout.replicated(mesh, 1)
            name = f"l{layer:05d}_bias"
        else:
            cols = int(shapes_rng.choice([16, 32, 64, 128]))
            cols = min(cols, n)
            rows = n // cols
            if rows >= ctx.size:  # whole blocks per rank, as torch DCP shards them too
                rows -= rows % ctx.size
            shape = (rows, cols)
            layout = sharded if rows >= ctx.size else hpckpt.Layout.replicated(mesh, 2)
            name = f"l{layer:05d}_kernel{i % 3}"
        tensors.append(_new_variable(shape, layout, dt, name, seed))
    big_cols = 1024
    for j in range(nbig):
        rows = max(ctx.size, big_bytes // (big_cols * dt.itemsize))
        rows -= rows % ctx.size
        tensors.append(_new_variable((rows, big_cols), sharded, dt, f"embedding{j}", seed))
    desc = (
        f"{nsmall} tensors of {min_bytes >> 10}-{max_bytes >> 10} KiB "
        f"(2/3 row-sharded kernels, 1/3 replicated vectors) + {nbig} x "
        f"{big_bytes >> 20} MiB row-sharded matrices, float32, mesh {mesh}"
    )
    return Workload(mesh, tensors, desc)


def relayout(
    ctx: RunContext, source: Workload, mesh: hpckpt.Mesh, specs: Sequence[str], label: str
) -> Workload:
    """Zero-filled Variables with ``source``'s names and shapes on another layout.

    The CRCs are those of the source's data sliced for the new layout, so that
    :meth:`Workload.bad_restores` checks a resharding restore. (Each rank
    gathers the global tensors once to compute them: small workloads only.)

    Collective: call on all ranks.
    """
    tensors = []
    for t in source.tensors:
        glob = t.variable.numpy()
        layout = hpckpt.Layout(list(specs), mesh)
        v = hpckpt.Variable.from_local(
            np.zeros(layout.local_shape(t.shape), dtype=t.dtype), layout, t.shape, name=t.name
        )
        tensors.append(Tensor(t.name, v, _crc(glob[layout.local_slices(t.shape)])))
        del glob
    return Workload(mesh, tensors, f"{label}: layout {list(specs)} on mesh {mesh}")
