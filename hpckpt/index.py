"""The checkpoint index (``P.index.json``): dataclasses, serialization, validation.

Pure logic: no MPI, no HDF5. Everything read from disk passes through
:func:`parse_index`, which refuses anything that does not match the schema with
:class:`~hpckpt.errors.CorruptCheckpointError`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ._checksum import ALGORITHMS, DEFAULT_ALGORITHM
from .errors import CorruptCheckpointError
from .layout import validate_specs

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointIndex",
    "SliceEntry",
    "TensorEntry",
    "check_name",
    "dataset_name_for_key",
    "parse_index",
    "slice_byte_range",
]

FORMAT_NAME = "hpckpt"
FORMAT_VERSION = 1
CHECKSUM_ALGORITHM = DEFAULT_ALGORITHM  # written; every name in ALGORITHMS is read

MAX_NDIM = 32
MAX_NAME_LEN = 4096
MAX_INDEX_BYTES = 1 << 30
_DTYPE_RE = re.compile(r"^[<>|=][biufc][0-9]{1,2}$")
DATA_FILE_RE = re.compile(r"^[^/\\\x00]+\.data-[0-9a-f]{8,64}\.h5$")


class SliceEntry(NamedTuple):
    """One saved slice of a tensor: a hyperslab and the checksum of its bytes."""

    start: tuple[int, ...]
    shape: tuple[int, ...]
    checksum: int

    def to_json(self, algorithm: str = CHECKSUM_ALGORITHM) -> dict[str, Any]:
        return {"start": list(self.start), "shape": list(self.shape), algorithm: self.checksum}


class TensorEntry(NamedTuple):
    """One tensor of a checkpoint (an immutable record, cheap to build by the thousand).

    Attributes:
        key: The tensor's checkpoint key (``net/l1/kernel/.ATTRIBUTES/VARIABLE_VALUE``).
        dataset: The name of its dataset at the root of the HDF5 file.
        dtype: Its numpy dtype.
        shape: Its global shape.
        offset: The byte offset of its contiguous data in the HDF5 file
            (``None`` for an empty tensor, which has no storage).
        sharding_specs: Its layout at save.
        mesh_dim_names: The mesh's dimension names at save.
        mesh_shape: The mesh's shape at save.
        slices: The slices written at save, with their checksums.
    """

    key: str
    dataset: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int | None
    sharding_specs: tuple[str, ...]
    mesh_dim_names: tuple[str, ...]
    mesh_shape: tuple[int, ...]
    slices: tuple[SliceEntry, ...] = ()

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def layout_dict(self) -> dict[str, Any]:
        return {
            "sharding_specs": list(self.sharding_specs),
            "mesh": {"dim_names": list(self.mesh_dim_names), "shape": list(self.mesh_shape)},
        }

    def to_json(self, algorithm: str = CHECKSUM_ALGORITHM) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "dtype": self.dtype.str,
            "shape": list(self.shape),
            "offset": self.offset,
            "nbytes": self.nbytes,
            "layout": self.layout_dict(),
            "slices": [s.to_json(algorithm) for s in self.slices],
        }


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

    def to_json(self) -> str:
        doc = {
            "format": FORMAT_NAME,
            "version": self.version,
            "created": self.created,
            "nprocs": self.nprocs,
            "library": self.library,
            "checksum": self.checksum,
            "data_file": {"name": self.data_file, "size": self.data_size},
            "tensors": {k: t.to_json(self.checksum) for k, t in self.tensors.items()},
            "graph": self.graph,
        }
        return json.dumps(doc, separators=(",", ":"))


def slice_byte_range(entry: TensorEntry, s: SliceEntry) -> tuple[int, int]:
    """The file bytes ``[lo, hi)`` spanned by a saved slice of a tensor (row-major storage)."""
    if not entry.shape:
        lo = entry.offset or 0
        return lo, lo + entry.dtype.itemsize
    strides = [math.prod(entry.shape[i + 1 :]) for i in range(len(entry.shape))]
    first = sum(a * k for a, k in zip(s.start, strides, strict=True))
    last = sum((a + max(m - 1, 0)) * k for a, m, k in zip(s.start, s.shape, strides, strict=True))
    isz = entry.dtype.itemsize
    base = entry.offset or 0
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


# --- parsing -----------------------------------------------------------------


def _req(d: dict, name: str, typ: type | tuple[type, ...], where: str) -> Any:
    if name not in d:
        raise CorruptCheckpointError(f"index: {where} lacks {name!r}")
    v = d[name]
    if (isinstance(v, bool) and typ is not bool) or not isinstance(v, typ):
        raise CorruptCheckpointError(f"index: {where}.{name} has the wrong type ({v!r:.80})")
    return v


def _int_list(v: Any, where: str, *, lo: int = 0, max_len: int = MAX_NDIM) -> tuple[int, ...]:
    if not isinstance(v, list) or len(v) > max_len:
        raise CorruptCheckpointError(f"index: {where} is not a list of at most {max_len} ints")
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or x < lo or x >= 1 << 62:
            raise CorruptCheckpointError(f"index: {where} holds a bad value {x!r}")
    return tuple(v)


def _parse_dtype(s: Any, where: str) -> np.dtype:
    if not isinstance(s, str) or not _DTYPE_RE.match(s):
        raise CorruptCheckpointError(f"index: {where} has an unsupported dtype {s!r}")
    try:
        dt = np.dtype(s)
    except TypeError:
        raise CorruptCheckpointError(f"index: {where} has an unsupported dtype {s!r}") from None
    if dt.kind not in "biufc":
        raise CorruptCheckpointError(f"index: {where} has an unsupported dtype {s!r}")
    return dt


def _ints(v: Any, lo: int = 0) -> bool:
    """Whether ``v`` is a short list of ints in ``[lo, 2**62)`` (fast path)."""
    return (
        type(v) is list
        and len(v) <= MAX_NDIM
        and all(type(x) is int and lo <= x < 1 << 62 for x in v)
    )


class _Parser:
    """Parses tensor entries, memoizing what many tensors share (dtypes, layouts)."""

    def __init__(self, data_size: int, algorithm: str = CHECKSUM_ALGORITHM) -> None:
        self.data_size = data_size
        self.algorithm = algorithm
        self.dtypes: dict[str, np.dtype] = {}
        self.layouts: dict[tuple, tuple] = {}

    def dtype(self, s: Any, key: str) -> np.dtype:
        dt = self.dtypes.get(s) if isinstance(s, str) else None
        if dt is None:
            dt = self.dtypes[s] = _parse_dtype(s, f"tensor {key!r}")
        return dt

    def layout(self, layout: Any, ndim: int, key: str) -> tuple:
        where = f"tensor {key!r}"
        if type(layout) is not dict:
            raise CorruptCheckpointError(f"index: {where} has no layout object")
        specs, mesh = layout.get("sharding_specs"), layout.get("mesh")
        if type(specs) is not list or type(mesh) is not dict:
            raise CorruptCheckpointError(f"index: {where} has a malformed layout")
        names, mshape = mesh.get("dim_names"), mesh.get("shape")
        if (
            type(names) is not list
            or not _ints(mshape, lo=1)
            or not all(type(n) is str for n in names)
            or not all(type(x) is str for x in specs)
        ):
            raise CorruptCheckpointError(f"index: {where} has a malformed layout")
        memo = (tuple(specs), tuple(names), tuple(mshape))
        done = self.layouts.get(memo)
        if done is None:
            if (
                len(names) != len(mshape)
                or not names
                or not all(n and len(n) < 256 for n in names)
                or len(set(names)) != len(names)
            ):
                raise CorruptCheckpointError(f"index: {where} has a bad mesh {names!r} {mshape!r}")
            try:
                validate_specs(specs, names)
            except ValueError as e:
                raise CorruptCheckpointError(f"index: {where}: {e}") from None
            done = self.layouts[memo] = memo
        if len(done[0]) != ndim:
            raise CorruptCheckpointError(f"index: {where} layout rank differs from its shape")
        return done

    def tensor(self, key: str, d: Any) -> TensorEntry:
        data_size = self.data_size
        if type(d) is not dict:
            raise CorruptCheckpointError(f"index: tensor {key!r} is not an object")
        dataset = d.get("dataset")
        if type(dataset) is not str:
            raise CorruptCheckpointError(f"index: tensor {key!r} has no dataset name")
        check_name(dataset, f"tensor {key!r} dataset")
        if "/" in dataset or dataset in (".", ".."):
            raise CorruptCheckpointError(
                f"index: tensor {key!r} dataset {dataset!r} is not a flat name"
            )
        dtype = self.dtype(d.get("dtype"), key)
        shape = d.get("shape")
        if not _ints(shape):
            raise CorruptCheckpointError(f"index: tensor {key!r} has a bad shape {shape!r:.80}")
        shape = tuple(shape)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > data_size:
            raise CorruptCheckpointError(
                f"index: tensor {key!r} of shape {shape} needs {nbytes} bytes, more than the "
                f"data file's {data_size}"
            )
        if d.get("nbytes") != nbytes or type(d.get("nbytes")) is not int:
            raise CorruptCheckpointError(
                f"index: tensor {key!r}.nbytes disagrees with its shape and dtype"
            )
        offset = d.get("offset")
        if nbytes == 0:
            if offset is not None and type(offset) is not int:
                raise CorruptCheckpointError(f"index: tensor {key!r}.offset has the wrong type")
            offset = None
        else:
            if type(offset) is not int or offset < 0:
                raise CorruptCheckpointError(
                    f"index: tensor {key!r}.offset {offset!r} is not a valid offset"
                )
            if offset + nbytes > data_size:
                raise CorruptCheckpointError(
                    f"index: tensor {key!r} bytes [{offset}, {offset + nbytes}) lie outside "
                    f"the data file of {data_size} bytes"
                )
        specs, names, mshape = self.layout(d.get("layout"), len(shape), key)
        raw = d.get("slices")
        if type(raw) is not list:
            raise CorruptCheckpointError(f"index: tensor {key!r} has no slice list")
        slices = []
        ndim = len(shape)
        for i, sl in enumerate(raw):
            start = sl.get("start") if type(sl) is dict else None
            sshape = sl.get("shape") if type(sl) is dict else None
            crc = sl.get(self.algorithm) if type(sl) is dict else None
            if not (_ints(start) and _ints(sshape) and type(crc) is int):
                raise CorruptCheckpointError(
                    f"index: tensor {key!r}.slices[{i}] is malformed or holds a bad value"
                )
            if len(start) != ndim or len(sshape) != ndim:
                raise CorruptCheckpointError(
                    f"index: tensor {key!r}.slices[{i}] rank differs from the tensor's"
                )
            if any(a + b > n for a, b, n in zip(start, sshape, shape, strict=True)):
                raise CorruptCheckpointError(
                    f"index: tensor {key!r}.slices[{i}] lies outside the tensor's shape {shape}"
                )
            if not 0 <= crc < 1 << 32:
                raise CorruptCheckpointError(
                    f"index: tensor {key!r}.slices[{i}] has a bad checksum {crc!r}"
                )
            slices.append(SliceEntry(tuple(start), tuple(sshape), crc))
        return TensorEntry(
            key=key,
            dataset=dataset,
            dtype=dtype,
            shape=shape,
            offset=offset,
            sharding_specs=specs,
            mesh_dim_names=names,
            mesh_shape=mshape,
            slices=tuple(slices),
        )


def _parse_trusted(doc: dict) -> CheckpointIndex:
    """Build the index from a document another rank has already validated."""
    dtypes: dict[str, np.dtype] = {}
    layouts: dict[tuple, tuple] = {}
    tensors = {}
    algorithm = doc["checksum"]
    for key, d in doc["tensors"].items():
        dt = dtypes.get(d["dtype"])
        if dt is None:
            dt = dtypes[d["dtype"]] = np.dtype(d["dtype"])
        lay = d["layout"]
        memo = (
            tuple(lay["sharding_specs"]),
            tuple(lay["mesh"]["dim_names"]),
            tuple(lay["mesh"]["shape"]),
        )
        memo = layouts.setdefault(memo, memo)
        shape = tuple(d["shape"])
        tensors[key] = TensorEntry(
            key,
            d["dataset"],
            dt,
            shape,
            d["offset"] if d["nbytes"] else None,
            memo[0],
            memo[1],
            memo[2],
            tuple(
                SliceEntry(tuple(x["start"]), tuple(x["shape"]), x[algorithm]) for x in d["slices"]
            ),
        )
    df = doc["data_file"]
    return CheckpointIndex(
        data_file=df["name"],
        data_size=df["size"],
        tensors=tensors,
        nprocs=doc["nprocs"],
        created=float(doc["created"]),
        graph=doc.get("graph"),
        library=dict(doc.get("library", {})),
        checksum=doc["checksum"],
        version=doc["version"],
    )


def parse_index(
    text: str | bytes, *, source: str = "index", trusted: bool = False
) -> CheckpointIndex:
    """Parse and validate the text of ``P.index.json``.

    Args:
        text: The index file's content.
        source: Named in error messages.
        trusted: Skip validation: only for bytes that another rank of the same
            job has just validated with ``trusted=False`` and broadcast.

    Raises:
        CorruptCheckpointError: The text is not a valid version-1 index.
    """
    if trusted:
        return _parse_trusted(json.loads(text))
    if len(text) > MAX_INDEX_BYTES:
        raise CorruptCheckpointError(f"{source}: index larger than {MAX_INDEX_BYTES} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptCheckpointError(f"{source}: index is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise CorruptCheckpointError(f"{source}: not an hpckpt index")
    version = _req(doc, "version", int, "index")
    if version != FORMAT_VERSION:
        raise CorruptCheckpointError(
            f"{source}: format version {version!r} is not supported (this hpckpt reads "
            f"version {FORMAT_VERSION})"
        )
    checksum = _req(doc, "checksum", str, "index")
    if checksum not in ALGORITHMS:
        raise CorruptCheckpointError(f"{source}: unknown checksum algorithm {checksum!r}")
    df = _req(doc, "data_file", dict, "index")
    name = _req(df, "name", str, "data_file")
    if not DATA_FILE_RE.match(name) or name.startswith("."):
        raise CorruptCheckpointError(f"{source}: bad data file name {name!r}")
    size = _req(df, "size", int, "data_file")
    if size < 0:
        raise CorruptCheckpointError(f"{source}: bad data file size {size!r}")
    nprocs = _req(doc, "nprocs", int, "index")
    created = _req(doc, "created", (int, float), "index")
    library = doc.get("library", {})
    if not isinstance(library, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in library.items()
    ):
        raise CorruptCheckpointError(f"{source}: bad library versions")
    graph = doc.get("graph")
    if graph is not None and not isinstance(graph, dict):
        raise CorruptCheckpointError(f"{source}: graph is not an object")
    raw = _req(doc, "tensors", dict, "index")
    tensors: dict[str, TensorEntry] = {}
    datasets: set[str] = set()
    parser = _Parser(size, checksum)
    for key, entry in raw.items():
        check_name(key, "tensor key")
        t = parser.tensor(key, entry)
        if t.dataset in datasets:
            raise CorruptCheckpointError(f"{source}: dataset {t.dataset!r} is used twice")
        datasets.add(t.dataset)
        tensors[key] = t
    return CheckpointIndex(
        data_file=name,
        data_size=size,
        tensors=tensors,
        nprocs=nprocs,
        created=float(created),
        graph=graph,
        library=dict(library),
        checksum=checksum,
        version=version,
    )
