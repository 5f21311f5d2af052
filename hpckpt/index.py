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
from typing import Any

import numpy as np

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
]

FORMAT_NAME = "hpckpt"
FORMAT_VERSION = 1
CHECKSUM_ALGORITHM = "crc32"

MAX_NDIM = 32
MAX_NAME_LEN = 4096
MAX_INDEX_BYTES = 1 << 30
_DTYPE_RE = re.compile(r"^[<>|=][biufc][0-9]{1,2}$")
DATA_FILE_RE = re.compile(r"^[^/\\\x00]+\.data-[0-9a-f]{8,64}\.h5$")


@dataclass(frozen=True)
class SliceEntry:
    """One saved slice of a tensor: a hyperslab and the checksum of its bytes."""

    start: tuple[int, ...]
    shape: tuple[int, ...]
    checksum: int

    def to_json(self) -> dict[str, Any]:
        return {"start": list(self.start), "shape": list(self.shape), "crc32": self.checksum}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a checkpoint.

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

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "dtype": self.dtype.str,
            "shape": list(self.shape),
            "offset": self.offset,
            "nbytes": self.nbytes,
            "layout": self.layout_dict(),
            "slices": [s.to_json() for s in self.slices],
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
            "tensors": {k: t.to_json() for k, t in self.tensors.items()},
            "graph": self.graph,
        }
        return json.dumps(doc, separators=(",", ":"))


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


def _parse_tensor(key: str, d: Any, data_size: int) -> TensorEntry:
    where = f"tensor {key!r}"
    if not isinstance(d, dict):
        raise CorruptCheckpointError(f"index: {where} is not an object")
    dataset = check_name(_req(d, "dataset", str, where), f"{where} dataset")
    if "/" in dataset or dataset in (".", ".."):
        raise CorruptCheckpointError(f"index: {where} dataset {dataset!r} is not a flat name")
    dtype = _parse_dtype(_req(d, "dtype", str, where), where)
    shape = _int_list(_req(d, "shape", list, where), f"{where}.shape")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > data_size:
        raise CorruptCheckpointError(
            f"index: {where} of shape {shape} needs {nbytes} bytes, more than the "
            f"data file's {data_size}"
        )
    if _req(d, "nbytes", int, where) != nbytes:
        raise CorruptCheckpointError(f"index: {where}.nbytes disagrees with its shape and dtype")
    offset = d.get("offset")
    if nbytes == 0:
        if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool)):
            raise CorruptCheckpointError(f"index: {where}.offset has the wrong type")
        offset = None
    else:
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise CorruptCheckpointError(f"index: {where}.offset {offset!r} is not a valid offset")
        if offset + nbytes > data_size:
            raise CorruptCheckpointError(
                f"index: {where} bytes [{offset}, {offset + nbytes}) lie outside the data "
                f"file of {data_size} bytes"
            )
    layout = _req(d, "layout", dict, where)
    specs = _req(layout, "sharding_specs", list, f"{where}.layout")
    mesh = _req(layout, "mesh", dict, f"{where}.layout")
    names = _req(mesh, "dim_names", list, f"{where}.layout.mesh")
    mshape = _int_list(_req(mesh, "shape", list, f"{where}.layout.mesh"), f"{where} mesh", lo=1)
    if (
        len(names) != len(mshape)
        or not names
        or not all(isinstance(n, str) and n and len(n) < 256 for n in names)
        or len(set(names)) != len(names)
    ):
        raise CorruptCheckpointError(f"index: {where} has a bad mesh {names!r} {mshape!r}")
    if len(specs) != len(shape):
        raise CorruptCheckpointError(f"index: {where} layout rank differs from its shape")
    try:
        specs_t = validate_specs(specs, names)
    except ValueError as e:
        raise CorruptCheckpointError(f"index: {where}: {e}") from None
    slices = []
    raw_slices = _req(d, "slices", list, where)
    for i, s in enumerate(raw_slices):
        sw = f"{where}.slices[{i}]"
        if not isinstance(s, dict):
            raise CorruptCheckpointError(f"index: {sw} is not an object")
        start = _int_list(_req(s, "start", list, sw), f"{sw}.start")
        sshape = _int_list(_req(s, "shape", list, sw), f"{sw}.shape")
        crc = _req(s, "crc32", int, sw)
        if len(start) != len(shape) or len(sshape) != len(shape):
            raise CorruptCheckpointError(f"index: {sw} rank differs from the tensor's")
        if any(a + b > n for a, b, n in zip(start, sshape, shape, strict=True)):
            raise CorruptCheckpointError(f"index: {sw} lies outside the tensor's shape {shape}")
        if not 0 <= crc < 1 << 32:
            raise CorruptCheckpointError(f"index: {sw} has a bad checksum {crc!r}")
        slices.append(SliceEntry(start, sshape, crc))
    return TensorEntry(
        key=key,
        dataset=dataset,
        dtype=dtype,
        shape=shape,
        offset=offset,
        sharding_specs=specs_t,
        mesh_dim_names=tuple(names),
        mesh_shape=mshape,
        slices=tuple(slices),
    )


def parse_index(text: str | bytes, *, source: str = "index") -> CheckpointIndex:
    """Parse and validate the text of ``P.index.json``.

    Raises:
        CorruptCheckpointError: The text is not a valid version-1 index.
    """
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
    if checksum != CHECKSUM_ALGORITHM:
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
    for key, entry in raw.items():
        check_name(key, "tensor key")
        t = _parse_tensor(key, entry, size)
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
