"""The checkpoint index (``P.index.json``): records, serialization, validation.

Pure logic: no MPI, no HDF5, no files. Everything read from disk passes through
:func:`~.index_parse.parse_index`.

Format version 2 (written) keeps the index compact at scale: a layout-based tensor
records its layout (an entry of a shared ``layouts`` table) and its slices are derived
from it (:class:`~.slicing.DerivedSlicing`); checksums are a packed array (base64 of
little-endian uint32, one per slice), decoded only when used. Per-rank boxes and
Python state list their slices. Version 1 (every slice listed with a JSON checksum)
is still read.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..errors import CorruptCheckpointError
from ..layout import LayoutSpec
from .checksum import DEFAULT_ALGORITHM
from .filters import Compression
from .slicing import ListedSlicing, Slicing

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAX_INDEX_BYTES",
    "REPLICA_SPLIT_BYTES",
    "CheckpointIndex",
    "SliceEntry",
    "TensorEntry",
    "check_name",
    "dataset_name_for_key",
    "slice_byte_range",
]

FORMAT_NAME = "hpckpt"
FORMAT_VERSION = 2
READ_VERSIONS = (1, 2)
CHECKSUM_ALGORITHM = DEFAULT_ALGORITHM  # written; every name in ALGORITHMS is read
REPLICA_SPLIT_BYTES = 1 << 20  # shards held by several replicas are split by rows above this

MAX_NDIM = 32
MAX_NAME_LEN = 4096
MAX_INDEX_BYTES = 1 << 30
MAX_RANKS = 1 << 24  # a mesh larger than this is refused as hostile
MAX_LISTED_SLICES = 1 << 22


class SliceEntry(NamedTuple):
    """One saved slice of a tensor: a hyperslab and the checksum of its bytes."""

    start: tuple[int, ...]
    shape: tuple[int, ...]
    checksum: int


def _pack(crcs: np.ndarray) -> str:
    return base64.b64encode(np.asarray(crcs, dtype="<u4").tobytes()).decode("ascii")


class TensorEntry:
    """One tensor of a checkpoint.

    Attributes:
        key: The tensor's checkpoint key (``net/l1/kernel/.ATTRIBUTES/VARIABLE_VALUE``).
        dataset: The name of its dataset at the root of the HDF5 file.
        dtype: The numpy dtype of the stored bytes.
        shape: Its global shape.
        offset: The byte offset of its contiguous data in the HDF5 file
            (``None`` for an empty tensor, which has no storage).
        layout: Its layout at save (``None`` for per-rank boxes and Python state).
        slicing: Its saved slices (derived from ``layout`` or listed).
        logical_dtype: The dtype the bytes hold when it is not a numpy dtype
            (``"bfloat16"``, ...), else ``None``.
        filters: The filter pipeline of a compressed (chunked) dataset, else
            ``None`` (contiguous). A compressed tensor's ``offset`` is ``None``.
        chunks: The chunk shape of a compressed dataset, else ``None``.
    """

    __slots__ = (
        "_crc_array",
        "_crc_packed",
        "chunks",
        "dataset",
        "dtype",
        "filters",
        "key",
        "layout",
        "logical_dtype",
        "offset",
        "shape",
        "slicing",
    )

    def __init__(
        self,
        key: str,
        dataset: str,
        dtype: np.dtype,
        shape: tuple[int, ...],
        offset: int | None,
        layout: LayoutSpec | None,
        slicing: Slicing,
        checksums: np.ndarray | str,
        logical_dtype: str | None = None,
        *,
        filters: Compression | None = None,
        chunks: tuple[int, ...] | None = None,
    ) -> None:
        self.filters = filters
        self.chunks = chunks
        self.key = key
        self.dataset = dataset
        self.dtype = dtype
        self.shape = shape
        self.offset = offset
        self.layout = layout
        self.slicing = slicing
        self.logical_dtype = logical_dtype
        if isinstance(checksums, str):
            self._crc_packed: str | None = checksums
            self._crc_array: np.ndarray | None = None
        else:
            self._crc_packed = None
            self._crc_array = np.asarray(checksums, dtype=np.uint32)

    @property
    def checksums(self) -> np.ndarray:
        """One uint32 checksum per saved slice (decoded on first use).

        Raises:
            CorruptCheckpointError: The packed array is not valid base64 of the right length.
        """
        a = self._crc_array
        if a is None:
            try:
                raw = base64.b64decode(self._crc_packed or "", validate=True)
            except (binascii.Error, ValueError):
                raise CorruptCheckpointError(
                    f"index: tensor {self.key!r} has a malformed checksum array"
                ) from None
            if len(raw) != 4 * len(self.slicing):
                raise CorruptCheckpointError(
                    f"index: tensor {self.key!r} has {len(raw) // 4} checksums for "
                    f"{len(self.slicing)} slices"
                )
            a = np.frombuffer(raw, dtype="<u4")
            if a.dtype != np.uint32:  # a big-endian machine
                a = a.astype(np.uint32)
            self._crc_array = a
        return a

    def packed_checksums(self) -> str:
        """The checksums as stored (base64 of little-endian uint32)."""
        if self._crc_packed is None:
            self._crc_packed = _pack(self.checksums)
        return self._crc_packed

    @property
    def nbytes(self) -> int:
        """Bytes of the whole tensor."""
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def sharding_specs(self) -> tuple[str, ...]:
        """The layout's specs at save (``()`` without a layout)."""
        return self.layout.specs if self.layout is not None else ()

    @property
    def mesh_dim_names(self) -> tuple[str, ...]:
        """The mesh's dimension names at save (``()`` without a layout)."""
        return self.layout.dim_names if self.layout is not None else ()

    @property
    def mesh_shape(self) -> tuple[int, ...]:
        """The mesh's shape at save (``()`` without a layout)."""
        return self.layout.mesh_shape if self.layout is not None else ()

    def slice(self, i: int) -> SliceEntry:
        """Saved slice ``i`` with its checksum."""
        start, shape = self.slicing.box(i)
        return SliceEntry(start, shape, int(self.checksums[i]))

    @property
    def slices(self) -> tuple[SliceEntry, ...]:
        """Every non-empty saved slice with its checksum (materialized: for tools)."""
        out = []
        for i in range(len(self.slicing)):
            s = self.slice(i)
            if math.prod(s.shape) or not s.shape:
                out.append(s)
        return tuple(out)

    def layout_dict(self) -> dict[str, Any] | None:
        """The layout at save as the index records it (``None``: per-rank boxes)."""
        return _layout_json(self.layout) if self.layout is not None else None

    def to_json(self, layout_ids: dict[LayoutSpec, int]) -> dict[str, Any]:
        """The version-2 record (``layout_ids`` maps layouts to the shared table)."""
        d: dict[str, Any] = {
            "dataset": self.dataset,
            "dtype": self.dtype.str,
            "shape": list(self.shape),
            "offset": self.offset,
            "nbytes": self.nbytes,
            "layout": layout_ids[self.layout] if self.layout is not None else None,
        }
        if isinstance(self.slicing, ListedSlicing):
            d["slices"] = np.concatenate(
                [self.slicing.starts, self.slicing.shapes], axis=1
            ).tolist()
        else:
            d["slices"] = None
            if self.slicing.rows:
                d["rows"] = True
        d["checksums"] = self.packed_checksums()
        if self.logical_dtype is not None:
            d["logical_dtype"] = self.logical_dtype
        if self.filters is not None:
            d["filters"] = self.filters.to_json()
            d["chunks"] = list(self.chunks or ())
        return d

    def _fields(self) -> tuple:
        s = self.slicing
        sl: tuple = (
            ("listed", s.starts.tolist(), s.shapes.tolist())
            if isinstance(s, ListedSlicing)
            else ("derived", s.sub, s.rows)
        )
        return (
            self.key,
            self.dataset,
            self.dtype,
            self.shape,
            self.offset,
            self.layout,
            sl,
            self.checksums.tolist(),
            self.logical_dtype,
            self.filters,
            self.chunks,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TensorEntry):
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        return (
            f"TensorEntry({self.key!r}, shape={self.shape}, dtype={self.dtype}, "
            f"slices={len(self.slicing)})"
        )


