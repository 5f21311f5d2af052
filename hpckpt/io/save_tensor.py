"""What a save writes for each tensor: :class:`SaveTensor`, the slices a layout derives,
whether a tensor goes in row bands, and the hash every rank agrees on before a write."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..layout import LayoutSpec
from .index import REPLICA_SPLIT_BYTES
from .slicing import DerivedSlicing, cached_slicing, mesh_coords, strided_shards, volume

__all__ = [
    "ROWS_MIN_BYTES",
    "SaveTensor",
    "derived_slicing",
    "layout_text",
    "structure_hash",
    "use_rows",
    "without_rows",
]


@dataclass
class SaveTensor:
    """A tensor to save: its global description and this rank's pieces to write.

    Attributes:
        key: The checkpoint key.
        dtype: The numpy dtype of the stored bytes.
        shape: The global shape.
        layout: Its layout: the saved slices are derived from it
            (:func:`derived_slicing`), and ``slice_ids`` names the slice of each
            piece. ``None``: per-rank boxes, listed in the index (every rank's
            pieces together must tile the tensor exactly once).
        pieces: ``(start, array)`` hyperslabs this rank writes (arrays of any strides:
            strided views are written and checksummed without a copy of the whole).
        slice_ids: With a layout, the derived slice index of each piece.
        logical_dtype: The dtype the bytes hold if it is not a numpy dtype.
        mesh_rank: This rank's rank in the layout's mesh. When it is the rank in the
            checkpoint's communicator on every rank (the usual case), rank 0 knows from
            the layouts which slices each rank wrote and gathers packed checksum arrays
            only; otherwise it gathers a record per slice.
        ordinal: The ``ordinal`` the pieces were chosen with (``DerivedSlicing.written_by``:
            small replicated shards are written by the replica ``ordinal % replicas``).
        rows: Saved in row bands (:mod:`.aggregate`): ``pieces`` is then this rank's
            whole shard, which the ranks sharing its rows exchange before writing.
        checksums: The save-time checksum of each piece when the pieces are copies
            of saved data (a flush of the local tier to the parallel file system):
            the bytes written must match them, so that the index records checksums
            computed when the state was saved, not when it was copied.
        memo: A dict in which the io layer may keep what it derives from the tensor
            (its pieces' file runs, its text in the structure hash; numbers and text,
            never arrays) for the next save of the same tensor. Its owner (the
            planner's per-Variable memo) gives it only to tensors of the same dtype,
            shape and layout; the key, ``rows`` and the pieces may differ
            (``dataclasses.replace``).
    """

    key: str
    dtype: np.dtype
    shape: tuple[int, ...]
    layout: LayoutSpec | None
    pieces: list[tuple[tuple[int, ...], np.ndarray]]
    slice_ids: list[int] = field(default_factory=list)
    logical_dtype: str | None = None
    mesh_rank: int | None = None
    ordinal: int = 0
    rows: bool = False
    checksums: list[int] | None = None
    memo: dict | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the whole tensor."""
        return math.prod(self.shape) * self.dtype.itemsize


def derived_slicing(
    shape: tuple[int, ...], layout: LayoutSpec, dtype: np.dtype, rows: bool = False
) -> DerivedSlicing:
    """The slices a save writes for a layout-based tensor (what the index derives)."""
    return cached_slicing(tuple(shape), layout, dtype.itemsize, REPLICA_SPLIT_BYTES, rows)


ROWS_MIN_BYTES = 1 << 20


def use_rows(shape: tuple[int, ...], layout: LayoutSpec, dtype: np.dtype) -> bool:
    """Whether a tensor is saved in row bands: its shards are strided in the file and the
    largest is at least ``ROWS_MIN_BYTES`` (smaller ones go through collective MPI-IO).
    Remembered per shape, layout and dtype."""
    return _use_rows(tuple(shape), layout, np.dtype(dtype))


@functools.lru_cache(maxsize=4096)
def _use_rows(shape: tuple[int, ...], layout: LayoutSpec, dtype: np.dtype) -> bool:
    if not strided_shards(shape, layout):
        return False
    sl = derived_slicing(shape, layout, dtype)
    largest = max((volume(sl.box(i)[1]) for i in range(min(len(sl), 64))), default=0)
    return largest * dtype.itemsize >= ROWS_MIN_BYTES


@functools.lru_cache(maxsize=4096)
def layout_text(layout: LayoutSpec) -> str:
    """A layout's text in the structure hashes of saves and restores (remembered: many
    tensors share a layout, often through equal but distinct objects)."""
    return repr((layout.specs, layout.dim_names, layout.mesh_shape, layout.splits))


def structure_hash(tensors: Sequence[SaveTensor]) -> int:
    """A 63-bit hash of what every rank must agree on: keys, dtypes, shapes, layouts,
    and each tensor's ``ordinal`` (its place in the graph picks the replica that writes
    a small replicated tensor: which rank writes which slice).

    The same on every rank for the same structure (no salted ``hash()``).
    """
    parts = []
    for t in tensors:
        memo = t.memo  # a tensor's text, kept for the next save (its fields but the key
        if memo is not None:  # and ``rows`` are fixed for the memo's life, ordinal included)
            got = memo.get("structure")
            if got is not None and got[0] == t.key and got[1] == t.rows:
                parts.append(got[2])
                continue
        lay = t.layout
        text = "boxes" if lay is None else layout_text(lay)
        part = (
            f"{'r' if t.rows else '-'}{t.key!r}|{t.dtype.str}|{t.shape}|{text}|"
            f"{t.logical_dtype}|{t.ordinal}\0"
        )
        if memo is not None:
            memo["structure"] = (t.key, t.rows, part)
        parts.append(part)
    digest = hashlib.blake2b("".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def without_rows(t: SaveTensor) -> SaveTensor:
    """``t`` saved in the slices its layout derives instead of row bands: this rank's
    share of its shard (``pieces`` held the whole shard)."""
    if not t.rows or t.layout is None:
        return t
    sl = derived_slicing(t.shape, t.layout, t.dtype)
    pieces: list[tuple[tuple[int, ...], np.ndarray]] = []
    ids: list[int] = []
    if t.pieces and t.mesh_rank is not None:
        start, local = t.pieces[0]
        i = sl.written_by(mesh_coords(t.mesh_rank, t.layout.mesh_shape), t.ordinal)
        if i is not None:
            b0, b1 = sl.box(i)
            rel = tuple(slice(a - o, a - o + n) for a, o, n in zip(b0, start, b1, strict=True))
            pieces, ids = [(b0, local[rel] if rel else local)], [i]
    return dataclasses.replace(t, pieces=pieces, slice_ids=ids, rows=False)
