"""Loading a checkpoint on one process (no MPI): the reader, the command line, rank 0.

Every read of an index file goes through :func:`read_index_bytes` (bounded,
regular files only, never blocks).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from ..dtypes import from_logical
from ..errors import CorruptCheckpointError
from . import hdf5
from .bounce import read_into
from .fsutil import read_required
from .index import MAX_INDEX_BYTES, CheckpointIndex, TensorEntry
from .index_parse import parse_index
from .mpiio import READ_CHUNK_BYTES
from .paths import data_file_path, index_path, is_data_file_name
from .verify import verify_whole

__all__ = [
    "as_logical",
    "check_data_file",
    "load_index",
    "named_data_file",
    "read_index_bytes",
    "read_index_file",
    "read_tensor_serial",
    "verify_tensor",
]


def read_index_bytes(prefix: str) -> bytes:
    """The bytes of ``P.index.json`` (at most ``MAX_INDEX_BYTES``; regular files only).

    Raises:
        NotFoundError: No committed checkpoint at ``prefix``.
        CorruptCheckpointError: Not a regular file, or too large.
    """
    ip = index_path(prefix)
    return read_required(
        ip, MAX_INDEX_BYTES, "index", f"no checkpoint at {prefix!r}: {ip!r} does not exist"
    )


def read_index_file(prefix: str) -> tuple[CheckpointIndex, int]:
    """Parse ``P.index.json`` alone (no HDF5 access); returns the index and its size in bytes.

    Raises:
        NotFoundError: The index does not exist.
        CorruptCheckpointError: It is not a valid index.
    """
    text = read_index_bytes(prefix)
    return parse_index(text, source=index_path(prefix)), len(text)


def load_index(prefix: str, *, check_data: bool = True) -> CheckpointIndex:
    """Read and validate ``P.index.json`` and (``check_data``) the data file's structure.

    Raises:
        NotFoundError: No committed checkpoint at ``prefix``, or its data file is gone.
        CorruptCheckpointError: The index or the data file is damaged or hostile.
    """
    index, _ = read_index_file(prefix)
    if check_data:
        check_data_file(prefix, index)
    return index


def check_data_file(prefix: str, index: CheckpointIndex) -> None:
    """Validate the structure of the data file that ``index`` (of ``prefix``) names.

    Raises:
        NotFoundError: The data file is missing.
        CorruptCheckpointError: It is damaged or hostile.
    """
    hdf5.validate_data_file(
        data_file_path(prefix, index.data_file), index.data_size, list(index.tensors.values())
    )


def named_data_file(prefix: str) -> str | None:
    """The data file name the committed index of ``prefix`` names; ``None`` if unreadable."""
    try:
        doc = json.loads(read_index_bytes(prefix))
        name = doc["data_file"]["name"]
    except (OSError, CorruptCheckpointError, ValueError, RecursionError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) and is_data_file_name(name) else None


def verify_tensor(entry: TensorEntry, array: np.ndarray, algorithm: str) -> None:
    """Check every saved slice of a whole (global) tensor against its checksum.

    Args:
        entry: The tensor's index entry.
        array: Its global array.
        algorithm: The index's checksum algorithm (``CheckpointIndex.checksum``).

    Raises:
        CorruptCheckpointError: A slice's bytes do not match, naming the tensor and byte range.
    """
    verify_whole(entry, array, algorithm)


def as_logical(entry: TensorEntry, array: np.ndarray) -> np.ndarray:
    """``array`` (a tensor's stored bytes) viewed as its logical dtype (``bfloat16``, ...).

    Raises:
        CorruptCheckpointError: The index names an unknown logical dtype or one of
            another width.
        ImportError: Reading it needs ``ml_dtypes``, which is not installed.
    """
    if entry.logical_dtype is None:
        return array
    try:
        return array.view(from_logical(entry.logical_dtype, entry.dtype))
    except ValueError as e:
        raise CorruptCheckpointError(f"tensor {entry.key!r}: {e}") from None


def read_tensor_serial(
    prefix: str,
    index: CheckpointIndex,
    entry: TensorEntry,
    *,
    verify: bool = True,
    on_bytes: Callable[[int], None] | None = None,
    fd: int | None = None,
) -> np.ndarray:
    """Read one whole tensor on a single process (no MPI); verify its checksums.

    The array has the stored dtype (see :func:`as_logical`).

    Args:
        prefix: The checkpoint path.
        index: Its index.
        entry: The tensor.
        verify: Check its checksums.
        on_bytes: Told of each chunk of ``READ_CHUNK_BYTES`` read (a progress bar).
        fd: The data file, already open (see :func:`~.snapshot.open_checkpoint`);
            by default it is opened by name.

    Raises:
        CorruptCheckpointError: Short read, checksum mismatch, or an empty tensor whose
            dimensions numpy cannot represent.
    """
    try:
        out = np.empty(entry.shape, dtype=entry.dtype)
    except ValueError as e:  # (0, 2**61): empty, but too big for numpy's size arithmetic
        raise CorruptCheckpointError(
            f"tensor {entry.key!r} has shape {list(entry.shape)}, which numpy cannot hold ({e})"
        ) from None
    if entry.filters is not None:  # compressed: HDF5 inflates it (see io/filters.py)
        hdf5.read_dataset(data_file_path(prefix, index.data_file), entry, out)
        if verify:
            verify_tensor(entry, out, index.checksum)
        return out
    if entry.offset is None or out.size == 0:
        return out
    buf = out.reshape(-1).view(np.uint8)
    if fd is None:
        with open(data_file_path(prefix, index.data_file), "rb", buffering=0) as f:
            n = _pread_full(f.fileno(), buf, entry.offset, on_bytes)
    else:
        n = _pread_full(fd, buf, entry.offset, on_bytes)
    if n != buf.size:
        raise CorruptCheckpointError(
            f"short read of tensor {entry.key!r}: {n} of {buf.size} bytes at offset {entry.offset}"
        )
    if verify:
        verify_tensor(entry, out, index.checksum)
    return out


def _pread_full(
    fd: int, buf: np.ndarray, offset: int, on_bytes: Callable[[int], None] | None = None
) -> int:
    """Read in chunks of ``READ_CHUNK_BYTES`` until ``buf`` is full or the file ends.

    Each chunk goes through :func:`.bounce.read_into` (numpy's own arrays are at a
    page offset that the kernel's copy handles slowly).
    """
    view = buf.data.cast("B")
    n = 0
    while n < buf.size:
        want = min(READ_CHUNK_BYTES, buf.size - n)
        k = read_into(fd, view[n : n + want], offset + n)
        n += k
        if on_bytes is not None and k:
            on_bytes(k)
        if k < want:
            break
    return n
