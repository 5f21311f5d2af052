"""How a saved tensor is cut into checksummed slices, and how restore targets tile it.

Pure logic (no MPI, no files).

A layout-based tensor is saved in the slices its layout *derives*
(:class:`DerivedSlicing`): one slice per distinct shard (a cell of the layout's
block grid), and, when the shards are held by several replicas and are large, the
shard's rows split among the replicas. Its index records the layout, not the slices:
the index grows with the number of tensors, not with tensors x ranks. Other tensors
(per-rank boxes, Python state) list their slices (:class:`ListedSlicing`).

On restore, the ranks' new slices (:class:`TargetGrid` for a layout,
:class:`TargetList` for per-rank boxes) are intersected with the saved slices: every
saved slice needed is read by exactly one *owner* rank (:func:`owner_of`), which
verifies its checksum and hands the parts to the other ranks that need them.
"""

from __future__ import annotations

import functools
import itertools
import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence

import numpy as np

from ..layout import Blocks, LayoutSpec, block_range

__all__ = [
    "Box",
    "DerivedSlicing",
    "ListedSlicing",
    "Slicing",
    "TargetGrid",
    "TargetList",
    "Targets",
    "block_of",
    "box_intersection",
    "cached_slicing",
    "rows_spec",
    "strided_shards",
    "check_exact_cover",
    "mesh_coords",
    "owner_of",
    "tiling_problem",
    "volume",
]

Box = tuple[tuple[int, ...], tuple[int, ...]]  # (start, shape)


def mesh_coords(rank: int, mesh_shape: Sequence[int]) -> list[int]:
    """The row-major coordinates of ``rank`` in a mesh of ``mesh_shape``."""
    out = []
    for d in reversed(mesh_shape):
        rank, c = divmod(rank, d)
        out.append(c)
    return out[::-1]


def block_of(n: int, parts: int, i: int) -> int:
    """The block (of ``block_range(n, parts, .)``) that holds element ``i`` (non-empty)."""
    base, rem = divmod(n, parts)
    big = rem * (base + 1)
    if i < big:
        return i // (base + 1)
    return rem + (i - big) // base


def volume(shape: Sequence[int]) -> int:
    """Elements of a box of ``shape``."""
    return math.prod(shape)


def box_intersection(a: Box, b: Box) -> Box | None:
    """The intersection of two boxes, ``None`` if it is empty (a 0-d box meets itself)."""
    start, shape = [], []
    for s1, n1, s2, n2 in zip(a[0], a[1], b[0], b[1], strict=True):
        lo, hi = max(s1, s2), min(s1 + n1, s2 + n2)
        if hi <= lo:
            return None
        start.append(lo)
        shape.append(hi - lo)
    return tuple(start), tuple(shape)


def _ranges(bounds: Sequence[int] | None, lo: int, hi: int) -> range:
    """Indices of the blocks ``[bounds[i], bounds[i+1])`` that meet ``[lo, hi)`` (non-empty)."""
    if bounds is None:
        return range(1)
    k = len(bounds) - 1
    first = max(bisect_right(bounds, lo) - 1, 0)
    last = min(bisect_left(bounds, hi), k)
    return range(first, last)


