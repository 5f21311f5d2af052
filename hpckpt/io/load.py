"""Loading a checkpoint on one process (no MPI): the reader, the command line, rank 0.

Every read of an index file goes through :func:`read_index_bytes` (bounded,
regular files only, never blocks).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import CorruptCheckpointError
from . import hdf5
from .fsutil import read_required
from .index import MAX_INDEX_BYTES, CheckpointIndex, TensorEntry
from .index_parse import parse_index
from .paths import data_file_path, index_path, is_data_file_name
from .verify import verify_whole

__all__ = [
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


def read_tensor_serial(
    prefix: str,
    index: CheckpointIndex,
    entry: TensorEntry,
    *,
    verify: bool = True,
    fd: int | None = None,
) -> np.ndarray:
    """Read one whole tensor on a single process (no MPI); verify its checksums.

    Args:
        prefix: The checkpoint path.
        index: Its index.
        entry: The tensor.
        verify: Check its checksums.
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
    if entry.offset is None or out.size == 0:
        return out
    buf = out.reshape(-1).view(np.uint8)
    if fd is None:
        with open(data_file_path(prefix, index.data_file), "rb", buffering=0) as f:
            n = _pread_full(f.fileno(), buf, entry.offset)
    else:
        n = _pread_full(fd, buf, entry.offset)
    if n != buf.size:
        raise CorruptCheckpointError(
            f"short read of tensor {entry.key!r}: {n} of {buf.size} bytes at offset {entry.offset}"
        )
    if verify:
        verify_tensor(entry, out, index.checksum)
    return out


def _pread_full(fd: int, buf: np.ndarray, offset: int) -> int:
    """``preadv`` until ``buf`` is full or the file ends (one call moves at most ~2 GiB)."""
    view = buf.data
    n = 0
    while n < buf.size:
        k = os.preadv(fd, [view[n:]], offset + n)
        if k <= 0:
            break
        n += k
    return n
