"""The checkpoint index (``P.index.json``): dataclasses, serialization, validation.

Pure logic: no MPI, no HDF5, no files. Everything read from disk passes through
:func:`parse_index`, ONE parser with two modes: validating (refuses anything that
does not match the schema with :class:`~hpckpt.errors.CorruptCheckpointError`) and
trusting (for bytes another rank of the same job has just validated: the same
construction with the checks skipped). The tests hold the two modes together.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ..errors import CorruptCheckpointError
from ..layout import validate_specs
from .checksum import ALGORITHMS, DEFAULT_ALGORITHM
from .paths import is_data_file_name

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


def _ints(v: Any, lo: int = 0) -> bool:
    """Whether ``v`` is a short list of ints in ``[lo, 2**62)``."""
    return (
        type(v) is list
        and len(v) <= MAX_NDIM
        and all(type(x) is int and lo <= x < 1 << 62 for x in v)
    )


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


class _Parser:
    """Builds an index from its JSON document, validating unless told to trust it.

    Both modes run the same construction; ``validate=False`` only skips the checks.
    Memoizes what many tensors share (dtypes, layouts).
    """

    def __init__(self, source: str, validate: bool) -> None:
        self.source = source
        self.validate = validate
        self.data_size = 0
        self.algorithm = CHECKSUM_ALGORITHM
        self.dtypes: dict[Any, np.dtype] = {}
        self.layouts: dict[tuple, tuple] = {}

    def fail(self, message: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"{self.source}: {message}")

    def req(self, d: dict, name: str, typ: type | tuple[type, ...], where: str) -> Any:
        if not self.validate:
            return d[name]
        if name not in d:
            raise CorruptCheckpointError(f"index: {where} lacks {name!r}")
        v = d[name]
        if (isinstance(v, bool) and typ is not bool) or not isinstance(v, typ):
            raise CorruptCheckpointError(f"index: {where}.{name} has the wrong type ({v!r:.80})")
        return v

    def index(self, doc: Any) -> CheckpointIndex:
        v = self.validate
        if v and (not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME):
            raise self.fail("not an hpckpt index")
        version = self.req(doc, "version", int, "index")
        if v and version != FORMAT_VERSION:
            raise self.fail(
                f"format version {version!r} is not supported (this hpckpt reads "
                f"version {FORMAT_VERSION})"
            )
        checksum = self.req(doc, "checksum", str, "index")
        if v and checksum not in ALGORITHMS:
            raise self.fail(f"unknown checksum algorithm {checksum!r}")
        self.algorithm = checksum
        df = self.req(doc, "data_file", dict, "index")
        name = self.req(df, "name", str, "data_file")
        if v and not is_data_file_name(name):
            raise self.fail(f"bad data file name {name!r}")
        size = self.req(df, "size", int, "data_file")
        if v and size < 0:
            raise self.fail(f"bad data file size {size!r}")
        self.data_size = size
        nprocs = self.req(doc, "nprocs", int, "index")
        created = self.req(doc, "created", (int, float), "index")
        library = doc.get("library", {})
        if v and (
            not isinstance(library, dict)
            or not all(isinstance(k, str) and isinstance(x, str) for k, x in library.items())
        ):
            raise self.fail("bad library versions")
        graph = doc.get("graph")
        if v and graph is not None and not isinstance(graph, dict):
            raise self.fail("graph is not an object")
        raw = self.req(doc, "tensors", dict, "index")
        tensors: dict[str, TensorEntry] = {}
        datasets: set[str] = set()
        for key, entry in raw.items():
            if v:
                check_name(key, "tensor key")
            t = self.tensor(key, entry)
            if v:
                if t.dataset in datasets:
                    raise self.fail(f"dataset {t.dataset!r} is used twice")
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

    def dtype(self, s: Any, key: str) -> np.dtype:
        dt = self.dtypes.get(s) if isinstance(s, str) else None
        if dt is None:
            dt = _parse_dtype(s, f"tensor {key!r}") if self.validate else np.dtype(s)
            self.dtypes[s] = dt
        return dt

    def layout(self, layout: Any, ndim: int, key: str) -> tuple:
        where = f"tensor {key!r}"
        if not self.validate:
            memo = (
                tuple(layout["sharding_specs"]),
                tuple(layout["mesh"]["dim_names"]),
                tuple(layout["mesh"]["shape"]),
            )
            return self.layouts.setdefault(memo, memo)
        if type(layout) is not dict:
            raise CorruptCheckpointError(f"index: {where} has no layout object")
        specs: Any = layout.get("sharding_specs")
        mesh: Any = layout.get("mesh")
        if type(specs) is not list or type(mesh) is not dict:
            raise CorruptCheckpointError(f"index: {where} has a malformed layout")
        names: Any = mesh.get("dim_names")
        mshape: Any = mesh.get("shape")
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
        v = self.validate
        if v and type(d) is not dict:
            raise CorruptCheckpointError(f"index: tensor {key!r} is not an object")
        dataset = d.get("dataset")
        if v:
            if type(dataset) is not str:
                raise CorruptCheckpointError(f"index: tensor {key!r} has no dataset name")
            check_name(dataset, f"tensor {key!r} dataset")
            if "/" in dataset or dataset in (".", ".."):
                raise CorruptCheckpointError(
                    f"index: tensor {key!r} dataset {dataset!r} is not a flat name"
                )
        dtype = self.dtype(d.get("dtype"), key)
        shape = d.get("shape")
        if v and not _ints(shape):
            raise CorruptCheckpointError(f"index: tensor {key!r} has a bad shape {shape!r:.80}")
        shape = tuple(shape)
        nbytes = math.prod(shape) * dtype.itemsize
        offset = d.get("offset")
        if v:
            self._check_storage(key, d, shape, nbytes, offset)
        if nbytes == 0:
            offset = None
        specs, names, mshape = self.layout(d.get("layout"), len(shape), key)
        raw = d.get("slices")
        if v and type(raw) is not list:
            raise CorruptCheckpointError(f"index: tensor {key!r} has no slice list")
        algorithm = self.algorithm
        if v:
            slices = tuple(self._slice(key, i, sl, shape) for i, sl in enumerate(raw))
        else:
            slices = tuple(
                SliceEntry(tuple(x["start"]), tuple(x["shape"]), x[algorithm]) for x in raw
            )
        return TensorEntry(key, dataset, dtype, shape, offset, specs, names, mshape, slices)

    def _check_storage(
        self, key: str, d: dict, shape: tuple[int, ...], nbytes: int, offset: Any
    ) -> None:
        data_size = self.data_size
        if nbytes > data_size:
            raise CorruptCheckpointError(
                f"index: tensor {key!r} of shape {shape} needs {nbytes} bytes, more than the "
                f"data file's {data_size}"
            )
        if d.get("nbytes") != nbytes or type(d.get("nbytes")) is not int:
            raise CorruptCheckpointError(
                f"index: tensor {key!r}.nbytes disagrees with its shape and dtype"
            )
        if nbytes == 0:
            if offset is not None and type(offset) is not int:
                raise CorruptCheckpointError(f"index: tensor {key!r}.offset has the wrong type")
            return
        if type(offset) is not int or offset < 0:
            raise CorruptCheckpointError(
                f"index: tensor {key!r}.offset {offset!r} is not a valid offset"
            )
        if offset + nbytes > data_size:
            raise CorruptCheckpointError(
                f"index: tensor {key!r} bytes [{offset}, {offset + nbytes}) lie outside "
                f"the data file of {data_size} bytes"
            )

    def _slice(self, key: str, i: int, sl: Any, shape: tuple[int, ...]) -> SliceEntry:
        start: Any = sl.get("start") if type(sl) is dict else None
        sshape: Any = sl.get("shape") if type(sl) is dict else None
        crc: Any = sl.get(self.algorithm) if type(sl) is dict else None
        if not (_ints(start) and _ints(sshape) and type(crc) is int):
            raise CorruptCheckpointError(
                f"index: tensor {key!r}.slices[{i}] is malformed or holds a bad value"
            )
        if len(start) != len(shape) or len(sshape) != len(shape):
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
        return SliceEntry(tuple(start), tuple(sshape), crc)


def parse_index(
    text: str | bytes, *, source: str = "index", trusted: bool = False
) -> CheckpointIndex:
    """Parse the text of ``P.index.json``, validating it unless ``trusted``.

    Args:
        text: The index file's content.
        source: Named in error messages.
        trusted: Skip validation: only for bytes that another rank of the same
            job has just validated with ``trusted=False`` and broadcast.

    Raises:
        CorruptCheckpointError: The text is not a valid version-1 index.
    """
    if not trusted and len(text) > MAX_INDEX_BYTES:
        raise CorruptCheckpointError(f"{source}: index larger than {MAX_INDEX_BYTES} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        kind = "nested too deeply" if isinstance(e, RecursionError) else f"not valid JSON ({e})"
        raise CorruptCheckpointError(f"{source}: index is {kind}") from None
    return _Parser(source, validate=not trusted).index(doc)