class _Grid:
    """The block grid of a layout over a tensor: cells are the distinct shards."""

    def __init__(self, shape: tuple[int, ...], spec: LayoutSpec) -> None:
        self.shape = shape
        self.spec = spec
        self.bounds = spec.bounds(shape)
        self.dims = tuple(len(b) - 1 if b is not None else 1 for b in self.bounds)
        self.ncells = math.prod(self.dims)

    def cell_box(self, cell: Sequence[int]) -> Box:
        start, shape = [], []
        for n, b, c in zip(self.shape, self.bounds, cell, strict=True):
            if b is None:
                start.append(0)
                shape.append(n)
            else:
                start.append(b[c])
                shape.append(b[c + 1] - b[c])
        return tuple(start), tuple(shape)

    def cells_meeting(self, box: Box) -> Iterator[tuple[int, ...]]:
        """Cells with a non-empty intersection with ``box`` (empty cells never)."""
        rng = [_ranges(b, s, s + n) for b, s, n in zip(self.bounds, box[0], box[1], strict=True)]
        for cell in itertools.product(*rng):
            cb = self.cell_box(cell)
            if volume(cb[1]) and box_intersection(cb, box) is not None:
                yield cell

    def linear(self, cell: Sequence[int]) -> int:
        i = 0
        for c, d in zip(cell, self.dims, strict=True):
            i = i * d + c
        return i

    def unravel(self, i: int) -> tuple[int, ...]:
        out = []
        for d in reversed(self.dims):
            i, c = divmod(i, d)
            out.append(c)
        return tuple(reversed(out))

    def cell_of(self, coords: Sequence[int]) -> tuple[int, ...]:
        """The cell held at mesh ``coords``."""
        out = []
        for s in self.spec.specs:
            out.append(0 if s == "unsharded" else coords[self.spec.dim_names.index(s)])
        return tuple(out)