def _layout_json(spec: LayoutSpec) -> dict[str, Any]:
    d: dict[str, Any] = {
        "sharding_specs": list(spec.specs),
        "mesh": {"dim_names": list(spec.dim_names), "shape": list(spec.mesh_shape)},
    }
    if spec.splits:
        d["splits"] = {k: list(v) for k, v in spec.splits}
    return d


@dataclass
class CheckpointIndex:
    """The parsed content of ``P.index.json``."""

    data_file: str
    data_size: int
    tensors: dict[str, TensorEntry]
    nprocs: int
    created: float
    graph: dict[str, Any] | None = None
    library: dict[str, str] = field(default_factory=dict)
    checksum: str = CHECKSUM_ALGORITHM
    version: int = FORMAT_VERSION
    replica_split_bytes: int = REPLICA_SPLIT_BYTES
    structure_checksum: int | None = None  # of the data file's non-raw bytes (io/template)

    def to_json(self) -> str:
        """The index file's text (always the current format version)."""
        layouts = self.layout_table(self.tensors.values())
        tensors = {k: t.to_json(layouts) for k, t in self.tensors.items()}
        return self.assemble(layouts, json.dumps(tensors, separators=(",", ":")))

    @staticmethod
    def layout_table(entries: Iterable[TensorEntry]) -> dict[LayoutSpec, int]:
        """The index's shared layout table: each distinct layout, numbered in order of use."""
        layouts: dict[LayoutSpec, int] = {}
        for t in entries:
            if t.layout is not None and t.layout not in layouts:
                layouts[t.layout] = len(layouts)
        return layouts

    def assemble(self, layouts: dict[LayoutSpec, int], tensors: str) -> str:
        """The index file's text from its layout table and its ``"tensors"`` JSON text
        (the other fields are this index's; its own ``tensors`` are not read)."""
        doc = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "created": self.created,
            "nprocs": self.nprocs,
            "library": self.library,
            "checksum": self.checksum,
            "replica_split_bytes": self.replica_split_bytes,
            "data_file": self._data_file_json(),
            "layouts": [_layout_json(s) for s in layouts],
        }
        head = json.dumps(doc, separators=(",", ":"))
        graph = json.dumps(self.graph, separators=(",", ":"))
        return f'{head[:-1]},"tensors":{tensors},"graph":{graph}}}'

    def _data_file_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.data_file, "size": self.data_size}
        if self.structure_checksum is not None:
            d["structure_checksum"] = self.structure_checksum
        return d


