"""Rank 0's index for a save whose structure it has committed before.

A save of the same tensors (keys, dtypes, shapes, layouts, options: the structure
hash every rank agrees on) writes an index that differs from the last one only in
the checksums of the layout-based tensors, in the per-rank-box (listed) tensors and
in a few per-save fields (time, data file, graph). :class:`IndexTemplate` keeps the
rest as text, split around each checksum field, and where each rank's packed
checksums go; rendering scatters the checksums with numpy and joins strings, instead
of rebuilding every rank's slice records and every tensor's entry.

The check that every slice is written exactly once depends on the layouts only: it
ran (``records.rows_from_layouts``, ``records.index_entries``) when the template was
made, and the template records the writer assignment from those very rows. Each save still checks
that every rank sent exactly as many checksums as its layouts say. The rendered text
equals what :meth:`.index.CheckpointIndex.to_json` makes of the same entries.
Pure logic: no MPI, no HDF5.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError
from .index import CheckpointIndex, TensorEntry
from .save_tensor import SaveTensor

__all__ = ["IndexTemplate"]

_SEP = (",", ":")
_FIELD = '"checksums":""'


# A layout-based tensor's entry: ``(text before its checksums, their first and last
# positions in the flat checksum array, text after)``. A plain tuple of strings and
# ints: Python's garbage collector stops tracking it, however many tensors there are.
_Fixed = tuple[str, int, int, str]


@dataclass
class IndexTemplate:
    """The index text of a structure, less the per-save parts.

    Attributes:
        counts: Checksums each rank sends (its layout slices, in tensor order).
        dest: Per rank, where its checksums go in the flat array of all layout slices.
        total: Slices of all layout-based tensors.
        parts: Per tensor in index order: its fixed text, or ``None`` for a listed
            tensor (its entry is made at each save).
        layouts: The index's layout table.
        bands: Per tensor, whether it was saved in row bands.
    """

    counts: list[int]
    dest: list[np.ndarray]
    total: int
    parts: list[_Fixed | None]
    layouts: dict
    bands: list[bool]

    @classmethod
    def build(
        cls,
        tensors: Sequence[SaveTensor],
        entries: dict[str, TensorEntry],
        rows: np.ndarray,
        nranks: int,
    ) -> IndexTemplate:
        """The template of a committed save: ``tensors`` in index order, their
        ``entries`` (checked exactly-once) and the ``[tensor, slice, crc, rank]`` rows
        they were built from (``records.rows_from_layouts``: in tensor order, so each
        rank's rows are in the order of the checksums it sends)."""
        layouts = CheckpointIndex.layout_table(entries.values())
        total = 0
        first = np.full(len(tensors), -1, dtype=np.int64)  # a tensor's first position
        parts: list[_Fixed | None] = []
        for i, t in enumerate(tensors):
            e = entries[t.key]
            if t.layout is None:
                parts.append(None)
                continue
            n = len(e.slicing)
            first[i] = total
            d = e.to_json(layouts)
            d["checksums"] = ""
            text = f"{json.dumps(t.key)}:{json.dumps(d, separators=_SEP)}"
            # the one unescaped '"checksums":""' of the text is the field's (a quote
            # inside a JSON string is escaped, and no nested object has that key)
            cut = text.index(_FIELD) + len(_FIELD) - 1
            parts.append((text[:cut], total, total + n, text[cut:]))
            total += n
        # where each rank's checksums go: its rows' positions, in its sending order
        rows = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        counts = np.bincount(rows[:, 3], minlength=nranks)
        order = np.argsort(rows[:, 3], kind="stable")
        at = (first[rows[:, 0]] + rows[:, 1])[order]
        dest = np.split(at, np.cumsum(counts)[:-1])
        return cls(counts.tolist(), dest, total, parts, layouts, [t.rows for t in tensors])

    def fits(self, tensors: Sequence[SaveTensor]) -> bool:
        """Whether the template describes these tensors of its structure: the same ones
        are saved in row bands (a save with a strided shard that is not a contiguous
        array saves none in bands: other slices, other writers)."""
        return [t.rows for t in tensors] == self.bands

    def render(
        self,
        index: CheckpointIndex,
        crcs: Sequence[np.ndarray],
        listed: dict[str, TensorEntry],
        keys: Sequence[str],
        what: str,
    ) -> str:
        """The index text: ``index``'s per-save fields (its ``tensors`` are ignored),
        each rank's packed checksums ``crcs`` and the ``listed`` tensors' entries;
        ``keys`` are the tensors in index order.

        Raises:
            CheckpointError: A rank sent another number of checksums than its layouts say.
        """
        if len(crcs) != len(self.counts):
            raise CheckpointError(
                f"{what}: checksums from {len(crcs)} ranks, not {len(self.counts)}"
            )
        flat = np.zeros(self.total, dtype="<u4")
        for r, (c, n) in enumerate(zip(crcs, self.counts, strict=True)):
            if len(c) != n:
                raise CheckpointError(
                    f"{what}: rank {r} sent {len(c)} checksums where its layouts say {n}"
                )
            flat[self.dest[r]] = c
        raw = flat.tobytes()
        out = []
        for key, p in zip(keys, self.parts, strict=True):
            if p is None:
                e = listed[key]
                out.append(
                    f"{json.dumps(key)}:{json.dumps(e.to_json(self.layouts), separators=_SEP)}"
                )
            else:
                before, lo, hi, after = p
                b64 = base64.b64encode(raw[4 * lo : 4 * hi]).decode("ascii")
                out.append(f"{before}{b64}{after}")
        return index.assemble(self.layouts, "{" + ",".join(out) + "}")