class DerivedSlicing:
    """The slices a layout-based save writes: derived, never listed.

    Slice ``i`` is sub-block ``i % sub`` of cell ``i // sub`` (cells in row-major order
    of the layout's block grid). ``sub`` is the number of replicas holding each shard
    when the largest shard has at least ``split_bytes`` bytes (each replica then writes
    its block of the shard's rows), else 1 (one replica writes the whole shard).
    Empty slices are counted (their checksum is 0) so that indices are arithmetic.

    With ``rows`` (aggregated writes), a layout that splits a tensor along later
    dimensions (whose shards are strided in the file) is saved in contiguous bands of
    whole rows instead: the slices are those of the layout that keeps only the first
    dimension's sharding, each of its cells split by rows among all the ranks that
    hold a part of it (they exchange their parts before writing).

    Args:
        shape: The tensor's global shape.
        spec: Its layout at save.
        itemsize: Bytes per element.
        split_bytes: The replica-split threshold recorded in the index.
        rows: Contiguous row bands (aggregated writes).
    """

    listed = False

    def __init__(
        self,
        shape: tuple[int, ...],
        spec: LayoutSpec,
        itemsize: int,
        split_bytes: int,
        rows: bool = False,
    ) -> None:
        self.shape = shape
        self.layout = spec
        self.rows = rows
        if rows:
            spec = rows_spec(spec)
        self.spec = spec
        self.grid = _Grid(shape, spec)
        self.replicas = spec.replicas()
        largest = 1
        for n, b in zip(shape, self.grid.bounds, strict=True):
            if b is None:
                largest *= n
            elif isinstance(b, Blocks):
                largest *= b.largest()
            else:
                largest *= max((y - x for x, y in itertools.pairwise(b)), default=0)
        split = self.replicas > 1 and len(shape) >= 1 and largest * itemsize >= split_bytes
        self.sub = self.replicas if (split or (rows and self.replicas > 1 and shape)) else 1
        self.count = self.grid.ncells * self.sub
        self._writers: dict[int, np.ndarray] = {}  # writers() by ordinal % replicas
        self._nonempty_list: list[int] | None = None
        self._shards: dict[int, tuple[int, Box]] = {}  # shard_of() by rank

    def __len__(self) -> int:
        return self.count

    def nonempty_list(self) -> list[int]:
        """1 for each slice that holds an element, else 0 (remembered: a new list each
        call, since callers may modify it)."""
        if self._nonempty_list is None:
            if self.count > 256:
                self._nonempty_list = [int(x) for x in self.nonempty()]
            else:
                self._nonempty_list = [
                    1 if (not sh or volume(sh)) else 0
                    for sh in (self.box(i)[1] for i in range(self.count))
                ]
        return list(self._nonempty_list)

    def nonempty(self) -> np.ndarray:
        """A bool per slice: whether it holds any element (vectorized, no Python loop)."""
        if not self.shape:
            return np.ones(self.count, dtype=bool)
        sizes = [
            np.asarray([n], dtype=np.int64) if b is None else np.diff(np.asarray(b, dtype=np.int64))
            for n, b in zip(self.shape, self.grid.bounds, strict=True)
        ]
        rest = np.ones(1, dtype=np.int64)
        for sz in sizes[1:]:
            rest = np.multiply.outer(rest, sz).reshape(-1)
        rows: np.ndarray = sizes[0]  # rows of each cell along dim 0, repeated over the other dims
        cell_rows = np.repeat(rows, len(rest))
        cell_rest = np.tile(rest, len(rows))
        if self.sub > 1:
            s = np.arange(self.sub, dtype=np.int64)
            rem = cell_rows[:, None] % self.sub
            sub_rows = cell_rows[:, None] // self.sub + (s[None, :] < rem).astype(np.int64)
            return ((sub_rows > 0) & (cell_rest[:, None] > 0)).reshape(-1)
        return (cell_rows > 0) & (cell_rest > 0)

    def box(self, i: int) -> Box:
        """Slice ``i``."""
        cell, s = divmod(i, self.sub)
        start, shape = self.grid.cell_box(self.grid.unravel(cell))
        if self.sub > 1:
            r0, r1 = block_range(shape[0], self.sub, s)
            start = (start[0] + r0, *start[1:])
            shape = (r1 - r0, *shape[1:])
        return start, shape

    def query(self, box: Box) -> list[int]:
        """Indices of the non-empty slices that meet ``box``."""
        out = []
        for cell in self.grid.cells_meeting(box):
            base = self.grid.linear(cell) * self.sub
            if self.sub == 1:
                out.append(base)
                continue
            # the sub-blocks (rows split among replicas) that meet the box's rows
            cstart, cshape = self.grid.cell_box(cell)
            lo = max(box[0][0], cstart[0]) - cstart[0]
            hi = min(box[0][0] + box[1][0], cstart[0] + cshape[0]) - cstart[0]
            first = block_of(cshape[0], self.sub, lo)
            last = block_of(cshape[0], self.sub, hi - 1)
            for s in range(first, last + 1):
                b = self.box(base + s)
                if volume(b[1]) and box_intersection(b, box) is not None:
                    out.append(base + s)
        return out

    def writers(self, ordinal: int) -> np.ndarray:
        """For every mesh rank (row-major), the non-empty slice it writes, or -1 (vectorized).

        The same rule as :meth:`written_by`, for all ranks at once. Remembered (the
        slicing is shared by the tensors of one shape and layout): do not modify it.
        """
        key = ordinal % self.replicas
        got = self._writers.get(key)
        if got is None:
            got = self._writers[key] = self._compute_writers(key)
            got.flags.writeable = False
        return got

    def _compute_writers(self, ordinal: int) -> np.ndarray:
        spec = self.spec
        nranks = math.prod(spec.mesh_shape)
        if nranks <= 64:  # a loop costs less than numpy's calls
            out = []
            for r in range(nranks):
                i = self.written_by(mesh_coords(r, spec.mesh_shape), ordinal)
                out.append(-1 if i is None else i)
            return np.asarray(out, dtype=np.int64)
        ranks = np.arange(nranks, dtype=np.int64)
        coords = np.unravel_index(ranks, spec.mesh_shape)
        cell = np.zeros(nranks, dtype=np.int64)
        for s, k in zip(spec.specs, self.grid.dims, strict=True):
            c = coords[spec.dim_names.index(s)] if s != "unsharded" else 0
            cell = cell * k + c
        rep = np.zeros(nranks, dtype=np.int64)
        for name, k, c in zip(spec.dim_names, spec.mesh_shape, coords, strict=True):
            if name not in spec.specs:
                rep = rep * k + c
        if self.sub > 1:
            idx = cell * self.sub + rep
        else:
            idx = np.where(rep == ordinal % self.replicas, cell, -1)
        full = self.nonempty()
        return np.where((idx >= 0) & full[np.maximum(idx, 0)], idx, -1)

    def shard_of(self, rank: int) -> tuple[int, Box]:
        """The slice holding the shard of mesh rank ``rank`` (row-major) and its box, when
        shards are not split (``sub == 1``). Remembered per rank (the slicing is shared)."""
        got = self._shards.get(rank)
        if got is None:
            i = self.shard_index(mesh_coords(rank, self.spec.mesh_shape))
            got = self._shards[rank] = (i, self.box(i))
        return got

    def shard_index(self, coords: Sequence[int]) -> int:
        """The slice of the shard at mesh ``coords`` when shards are not split (``sub == 1``)."""
        return self.grid.linear(self.grid.cell_of(coords)) * self.sub

    def replica_index(self, coords: Sequence[int]) -> int:
        """The position of mesh ``coords`` among the replicas of its cell (row-major over
        the mesh dimensions the slicing's layout does not use)."""
        rep = 0
        for name, k, c in zip(self.spec.dim_names, self.spec.mesh_shape, coords, strict=True):
            if name not in self.spec.specs:
                rep = rep * k + c
        return rep

    def written_by(self, coords: Sequence[int], ordinal: int) -> int | None:
        """The slice the rank at mesh ``coords`` writes (``None``: none).

        ``ordinal`` is the tensor's position in the save (small replicated shards are
        written round-robin by the replica ``ordinal % replicas``).
        """
        replica_index = self.replica_index(coords)
        base = self.grid.linear(self.grid.cell_of(coords)) * self.sub
        if self.sub > 1:
            i = base + replica_index
        elif replica_index == ordinal % self.replicas:
            i = base
        else:
            return None
        return i if volume(self.box(i)[1]) else None


