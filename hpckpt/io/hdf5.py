"""HDF5 structure of a data file: creation of the contiguous datasets and validation.

Rank 0 alone creates the file's metadata (every dataset contiguous, allocated
early, never filled) with the serial driver and reads back each dataset's byte
offset; all ranks then move the raw bytes with MPI-IO (see ``_mpiio``). The file
is a plain HDF5 file: h5py, ``h5ls`` and ``h5dump`` read it without hpckpt.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import CorruptCheckpointError, NotFoundError
from .checksum import checksum_function
from .filters import Compression
from .index import TensorEntry
from .template import structure_checksum

__all__ = [
    "DatasetSpec",
    "create_data_file",
    "h5type",
    "open_h5",
    "read_dataset",
    "structure_unchanged",
    "validate_data_file",
]

STRUCTURE_READ_LIMIT = 64 << 20
"""A data file whose non-raw bytes exceed this is checked dataset by dataset."""

FORMAT_ATTR = "hpckpt_format_version"
DTYPE_ATTR = "hpckpt_dtype"


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset to create: flat name, dtype and global shape.

    ``logical_dtype`` (e.g. ``"bfloat16"``) names what the stored unsigned integers
    hold; it becomes the dataset's ``hpckpt_dtype`` attribute. ``chunks`` and
    ``compression`` (set together) make a chunked, filtered dataset (see
    :mod:`.filters`; only the parallel HDF5 path of :mod:`.phdf5` creates those).
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    logical_dtype: str | None = None
    chunks: tuple[int, ...] | None = None
    compression: Compression | None = None


def file_locking() -> bool | str | None:
    """HDF5 file locking as ``HDF5_USE_FILE_LOCKING`` asks, read at each open.

    HDF5 reads the variable once per process (seen here: at its first file open) and,
    if it was set then, lets it override the per-open setting; if it was not, the
    ``locking=`` passed here governs, so a job that sets it later (or a test) is
    honoured. ``None``: not set (HDF5's default).
    """
    v = os.environ.get("HDF5_USE_FILE_LOCKING", "").strip().upper()
    if v in ("FALSE", "0"):
        return False
    if v in ("TRUE", "1"):
        return True
    if v == "BEST_EFFORT":
        return "best-effort"
    return None


def open_h5(path: str, mode: str, **kwargs: object) -> h5py.File:
    """``h5py.File`` honouring ``HDF5_USE_FILE_LOCKING`` (see :func:`file_locking`)."""
    locking = file_locking()
    if locking is not None:
        kwargs["locking"] = locking
    return h5py.File(path, mode, **kwargs)


def h5type(dtype: np.dtype) -> h5py.h5t.TypeID:
    """The HDF5 type a dataset of ``dtype`` is stored with."""
    return h5py.h5t.py_create(dtype, logical=True)


def create_data_file(
    path: str, specs: Sequence[DatasetSpec], *, alignment: int = 4096, threshold: int = 65536
) -> tuple[list[int | None], int]:
    """Create ``path`` with one contiguous, early-allocated dataset per spec.

    Datasets of at least ``threshold`` bytes start at a multiple of ``alignment``
    (the file system's block or stripe size). Called by one rank.

    Returns:
        Each dataset's byte offset (``None`` for empty ones) and the file size.
    """
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    dcpl.set_obj_track_times(False)
    types: dict[str, h5py.h5t.TypeID] = {}
    offsets: list[int | None] = []
    with open_h5(
        path,
        "w",
        alignment_threshold=threshold,
        alignment_interval=alignment,
    ) as f:
        f.attrs[FORMAT_ATTR] = np.int64(1)
        fid = f.id
        for spec in specs:
            tid = types.get(spec.dtype.str)
            if tid is None:
                tid = types[spec.dtype.str] = h5type(spec.dtype)
            space = (
                h5py.h5s.create_simple(spec.shape)
                if spec.shape
                else h5py.h5s.create(h5py.h5s.SCALAR)
            )
            dsid = h5py.h5d.create(fid, spec.name.encode(), tid, space, dcpl=dcpl)
            if spec.logical_dtype is not None:
                h5py.Dataset(dsid).attrs[DTYPE_ATTR] = spec.logical_dtype
            offsets.append(dsid.get_offset())
            dsid.close()
    return offsets, os.path.getsize(path)


def _dtype_matches(h5dtype: np.dtype, want: np.dtype) -> bool:
    return h5dtype.newbyteorder("=") == want.newbyteorder("=") and h5dtype.str == want.str


def validate_data_file(
    path: str,
    expected_size: int,
    tensors: Sequence[TensorEntry],
    *,
    check_links: bool = True,
    datasets: Collection[str] | None = None,
) -> None:
    """Check that ``path`` is the data file the index describes, and safe to read.

    Refuses: a missing or resized file, anything but hard links to datasets at the
    root (external or soft links, groups), datasets that are not contiguous, are
    filtered, virtual or stored externally (except compressed tensors: chunked
    with exactly the chunk shape and filters the index records), and datasets
    whose shape, dtype or offset disagree with the index. Several ranks may share
    the datasets to check (``check_links`` on one of them, given the names of all the
    index's ``datasets``; by default those of ``tensors``).

    Raises:
        NotFoundError: The data file is missing.
        CorruptCheckpointError: Anything else is wrong.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFoundError(f"data file {path!r} is missing") from None
    _check_stat(path, st, expected_size)
    try:
        f = open_h5(path, "r")
    except OSError as e:
        raise CorruptCheckpointError(
            f"data file {path!r} is not a readable HDF5 file: {e}"
        ) from None
    with f:
        bad: list[str] = []
        others: list[bytes] = []
        known: set[bytes] = set()
        if check_links:
            names = datasets if datasets is not None else [t.dataset for t in tensors]
            known = {d.encode() for d in names}

        def visit(name: bytes, info: h5py.h5l.LinkInfo) -> None:
            if info.type != h5py.h5l.TYPE_HARD:
                bad.append(name.decode(errors="replace"))
            elif name not in known:
                others.append(name)

        if check_links:
            f.id.links.iterate(visit, info=True)
        if bad:
            raise CorruptCheckpointError(
                f"data file {path!r} holds soft or external links {bad[:5]!r}"
            )
        # objects the index does not name are ignored by readers, unless they are groups
        # (or named types): only datasets belong at the root
        groups = [
            n.decode(errors="replace")
            for n in others
            if h5py.h5o.get_info(f.id, n).type != h5py.h5o.TYPE_DATASET
        ]
        if groups:
            raise CorruptCheckpointError(
                f"data file {path!r} holds groups or other objects at its root {groups[:5]!r}"
            )
        types: dict[str, h5py.h5t.TypeID] = {}
        for t in tensors:
            where = f"data file {path!r} dataset {t.dataset!r} (tensor {t.key!r})"
            try:
                dsid = h5py.h5d.open(f.id, t.dataset.encode())
            except (KeyError, OSError, ValueError, TypeError):
                raise CorruptCheckpointError(f"{where} is missing") from None
            try:
                _check_dataset(dsid, t, where, types)
            finally:
                dsid.close()


def _check_stat(path: str, st: os.stat_result, expected_size: int) -> None:
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block HDF5's open; a device has no end
        raise CorruptCheckpointError(f"data file {path!r} is not a regular file")
    size = st.st_size
    if size != expected_size:
        raise CorruptCheckpointError(
            f"data file {path!r} has {size} bytes, the index says {expected_size} "
            f"({'truncated' if size < expected_size else 'grown'})"
        )


def structure_unchanged(
    path: str,
    expected_size: int,
    tensors: Sequence[TensorEntry],
    expected: int,
    algorithm: str,
) -> bool:
    """Whether the bytes of ``path`` outside the tensors' raw data are the ones the save
    wrote: their checksum is the index's structure checksum ``expected``.

    The file is checked first as :func:`validate_data_file` checks it (present, a
    regular file, of the indexed size). ``False`` (a mismatch, a file with compressed
    tensors or more than ``STRUCTURE_READ_LIMIT`` non-raw bytes, a read error): the
    caller checks the file dataset by dataset with :func:`validate_data_file`.

    Raises:
        NotFoundError: The data file is missing.
        CorruptCheckpointError: It is not a regular file or has another size.
    """
    try:  # O_NONBLOCK: opening a FIFO does not wait for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFoundError(f"data file {path!r} is missing") from None
    except OSError:
        return False
    try:
        _check_stat(path, os.fstat(fd), expected_size)
        if any(t.filters is not None for t in tensors):
            return False
        raw = [(t.offset, t.nbytes) for t in tensors if t.offset is not None]
        got = structure_checksum(
            fd, raw, expected_size, checksum_function(algorithm), STRUCTURE_READ_LIMIT
        )
    except OSError:
        return False
    finally:
        os.close(fd)
    return got is not None and got == expected


def _check_dataset(
    dsid: h5py.h5d.DatasetID, t: TensorEntry, where: str, types: dict[str, h5py.h5t.TypeID]
) -> None:
    # A defined offset means contiguous storage inside this file: HDF5 has none for
    # chunked (so filtered), compact, virtual and externally stored datasets.
    # Empty tensors have no storage to compare, so their creation properties are read.
    # Compressed tensors (the index names their filters) must be chunked with exactly
    # the recorded chunk shape and filter pipeline.
    off = None
    if t.filters is not None:
        _check_chunked(dsid, t, where)
    elif t.nbytes:
        off = dsid.get_offset()
        if off is None:
            raise CorruptCheckpointError(
                f"{where} is not contiguous storage in this file (chunked, filtered, compact, "
                f"virtual or external storage)"
            )
    else:
        dcpl = dsid.get_create_plist()
        if dcpl.get_layout() != h5py.h5d.CONTIGUOUS:
            raise CorruptCheckpointError(f"{where} is not contiguous (or is virtual)")
        if dcpl.get_nfilters() != 0:
            raise CorruptCheckpointError(f"{where} has filters")
        if dcpl.get_external_count() != 0:
            raise CorruptCheckpointError(f"{where} uses external storage")
    if tuple(dsid.shape) != t.shape:
        raise CorruptCheckpointError(
            f"{where} has shape {tuple(dsid.shape)}, the index says {t.shape}"
        )
    want = types.get(t.dtype.str)
    if want is None:
        want = types[t.dtype.str] = h5type(t.dtype)
    if not dsid.get_type().equal(want):
        try:
            dt = dsid.dtype
        except (TypeError, ValueError):
            raise CorruptCheckpointError(f"{where} has an unsupported HDF5 type") from None
        if not _dtype_matches(np.dtype(dt), t.dtype):
            raise CorruptCheckpointError(f"{where} has dtype {dt}, the index says {t.dtype}")
    if t.filters is not None:
        return
    if t.nbytes and off != t.offset:
        raise CorruptCheckpointError(f"{where} is at offset {off}, the index says {t.offset}")
    # (a contiguous dataset with this shape, dtype and offset stores exactly nbytes)


def _check_chunked(dsid: h5py.h5d.DatasetID, t: TensorEntry, where: str) -> None:
    """A compressed tensor's dataset: chunked as recorded, exactly the recorded filters."""
    assert t.filters is not None
    dcpl = dsid.get_create_plist()
    if dcpl.get_layout() != h5py.h5d.CHUNKED:
        raise CorruptCheckpointError(
            f"{where} is not chunked storage, but the index says it is compressed"
        )
    if dcpl.get_external_count() != 0:
        raise CorruptCheckpointError(f"{where} uses external storage")
    chunks = tuple(int(c) for c in dcpl.get_chunk())
    if chunks != t.chunks:
        raise CorruptCheckpointError(f"{where} has chunks {chunks}, the index says {t.chunks}")
    got = []
    for i in range(dcpl.get_nfilters()):
        code, _flags, values, _name = dcpl.get_filter(i)
        got.append((int(code), tuple(int(x) for x in values)))
    want = t.filters.hdf5_filters(t.dtype.itemsize)
    if got != want:
        raise CorruptCheckpointError(
            f"{where} has filters {got} (HDF5 filter id, values), the index says "
            f"{want} ({t.filters.spec})"
        )


def read_dataset(path: str, entry: TensorEntry, out: np.ndarray) -> None:
    """Read a whole dataset into ``out`` (C-contiguous, the entry's shape and dtype) with
    serial HDF5: the way compressed tensors are read outside an MPI job.

    Raises:
        CorruptCheckpointError: HDF5 cannot read it (a damaged chunk that does not inflate).
    """
    try:
        with open_h5(path, "r") as f:
            dsid = h5py.h5d.open(f.id, entry.dataset.encode())
            try:
                dsid.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
            finally:
                dsid.close()
    except (OSError, KeyError, ValueError) as e:
        raise CorruptCheckpointError(
            f"cannot read tensor {entry.key!r} (dataset {entry.dataset!r}) from {path!r}: {e}"
        ) from None