def slice_byte_range(
    entry: TensorEntry, start: tuple[int, ...], shape: tuple[int, ...]
) -> tuple[int, int]:
    """The file bytes ``[lo, hi)`` spanned by a hyperslab of a tensor (row-major storage).

    For a compressed (chunked) tensor: the range within its uncompressed values.
    """
    base = entry.offset or 0
    isz = entry.dtype.itemsize
    if not entry.shape:
        return base, base + isz
    strides = [math.prod(entry.shape[i + 1 :]) for i in range(len(entry.shape))]
    first = sum(a * k for a, k in zip(start, strides, strict=True))
    last = sum((a + max(m - 1, 0)) * k for a, m, k in zip(start, shape, strides, strict=True))
    return base + first * isz, base + (last + 1) * isz


def check_name(name: Any, what: str) -> str:
    """Validate a key or dataset name read from disk (no NUL, no ``..``, not absolute).

    Raises:
        CorruptCheckpointError: The name is unsafe.
    """
    if not isinstance(name, str) or not name:
        raise CorruptCheckpointError(f"{what} {name!r} is not a non-empty string")
    if len(name) > MAX_NAME_LEN:
        raise CorruptCheckpointError(f"{what} {name[:64]!r}... is longer than {MAX_NAME_LEN}")
    if "\x00" in name:
        raise CorruptCheckpointError(f"{what} {name!r} contains NUL")
    if name.startswith("/") or "\\" in name:
        raise CorruptCheckpointError(f"{what} {name!r} is an absolute path or has a backslash")
    if ".." in name.split("/"):
        raise CorruptCheckpointError(f"{what} {name!r} contains '..'")
    return name


def dataset_name_for_key(key: str) -> str:
    """The flat HDF5 dataset name for a checkpoint key (reversible, no groups).

    ``%`` and ``.`` are percent-encoded, then ``/`` becomes ``.``; the common
    ``/.ATTRIBUTES/VARIABLE_VALUE`` suffix is dropped. So
    ``net/l1/kernel/.ATTRIBUTES/VARIABLE_VALUE`` is stored as ``net.l1.kernel``.
    """
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    base = key[: -len(suffix)] if key.endswith(suffix) else key + "%"
    return base.replace("%", "%25").replace(".", "%2E").replace("/", ".") if base else "%"