@functools.lru_cache(maxsize=1 << 16)
def cached_slicing(
    shape: tuple[int, ...], spec: LayoutSpec, itemsize: int, split_bytes: int, rows: bool = False
) -> DerivedSlicing:
    """A shared :class:`DerivedSlicing` (they are immutable; many tensors share one)."""
    return DerivedSlicing(shape, spec, itemsize, split_bytes, rows)


def rows_spec(spec: LayoutSpec) -> LayoutSpec:
    """The layout of row bands: only the first dimension's sharding is kept."""
    if not spec.specs:
        return spec
    first = spec.specs[0]
    splits = tuple((k, b) for k, b in spec.splits if k == first)
    return LayoutSpec(
        (first, *("unsharded",) * (len(spec.specs) - 1)), spec.dim_names, spec.mesh_shape, splits
    )


def strided_shards(shape: Sequence[int], spec: LayoutSpec) -> bool:
    """Whether the layout cuts the tensor along a later dimension (its shards are strided
    in the file, unless they are single rows)."""
    if len(shape) < 2:
        return False
    for d, s in enumerate(spec.specs[1:], start=1):
        if s != "unsharded" and spec.mesh_shape[spec.dim_names.index(s)] > 1 and shape[d] > 0:
            return True
    return False


class ListedSlicing:
    """Slices listed one by one (per-rank boxes, Python state, version-1 indexes).

    Args:
        starts: ``(S, ndim)`` int64 starts.
        shapes: ``(S, ndim)`` int64 shapes.
    """

    listed = True

    def __init__(self, starts: np.ndarray, shapes: np.ndarray) -> None:
        self.starts = np.asarray(starts, dtype=np.int64)
        self.shapes = np.asarray(shapes, dtype=np.int64)
        self.count = len(self.starts)

    def __len__(self) -> int:
        return self.count

    def box(self, i: int) -> Box:
        """Slice ``i``."""
        return tuple(int(x) for x in self.starts[i]), tuple(int(x) for x in self.shapes[i])

    def query(self, box: Box) -> list[int]:
        """Indices of the non-empty slices that meet ``box``."""
        if not self.count:
            return []
        if not box[0]:
            return list(range(self.count))
        lo = np.asarray(box[0], dtype=np.int64)
        hi = lo + np.asarray(box[1], dtype=np.int64)
        ends = self.starts + self.shapes
        mask = (
            np.all(self.starts < hi, axis=1)
            & np.all(ends > lo, axis=1)
            & np.all(self.shapes > 0, axis=1)
        )
        return [int(i) for i in np.flatnonzero(mask)]


