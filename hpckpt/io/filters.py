"""Compression: the filter pipeline of a tensor's dataset and its chunk shape (pure logic).

``CheckpointOptions(compression=...)`` names a pipeline: ``"gzip"``, ``"gzip:N"`` or
``"shuffle+gzip:N"`` (``N`` the deflate level, 0-9; ``"gzip"`` alone is level 4,
h5py's default). A compressed tensor is stored as a chunked dataset with HDF5's own
filters (shuffle = filter 2, deflate = filter 1), so h5py, ``h5dump`` and ``h5ls -v``
read it without hpckpt. The index records the pipeline and the chunk shape of each
compressed tensor (``"filters"``, ``"chunks"``; ``"offset"`` is null: a chunked
dataset has no single offset); the data file's dataset must carry exactly that
pipeline and chunk shape (checked by :func:`.hdf5.validate_data_file`).

Checksums are unchanged by compression: they cover the uncompressed C-order bytes of
each saved slice, so every restore verifies the values it hands over whatever the
filters (and a damaged compressed chunk that still inflates is caught as a checksum
mismatch; one that does not inflate as a read error).

Which tensors are compressed: those with at least one dimension and at least
:data:`MIN_COMPRESS_BYTES` bytes; scalars, empty and tiny tensors stay contiguous
(HDF5 cannot chunk a scalar, and a chunk index costs more than a few bytes save).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHUNK_TARGET_BYTES",
    "DEFAULT_GZIP_LEVEL",
    "MIN_COMPRESS_BYTES",
    "Compression",
    "chunk_shape",
    "compressible",
    "parse_compression",
    "pipeline_from_json",
]

DEFAULT_GZIP_LEVEL = 4  # h5py's default for compression="gzip"
MIN_COMPRESS_BYTES = 1024  # smaller tensors stay contiguous
CHUNK_TARGET_BYTES = 1 << 20  # uncompressed bytes per chunk (at most; see chunk_shape)

SHUFFLE_ID = 2  # H5Z_FILTER_SHUFFLE
DEFLATE_ID = 1  # H5Z_FILTER_DEFLATE

_SPEC_RE = re.compile(r"^(shuffle\+)?gzip(?::([0-9]))?$")


@dataclass(frozen=True)
class Compression:
    """A filter pipeline: optional byte shuffle, then deflate at ``level``.

    Attributes:
        shuffle: Apply HDF5's shuffle filter before deflate (groups the bytes of
            each significance together: floats compress better).
        level: The deflate (gzip) level, 0-9.
    """

    shuffle: bool
    level: int

    @property
    def spec(self) -> str:
        """The option string: ``"gzip:4"`` or ``"shuffle+gzip:4"``."""
        return f"{'shuffle+' if self.shuffle else ''}gzip:{self.level}"

    def to_json(self) -> list[dict[str, Any]]:
        """The pipeline as the index records it, in application order."""
        out: list[dict[str, Any]] = []
        if self.shuffle:
            out.append({"filter": "shuffle"})
        out.append({"filter": "deflate", "level": self.level})
        return out

    def hdf5_filters(self, itemsize: int) -> list[tuple[int, tuple[int, ...]]]:
        """``(filter id, client values)`` of each filter as HDF5 stores them.

        HDF5 records the shuffle filter with the element size as its value.
        """
        out: list[tuple[int, tuple[int, ...]]] = []
        if self.shuffle:
            out.append((SHUFFLE_ID, (itemsize,)))
        out.append((DEFLATE_ID, (self.level,)))
        return out


def parse_compression(value: Any) -> Compression | None:
    """The pipeline ``CheckpointOptions(compression=value)`` asks for.

    Raises:
        TypeError: ``value`` is neither ``None`` nor a string.
        ValueError: An unknown pipeline or level (naming the value).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"compression must be None or a string such as 'gzip:4' or 'shuffle+gzip:4', "
            f"got {type(value).__name__} {value!r:.80}"
        )
    m = _SPEC_RE.match(value.strip().lower())
    if m is None:
        raise ValueError(
            f"compression {value!r:.80} is not supported: use None, 'gzip', 'gzip:N' or "
            f"'shuffle+gzip:N' with N a deflate level from 0 to 9"
        )
    level = int(m.group(2)) if m.group(2) is not None else DEFAULT_GZIP_LEVEL
    return Compression(shuffle=m.group(1) is not None, level=level)


def pipeline_from_json(raw: Any) -> Compression:
    """The pipeline an index records (see :meth:`Compression.to_json`).

    Raises:
        ValueError: Anything but ``[{"filter": "shuffle"}]?`` followed by one
            ``{"filter": "deflate", "level": 0-9}``.
    """
    if type(raw) is not list or not 1 <= len(raw) <= 2:
        raise ValueError(f"filters {raw!r:.80} is not a list of one or two filters")
    if not all(type(f) is dict for f in raw):
        raise ValueError(f"filters {raw!r:.80} holds a non-object")
    shuffle = len(raw) == 2
    if shuffle and raw[0] != {"filter": "shuffle"}:
        raise ValueError(f"filters {raw!r:.80}: the first of two filters must be shuffle")
    last = raw[-1]
    level = last.get("level")
    if (
        set(last) != {"filter", "level"}
        or last.get("filter") != "deflate"
        or type(level) is not int
        or not 0 <= level <= 9
    ):
        raise ValueError(f"filters {raw!r:.80}: the last filter must be deflate with level 0-9")
    return Compression(shuffle=shuffle, level=level)


def compressible(shape: Sequence[int], itemsize: int) -> bool:
    """Whether a tensor of ``shape`` is stored compressed when compression is asked."""
    return len(shape) >= 1 and math.prod(shape) * itemsize >= MIN_COMPRESS_BYTES


def chunk_shape(
    shape: Sequence[int],
    itemsize: int,
    bounds: Sequence[Sequence[int] | None] | None = None,
    target: int = CHUNK_TARGET_BYTES,
) -> tuple[int, ...]:
    """The chunk shape of a compressed tensor.

    Along a dimension that the save layout splits (``bounds[d]``: its block
    boundaries), a chunk is at most the largest block, so that most chunks are
    written by one rank (parallel HDF5 sends the other ranks' parts of a shared
    chunk to its owner before filtering it). Then dimensions are cut, leading
    first, until a chunk holds at most ``target`` bytes (whole trailing rows
    keep the compressor's input contiguous).

    Args:
        shape: The tensor's global shape (no zero dimension).
        itemsize: Bytes per element.
        bounds: Per dimension, the layout's block boundaries or ``None``.
        target: Most uncompressed bytes per chunk (unless one element is larger).
    """
    ext = [max(1, int(n)) for n in shape]
    for d, b in enumerate(bounds or ()):
        if b is not None and len(b) > 1:
            ext[d] = max(1, min(ext[d], _largest_block(b)))
    for d in range(len(ext)):
        if math.prod(ext) * itemsize <= target:
            break
        rest = math.prod(ext[d + 1 :]) * itemsize
        ext[d] = max(1, min(ext[d], target // max(rest, 1)))
    return tuple(ext)


def _largest_block(bounds: Sequence[int]) -> int:
    """The largest block between consecutive boundaries (O(1) for a block distribution)."""
    n, parts = getattr(bounds, "n", None), getattr(bounds, "parts", None)
    if isinstance(n, int) and isinstance(parts, int) and parts > 0:  # layout.Blocks
        return -(-n // parts)
    return max(int(hi) - int(lo) for lo, hi in itertools.pairwise(bounds))
