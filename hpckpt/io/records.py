"""The checksum records of a save: each rank's rows, rank 0's rows rebuilt from packed
checksums (``DerivedSlicing.writers``), and the index entries built from them, with the
check that every slice was written exactly once."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import CheckpointError, CorruptCheckpointError
from . import hdf5
from .index import TensorEntry
from .save_tensor import SaveTensor, derived_slicing
from .slicing import ListedSlicing, check_exact_cover

__all__ = ["check_known", "index_entries", "rows_from_layouts", "slice_records"]


def check_known(
    tensors: Sequence[SaveTensor],
    own: list[tuple[int, int, np.ndarray]],
    values: list[int],
    what: str,
) -> None:
    """The written copies match their save-time checksums (``SaveTensor.checksums``)."""
    for (i, j, _), crc in zip(own, values, strict=True):
        known = tensors[i].checksums
        if known is not None and int(known[j]) != crc:
            raise CorruptCheckpointError(
                f"{what}: piece {j} of tensor {tensors[i].key!r} does not match the checksum "
                f"computed when it was saved (its source copy is damaged)"
            )


def rows_from_layouts(
    tensors: Sequence[SaveTensor], crcs: list[np.ndarray], what: str
) -> np.ndarray:
    """Rank 0: ``[tensor, slice, crc, rank]`` rows from each rank's packed checksums.

    Every rank sent the checksums of the derived slices it wrote, in tensor order;
    which slice each rank writes follows from the layouts (``DerivedSlicing.writers``).
    """
    nranks = len(crcs)
    if nranks <= 64:  # a loop costs less than numpy's calls
        lists = [c.tolist() for c in crcs]
        pos = [0] * nranks
        out: list[list[int]] = []
        for i, t in enumerate(tensors):
            if t.layout is None:
                continue
            sl = derived_slicing(t.shape, t.layout, t.dtype, t.rows)
            if math.prod(sl.spec.mesh_shape) != nranks:
                raise CheckpointError(f"{what}: tensor {t.key!r}: its mesh is not the checkpoint's")
            for r, k in enumerate(sl.writers(t.ordinal).tolist()):
                if k < 0:
                    continue
                if pos[r] >= len(lists[r]):
                    raise CheckpointError(
                        f"{what}: ranks sent fewer checksums than their layouts say"
                    )
                out.append([i, k, lists[r][pos[r]], r])
                pos[r] += 1
        if pos != [len(x) for x in lists]:
            raise CheckpointError(f"{what}: ranks sent more checksums than their layouts say")
        return np.asarray(out, dtype=np.int64).reshape(len(out), 4)
    ptr = np.zeros(nranks, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum([len(c) for c in crcs])[:-1])).astype(np.int64)
    flat = np.concatenate(crcs) if crcs else np.zeros(0, dtype=np.uint32)
    parts = []
    for i, t in enumerate(tensors):
        if t.layout is None:
            continue
        w = derived_slicing(t.shape, t.layout, t.dtype, t.rows).writers(t.ordinal)
        if len(w) != nranks:
            raise CheckpointError(f"{what}: tensor {t.key!r}: its mesh is not the checkpoint's")
        who = np.flatnonzero(w >= 0)
        at = starts[who] + ptr[who]
        if np.any(ptr[who] >= np.asarray([len(crcs[k]) for k in who], dtype=np.int64)):
            raise CheckpointError(f"{what}: ranks sent fewer checksums than their layouts say")
        rows = np.empty((len(who), 4), dtype=np.int64)
        rows[:, 0] = i
        rows[:, 1] = w[who]
        rows[:, 2] = flat[at]
        rows[:, 3] = who
        parts.append(rows)
        ptr[who] += 1
    if any(int(ptr[k]) != len(crcs[k]) for k in range(nranks)):
        raise CheckpointError(f"{what}: ranks sent more checksums than their layouts say")
    return np.concatenate(parts) if parts else np.zeros((0, 4), dtype=np.int64)


def _width(tensors: Sequence[SaveTensor]) -> int:
    return max((len(t.shape) for t in tensors if t.layout is None), default=0)


def slice_records(
    tensors: Sequence[SaveTensor],
    own: list[tuple[int, int, np.ndarray]],
    rank: int,
    values: list[int] | None = None,
    *,
    derived_rows: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """This rank's slice records: ``[tensor, slice, crc, rank]`` for layout-based tensors
    (none without ``derived_rows``), ``[tensor, crc, rank, *start, *shape]`` (padded) for
    listed ones."""
    width = _width(tensors)
    derived = np.zeros((0, 4), dtype=np.int64)
    listed = np.zeros((0, 3 + 2 * width), dtype=np.int64)
    if values is None:
        return derived, listed
    d_rows, l_rows = [], []
    for (i, j, a), crc in zip(own, values, strict=True):
        t = tensors[i]
        if t.layout is not None:
            if derived_rows:
                d_rows.append([i, t.slice_ids[j], crc, rank])
        else:
            start = list(t.pieces[j][0])
            row = [i, crc, rank] + [0] * (2 * width)
            row[3 : 3 + len(start)] = start
            row[3 + width : 3 + width + len(start)] = list(a.shape)
            l_rows.append(row)
    if d_rows:
        derived = np.asarray(d_rows, dtype=np.int64)
    if l_rows:
        listed = np.asarray(l_rows, dtype=np.int64)
    return derived, listed


def index_entries(
    tensors: Sequence[SaveTensor],
    names: list[str],
    offsets: list[int | None],
    derived: np.ndarray,
    listed: np.ndarray,
    what: str,
    specs: Sequence[hdf5.DatasetSpec] | None = None,
    *,
    listed_only: bool = False,
) -> dict[str, TensorEntry]:
    """Rank 0: build every tensor's index entry; check that every slice was written once.

    ``specs`` (parallel HDF5 saves) give the chunk shape and filters of compressed tensors.
    With ``listed_only``, only the listed tensors' entries (per-rank boxes) are built.

    ``derived`` rows are ``[tensor, slice, crc, rank, ...]``, ``listed`` rows
    ``[tensor, crc, rank, *start, *shape, ...]`` (padded to the largest rank of a
    listed tensor); trailing columns are ignored. A listed tensor's slices are its
    rows in the order given.
    """
    width = _width(tensors)
    by_tensor_d: dict[int, list[list[int]]] = {}
    for row in derived.tolist():
        by_tensor_d.setdefault(row[0], []).append(row)
    by_tensor_l: dict[int, np.ndarray] = {}
    if len(listed):
        order = np.argsort(listed[:, 0], kind="stable")
        listed = listed[order]
        cuts = np.flatnonzero(np.diff(listed[:, 0])) + 1
        for part in np.split(listed, cuts):
            by_tensor_l[int(part[0, 0])] = part
    entries: dict[str, TensorEntry] = {}
    for i, t in enumerate(tensors):
        nd = len(t.shape)
        if t.layout is not None and listed_only:
            continue
        if t.layout is not None:
            slicing = derived_slicing(t.shape, t.layout, t.dtype, t.rows)
            n = len(slicing)
            crc_list = [0] * n
            seen = [0] * n
            for _, k, crc, _ in by_tensor_d.get(i, ()):
                if not 0 <= k < n:
                    raise CheckpointError(f"{what}: tensor {t.key!r}: a slice number out of range")
                seen[k] += 1
                crc_list[k] = crc
            full = slicing.nonempty_list()
            if seen != full:
                missing = [k for k in range(n) if full[k] and not seen[k]]
                twice = [k for k in range(n) if seen[k] > full[k]]
                raise CheckpointError(
                    f"{what}: tensor {t.key!r} would be committed with holes or overlaps "
                    f"(slices never written: {missing[:8]}, written more than once: {twice[:8]})"
                )
            crcs = np.array(crc_list, dtype=np.uint32)
            entries[t.key] = TensorEntry(
                t.key,
                names[i],
                t.dtype,
                t.shape,
                offsets[i],
                t.layout,
                slicing,
                crcs,
                t.logical_dtype,
                **_storage(specs, i),
            )
        else:
            rows = by_tensor_l.get(i, np.zeros((0, 3 + 2 * width), dtype=np.int64))
            starts = rows[:, 3 : 3 + nd]
            shapes = rows[:, 3 + width : 3 + width + nd]
            problem = check_exact_cover(t.shape, starts, shapes)
            if problem is not None:
                ranks = sorted({int(r) for r in rows[:, 2]})
                raise CheckpointError(
                    f"{what}: the boxes of tensor {t.key!r} written by ranks {ranks} do not tile "
                    f"its shape {t.shape} exactly once ({problem})"
                )
            listed_slicing = ListedSlicing(starts, shapes)
            crcs = rows[:, 1].astype(np.uint32)
            entries[t.key] = TensorEntry(
                t.key,
                names[i],
                t.dtype,
                t.shape,
                offsets[i],
                None,
                listed_slicing,
                crcs,
                t.logical_dtype,
                **_storage(specs, i),
            )
    return entries


def _storage(specs: Sequence[hdf5.DatasetSpec] | None, i: int) -> dict:
    """The chunk shape and filters of tensor ``i``'s dataset (none: contiguous)."""
    if specs is None or specs[i].chunks is None:
        return {}
    return {"chunks": specs[i].chunks, "filters": specs[i].compression}