Slicing = DerivedSlicing | ListedSlicing


def check_exact_cover(shape: tuple[int, ...], starts: np.ndarray, shapes: np.ndarray) -> str | None:
    """Whether boxes tile ``shape`` exactly once (empty boxes ignored).

    Returns ``None`` if they do, else a description of the first problem (an
    uncovered element, an element covered twice, a box outside the tensor).
    """
    n = volume(shape)
    starts = np.asarray(starts, dtype=np.int64).reshape(len(starts), len(shape))
    shapes = np.asarray(shapes, dtype=np.int64).reshape(len(shapes), len(shape))
    keep = np.all(shapes > 0, axis=1) if len(shape) else np.ones(len(starts), dtype=bool)
    starts, shapes = starts[keep], shapes[keep]
    if not len(shape):
        k = len(starts)
        return None if k == 1 else ("no slice" if k == 0 else f"{k} slices of a scalar")
    if np.any(starts < 0) or np.any(starts + shapes > np.asarray(shape)):
        return "a slice lies outside the tensor"
    total = int(np.prod(shapes, axis=1, dtype=np.int64).sum()) if len(shapes) else 0
    if total != n:
        what = "uncovered elements" if total < n else "elements covered twice"
        return f"slices hold {total} elements of {n} ({what})"
    # equal totals: disjoint <=> covering. Check disjointness on the compressed grid.
    cuts = [
        np.unique(np.concatenate([starts[:, d], starts[:, d] + shapes[:, d]]))
        for d in range(len(shape))
    ]
    if math.prod(len(c) for c in cuts) <= 1 << 22:
        grid = np.zeros(tuple(max(len(c) - 1, 1) for c in cuts), dtype=np.int32)
        for st, sh in zip(starts, shapes, strict=True):
            idx = tuple(
                slice(int(np.searchsorted(c, a)), int(np.searchsorted(c, a + b)))
                for c, a, b in zip(cuts, st, sh, strict=True)
            )
            grid[idx] += 1
        if np.any(grid > 1):
            return "slices overlap"
        return None
    # many distinct boundaries: pairwise on the first axis (sorted sweep)
    if len(starts) > 200_000:
        return f"{len(starts)} slices are too many to check"
    order = np.argsort(starts[:, 0], kind="stable")
    active: list[int] = []
    for i in order:
        active = [j for j in active if starts[j, 0] + shapes[j, 0] > starts[i, 0]]
        for j in active:
            if np.all(
                np.maximum(starts[i], starts[j])
                < np.minimum(starts[i] + shapes[i], starts[j] + shapes[j])
            ):
                return "slices overlap"
        active.append(int(i))
    return None


def _grid_cells(
    shape: tuple[int, ...], boxes: list[Box]
) -> tuple[list[np.ndarray], list[tuple[slice, ...]]]:
    """The compressed grid of ``boxes`` (cut points per dimension) and each box's cells."""
    cuts = [
        np.unique(
            np.asarray([0, n] + [b[0][d] for b in boxes] + [b[0][d] + b[1][d] for b in boxes])
        )
        for d, n in enumerate(shape)
    ]
    cells = [
        tuple(
            slice(int(np.searchsorted(c, a)), int(np.searchsorted(c, a + n)))
            for c, a, n in zip(cuts, b[0], b[1], strict=True)
        )
        for b in boxes
    ]
    return cuts, cells


