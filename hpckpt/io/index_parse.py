"""Parsing ``P.index.json``: ONE parser with a validating and a trusting mode.

Validating refuses anything that does not match the schema with
:class:`~hpckpt.errors.CorruptCheckpointError`; trusting (for bytes another rank of
the same job has just validated) runs the same construction with the checks skipped.
The tests hold the two modes together. Reads format versions 1 and 2.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from ..errors import CorruptCheckpointError
from ..layout import LayoutSpec, validate_specs, validate_splits
from .checksum import ALGORITHMS
from .filters import Compression, pipeline_from_json
from .index import (
    CHECKSUM_ALGORITHM,
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_INDEX_BYTES,
    MAX_LISTED_SLICES,
    MAX_NDIM,
    MAX_RANKS,
    READ_VERSIONS,
    REPLICA_SPLIT_BYTES,
    CheckpointIndex,
    TensorEntry,
    check_name,
)
from .paths import is_data_file_name
from .slicing import ListedSlicing, Slicing, cached_slicing, check_exact_cover

__all__ = ["parse_index", "parse_index_document"]

_DTYPE_RE = re.compile(r"^[<>|=][biufc][0-9]{1,2}$")
_LOGICAL_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


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
        self.version = FORMAT_VERSION
        self.algorithm = CHECKSUM_ALGORITHM
        self.split_bytes = REPLICA_SPLIT_BYTES
        self.dtypes: dict[Any, np.dtype] = {}
        self.layouts: dict[tuple, LayoutSpec] = {}
        self.table: list[LayoutSpec] = []

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
        if v and version not in READ_VERSIONS:
            raise self.fail(
                f"format version {version!r} is not supported (this hpckpt reads "
                f"versions {', '.join(map(str, READ_VERSIONS))})"
            )
        self.version = version
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
        structure = df.get("structure_checksum")
        if (
            v
            and structure is not None
            and (type(structure) is not int or not 0 <= structure < 1 << 32)
        ):
            raise self.fail(f"bad data file structure checksum {structure!r:.40}")
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
        if version >= 2:
            self.split_bytes = self.req(doc, "replica_split_bytes", int, "index")
            if v and self.split_bytes < 1:
                raise self.fail(f"bad replica_split_bytes {self.split_bytes!r}")
            raw_layouts = self.req(doc, "layouts", list, "index")
            self.table = [self.layout(x, f"layouts[{i}]") for i, x in enumerate(raw_layouts)]
            if v and any(math.prod(t.mesh_shape) != nprocs for t in self.table):
                raise self.fail(f"a layout's mesh does not have the {nprocs} ranks that saved")
        raw = self.req(doc, "tensors", dict, "index")
        tensors: dict[str, TensorEntry] = {}
        datasets: set[str] = set()
        tensor = self.tensor_v2 if version >= 2 else self.tensor_v1
        for key, entry in raw.items():
            if v:
                check_name(key, "tensor key")
            t = tensor(key, entry)
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
            replica_split_bytes=self.split_bytes,
            structure_checksum=structure,
        )

    def dtype(self, s: Any, key: str) -> np.dtype:
        dt = self.dtypes.get(s) if isinstance(s, str) else None
        if dt is None:
            dt = _parse_dtype(s, f"tensor {key!r}") if self.validate else np.dtype(s)
            self.dtypes[s] = dt
        return dt

    def layout(self, layout: Any, where: str) -> LayoutSpec:
        if not self.validate:
            trusted_splits = layout.get("splits") or {}
            spec = LayoutSpec(
                tuple(layout["sharding_specs"]),
                tuple(layout["mesh"]["dim_names"]),
                tuple(layout["mesh"]["shape"]),
                tuple(sorted((k, tuple(b)) for k, b in trusted_splits.items())),
            )
            return self.layouts.setdefault((spec,), spec)
        if type(layout) is not dict:
            raise CorruptCheckpointError(f"index: {where} has no layout object")
        specs: Any = layout.get("sharding_specs")
        mesh: Any = layout.get("mesh")
        splits: Any = layout.get("splits")
        if type(specs) is not list or type(mesh) is not dict:
            raise CorruptCheckpointError(f"index: {where} has a malformed layout")
        names: Any = mesh.get("dim_names")
        mshape: Any = mesh.get("shape")
        if (
            type(names) is not list
            or not _ints(mshape, lo=1)
            or not all(type(n) is str for n in names)
            or not all(type(x) is str for x in specs)
            or len(specs) > MAX_NDIM
            or (splits is not None and type(splits) is not dict)
        ):
            raise CorruptCheckpointError(f"index: {where} has a malformed layout")
        memo = json.dumps([specs, names, mshape, splits])
        done = self.layouts.get((memo,))
        if done is None:
            if (
                len(names) != len(mshape)
                or not names
                or not all(n and len(n) < 256 for n in names)
                or len(set(names)) != len(names)
                or math.prod(mshape) > MAX_RANKS
            ):
                raise CorruptCheckpointError(f"index: {where} has a bad mesh {names!r} {mshape!r}")
            try:
                validate_specs(specs, names)
                sp = validate_splits(splits or {}, names, mshape)
            except (ValueError, TypeError) as e:
                raise CorruptCheckpointError(f"index: {where}: {e}") from None
            if any(b[-1] >= 1 << 62 for _, b in sp):
                raise CorruptCheckpointError(f"index: {where} has a bad split")
            done = LayoutSpec(tuple(specs), tuple(names), tuple(mshape), sp)
            self.layouts[(memo,)] = done
        return done

    def _common(
        self, key: str, d: Any
    ) -> tuple[str, np.dtype, tuple[int, ...], int, int | None, Compression | None, Any]:
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
        filters: Compression | None = None
        chunks = None
        if self.version >= 2 and "filters" in d:  # compressed: a chunked dataset
            chunks = d.get("chunks")
            if v:
                self._check_chunked(key, d, shape, dtype, nbytes, offset, chunks)
            try:
                filters = pipeline_from_json(d["filters"])
            except ValueError as e:
                raise CorruptCheckpointError(f"index: tensor {key!r}: {e}") from None
            chunks = tuple(chunks)
        elif v:
            self._check_storage(key, d, shape, nbytes, offset)
        if nbytes == 0:
            offset = None
        return dataset, dtype, shape, nbytes, offset, filters, chunks

    def tensor_v2(self, key: str, d: Any) -> TensorEntry:
        v = self.validate
        dataset, dtype, shape, _, offset, filters, chunks = self._common(key, d)
        lid = d.get("layout")
        layout: LayoutSpec | None = None
        if lid is not None:
            if v and (type(lid) is not int or not 0 <= lid < len(self.table)):
                raise CorruptCheckpointError(
                    f"index: tensor {key!r} names a bad layout {lid!r:.40}"
                )
            layout = self.table[lid]
            if v:
                if layout.ndim != len(shape):
                    raise CorruptCheckpointError(
                        f"index: tensor {key!r} layout rank differs from its shape"
                    )
                try:
                    layout.check_shape(shape)
                except ValueError as e:
                    raise CorruptCheckpointError(f"index: tensor {key!r}: {e}") from None
        raw = d.get("slices")
        slicing: Slicing
        if raw is None:
            if layout is None:
                if v:
                    raise CorruptCheckpointError(
                        f"index: tensor {key!r} has neither a layout nor a slice list"
                    )
                raise KeyError(key)
            rows = d.get("rows", False)
            if v and type(rows) is not bool:
                raise CorruptCheckpointError(f"index: tensor {key!r}.rows is not a bool")
            slicing = cached_slicing(shape, layout, dtype.itemsize, self.split_bytes, rows)
        else:
            slicing = self._listed(key, raw, shape)
        crcs = d.get("checksums")
        if v:
            if type(crcs) is not str or len(crcs) != 4 * ((4 * len(slicing) + 2) // 3):
                raise CorruptCheckpointError(
                    f"index: tensor {key!r} needs a packed array of {len(slicing)} checksums"
                )
        logical = d.get("logical_dtype")
        if (
            v
            and logical is not None
            and (type(logical) is not str or not _LOGICAL_RE.match(logical))
        ):
            raise CorruptCheckpointError(
                f"index: tensor {key!r} has a bad logical dtype {logical!r:.40}"
            )
        entry = TensorEntry(
            key,
            dataset,
            dtype,
            shape,
            offset,
            layout,
            slicing,
            crcs,
            logical,
            filters=filters,
            chunks=chunks,
        )
        if v:
            entry.checksums  # noqa: B018 - decodes and checks the packed array
        return entry

    def _listed(self, key: str, raw: Any, shape: tuple[int, ...]) -> ListedSlicing:
        ndim = len(shape)
        if not self.validate:
            arr = np.asarray(raw, dtype=np.int64).reshape(len(raw), 2 * ndim)
            return ListedSlicing(arr[:, :ndim], arr[:, ndim:])
        if type(raw) is not list:
            raise CorruptCheckpointError(f"index: tensor {key!r} has no slice list")
        if len(raw) > MAX_LISTED_SLICES:
            raise CorruptCheckpointError(
                f"index: tensor {key!r} lists {len(raw)} slices, more than {MAX_LISTED_SLICES}"
            )
        for i, sl in enumerate(raw):
            if not (
                type(sl) is list
                and len(sl) == 2 * ndim
                and all(type(x) is int and 0 <= x < 1 << 62 for x in sl)
            ):
                raise CorruptCheckpointError(
                    f"index: tensor {key!r}.slices[{i}] is malformed or holds a bad value"
                )
        arr = np.asarray(raw, dtype=np.int64).reshape(len(raw), 2 * ndim)
        slicing = ListedSlicing(arr[:, :ndim], arr[:, ndim:])
        self._check_cover(key, shape, slicing)
        return slicing

    def _check_cover(self, key: str, shape: tuple[int, ...], slicing: ListedSlicing) -> None:
        problem = check_exact_cover(shape, slicing.starts, slicing.shapes)
        if problem is not None:
            raise CorruptCheckpointError(
                f"index: tensor {key!r}: its saved slices do not cover it exactly once ({problem})"
            )

    def tensor_v1(self, key: str, d: Any) -> TensorEntry:
        v = self.validate
        dataset, dtype, shape, _, offset, _, _ = self._common(key, d)
        layout = self.layout(d.get("layout"), f"tensor {key!r}")
        if v and layout.ndim != len(shape):
            raise CorruptCheckpointError(
                f"index: tensor {key!r} layout rank differs from its shape"
            )
        raw = d.get("slices")
        if v and type(raw) is not list:
            raise CorruptCheckpointError(f"index: tensor {key!r} has no slice list")
        algorithm = self.algorithm
        if v:
            slices = [self._slice_v1(key, i, sl, shape) for i, sl in enumerate(raw)]
        else:
            slices = [(x["start"], x["shape"], x[algorithm]) for x in raw]
        ndim = len(shape)
        starts = np.asarray([s[0] for s in slices], dtype=np.int64).reshape(len(slices), ndim)
        shapes = np.asarray([s[1] for s in slices], dtype=np.int64).reshape(len(slices), ndim)
        slicing = ListedSlicing(starts, shapes)
        if v:
            self._check_cover(key, shape, slicing)
        crcs = np.asarray([s[2] for s in slices], dtype=np.uint32)
        return TensorEntry(key, dataset, dtype, shape, offset, layout, slicing, crcs)

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

    def _check_chunked(
        self,
        key: str,
        d: dict,
        shape: tuple[int, ...],
        dtype: np.dtype,
        nbytes: int,
        offset: Any,
        chunks: Any,
    ) -> None:
        """A compressed tensor: a chunked dataset (no offset) with a valid chunk shape.

        Its size may exceed the data file's (that is the point of compression)."""
        if d.get("nbytes") != nbytes or type(d.get("nbytes")) is not int:
            raise CorruptCheckpointError(
                f"index: tensor {key!r}.nbytes disagrees with its shape and dtype"
            )
        if offset is not None:
            raise CorruptCheckpointError(
                f"index: tensor {key!r} is compressed (chunked) but names an offset {offset!r:.40}"
            )
        if not shape or nbytes == 0:
            raise CorruptCheckpointError(
                f"index: tensor {key!r} of shape {shape} cannot be compressed (chunked)"
            )
        if (
            not _ints(chunks, lo=1)
            or len(chunks) != len(shape)
            or any(c > n for c, n in zip(chunks, shape, strict=True))
            or math.prod(chunks) * dtype.itemsize >= 1 << 32
        ):
            raise CorruptCheckpointError(
                f"index: tensor {key!r} has a bad chunk shape {chunks!r:.80} for shape {shape}"
            )

    def _slice_v1(
        self, key: str, i: int, sl: Any, shape: tuple[int, ...]
    ) -> tuple[list[int], list[int], int]:
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
        return start, sshape, crc


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
        CorruptCheckpointError: The text is not a valid index (version 1 or 2).
    """
    if not trusted and len(text) > MAX_INDEX_BYTES:
        raise CorruptCheckpointError(f"{source}: index larger than {MAX_INDEX_BYTES} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        kind = "nested too deeply" if isinstance(e, RecursionError) else f"not valid JSON ({e})"
        raise CorruptCheckpointError(f"{source}: index is {kind}") from None
    return _Parser(source, validate=not trusted).index(doc)


def parse_index_document(
    doc: Any, *, source: str = "index", trusted: bool = False
) -> CheckpointIndex:
    """Build an index from its already decoded JSON document (embedded in another file).

    Raises:
        CorruptCheckpointError: The document is not a valid index (version 1 or 2).
    """
    return _Parser(source, validate=not trusted).index(doc)