def tiling_problem(shape: tuple[int, ...], boxes: Sequence[Box]) -> str | None:
    """Whether per-rank boxes tile ``shape`` (``boxes[r]`` is rank ``r``'s), naming ranks.

    Identical boxes are replicas; empty boxes are ignored. Returns ``None`` when the
    distinct boxes cover every element exactly once, else a description naming the
    ranks whose boxes lie outside the tensor, overlap, or leave a gap (with the
    ranks whose boxes border it).
    """
    boxes = [(tuple(int(x) for x in s), tuple(int(x) for x in n)) for s, n in boxes]
    holders: dict[Box, list[int]] = {}
    for r, b in enumerate(boxes):
        if len(b[0]) != len(shape) or len(b[1]) != len(shape):
            return f"rank {r}'s box {list(b[0])} + {list(b[1])} has the wrong number of dimensions"
        if volume(b[1]):
            holders.setdefault(b, []).append(r)
    outside = [
        r
        for b, rs in holders.items()
        for r in rs
        if any(a < 0 or a + n > m for a, n, m in zip(b[0], b[1], shape, strict=True))
    ]
    if outside:
        return f"the boxes of ranks {outside[:8]} lie outside the tensor"
    distinct = list(holders)
    if not shape:
        return None if distinct else "no rank holds the scalar"
    if not volume(shape):
        return None
    cuts, cells = _grid_cells(shape, distinct)
    dims = tuple(len(c) - 1 for c in cuts)
    if math.prod(dims) > 1 << 22:
        problem = check_exact_cover(
            shape,
            np.asarray([b[0] for b in distinct], dtype=np.int64),
            np.asarray([b[1] for b in distinct], dtype=np.int64),
        )
        ranks = sorted(r for rs in holders.values() for r in rs)
        return None if problem is None else f"{problem} (boxes of ranks {ranks[:16]})"
    owner = np.full(dims, -1, dtype=np.int64)
    problems = []
    for i, idx in enumerate(cells):
        region = owner[idx]
        clash = np.unique(region[region >= 0])
        for j in clash[:4].tolist():
            inter = box_intersection(distinct[j], distinct[i])
            assert inter is not None
            problems.append(
                f"the boxes of ranks {holders[distinct[j]]} and {holders[distinct[i]]} overlap "
                f"(at start {list(inter[0])}, shape {list(inter[1])})"
            )
        region[...] = i
        if len(problems) >= 4:
            break
    if not problems:
        gaps = np.argwhere(owner < 0)
        if len(gaps):
            cell = gaps[0]
            start = tuple(int(cuts[d][c]) for d, c in enumerate(cell))
            size = tuple(int(cuts[d][c + 1] - cuts[d][c]) for d, c in enumerate(cell))
            near = sorted(
                r
                for b, rs in holders.items()
                if box_intersection((tuple(a - 1 for a in start), tuple(n + 2 for n in size)), b)
                is not None
                for r in rs
            )
            problems.append(
                f"no rank's box covers the elements at start {list(start)}, shape {list(size)} "
                f"({len(gaps)} uncovered region(s)); the boxes of ranks {near[:8]} border it"
            )
    return "; ".join(problems) if problems else None


class TargetGrid:
    """Where every rank's slice of a tensor lies on restore, from a layout.

    Args:
        shape: The tensor's global shape.
        spec: The layout at restore.

    Mesh coordinates map to ranks row-major (the rank in the mesh's communicator,
    which the restore checks is the rank in the checkpoint's communicator).
    """

    def __init__(self, shape: tuple[int, ...], spec: LayoutSpec) -> None:
        self.shape = shape
        self.spec = spec
        self._strides, self._replica_offsets = _rank_map(spec)

    @functools.cached_property
    def grid(self) -> _Grid:
        """The layout's block grid over the shape (built when first needed: a replicated
        layout's queries do not need it)."""
        return _Grid(self.shape, self.spec)

    def ranks_of(self, cell: Sequence[int]) -> list[int]:
        """The ranks holding ``cell`` (its replicas), in ascending order."""
        base = 0
        for d, s in enumerate(self.spec.specs):
            if s != "unsharded":
                base += cell[d] * self._strides[self.spec.dim_names.index(s)]
        return [base + off for off in self._replica_offsets]

    def box_of(self, rank: int) -> Box:
        """The slice rank ``rank`` holds."""
        return self.grid.cell_box(self.grid.cell_of(mesh_coords(rank, self.spec.mesh_shape)))

    def query(self, box: Box) -> list[tuple[Box, list[int]]]:
        """The non-empty target cells meeting ``box``: ``(cell box, ranks)``."""
        if all(s == "unsharded" for s in self.spec.specs):  # replicated: one cell, every rank
            whole: Box = ((0,) * len(self.shape), tuple(self.shape))
            if not volume(self.shape) or box_intersection(whole, box) is None:
                return []
            return [(whole, list(self._replica_offsets))]
        return [(self.grid.cell_box(c), self.ranks_of(c)) for c in self.grid.cells_meeting(box)]


class TargetList:
    """Where every rank's slice of a tensor lies on restore, from each rank's box.

    Identical boxes are replicas (held by several ranks).
    """

    def __init__(self, shape: tuple[int, ...], boxes: Sequence[Box]) -> None:
        self.shape = shape
        self.boxes = [(tuple(s), tuple(n)) for s, n in boxes]
        cells: dict[Box, list[int]] = {}
        for r, b in enumerate(self.boxes):
            if volume(b[1]):
                cells.setdefault(b, []).append(r)
        self._cells = list(cells.items())
        self._listed = ListedSlicing(
            np.array([c[0][0] for c in self._cells], dtype=np.int64).reshape(
                len(self._cells), len(shape)
            ),
            np.array([c[0][1] for c in self._cells], dtype=np.int64).reshape(
                len(self._cells), len(shape)
            ),
        )

    def box_of(self, rank: int) -> Box:
        """The slice rank ``rank`` holds."""
        return self.boxes[rank]

    def query(self, box: Box) -> list[tuple[Box, list[int]]]:
        """The non-empty target cells meeting ``box``: ``(cell box, ranks)``."""
        return [self._cells[i] for i in self._listed.query(box)]


Targets = TargetGrid | TargetList


@functools.lru_cache(maxsize=1 << 10)
def _rank_map(spec: LayoutSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(strides, replica offsets)`` of a layout's mesh: the rank of mesh coordinates is
    their dot product with the strides (row-major); the ranks holding one cell are its
    base rank plus each replica offset (ascending). Depends on the layout only, so the
    tensors of every shape share it."""
    strides = [1] * len(spec.mesh_shape)
    for i in range(len(strides) - 2, -1, -1):
        strides[i] = strides[i + 1] * spec.mesh_shape[i + 1]
    offs = [0]
    for i, (n, k) in enumerate(zip(spec.dim_names, spec.mesh_shape, strict=True)):
        if n not in spec.specs:
            offs = [o + c * strides[i] for o in offs for c in range(k)]
    return tuple(strides), tuple(sorted(offs))


@functools.lru_cache(maxsize=1 << 12)
def target_grid(shape: tuple[int, ...], spec: LayoutSpec) -> TargetGrid:
    """A shared :class:`TargetGrid` (immutable; the tensors of one shape and layout share it)."""
    return TargetGrid(shape, spec)


def owner_of(slice_box: Box, cells: list[tuple[Box, list[int]]], salt: int) -> int:
    """The rank that reads a saved slice on restore: deterministic on every rank.

    A rank whose new slice contains the saved slice whole reads it straight into
    place; otherwise a rank of a cell holding the largest part of it. Among the tied
    cells and their replicas, the choice rotates with ``salt`` (slice and tensor
    numbers) so that the reads spread over the ranks.
    """
    best = -1
    tied: list[int] = []
    for cbox, ranks in cells:
        inter = box_intersection(cbox, slice_box)
        v = volume(inter[1]) if inter is not None else 0
        if v > best:
            best, tied = v, list(ranks)
        elif v == best:
            tied.extend(ranks)
    assert tied, "a saved slice that no rank needs has no owner"
    return tied[salt % len(tied)]
