"""The bytes of a data file that are not raw tensor data: its HDF5 structure.

Creating the datasets of a data file is serial HDF5 metadata work on rank 0 (about
0.1 ms per dataset). A training job saves the same tensors again and again: the data
file of the next save has the same structure, byte for byte, except for the raw data.
:class:`FileTemplate` keeps the bytes of a freshly created file that are not raw data
(its metadata; runs of zeros are left out) and writes them into the next file, which
is then extended to the same size: a valid HDF5 file with every dataset at the same
offset, made in a few writes.

The same bytes, zeros included and in file order, have a checksum: the *structure
checksum* that the index records (``data_file.structure_checksum``). A restore that
reads raw bytes at the index's offsets (not through HDF5) compares it instead of
opening every dataset with HDF5 (:func:`.hdf5.structure_unchanged`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["FileTemplate", "capture", "create_from", "gaps", "structure_checksum"]

_ZERO_RUN = 4096  # zero runs at least this long are not stored
_READ_BYTES = 1 << 20  # a gap is read in pieces of at most this size


@dataclass(frozen=True)
class FileTemplate:
    """The non-raw bytes of a data file: ``(offset, bytes)`` regions and the file size."""

    regions: tuple[tuple[int, bytes], ...]
    size: int
    checksum: int = 0  # the structure checksum (see the module's docstring)

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return sum(len(b) for _, b in self.regions)


def _strip_zero_runs(offset: int, data: bytes) -> list[tuple[int, bytes]]:
    out = []
    i, n = 0, len(data)
    while i < n:
        # skip zeros
        j = i
        while j < n and data[j] == 0:
            j += 1
        if j >= n:
            break
        # take bytes until a long zero run
        k = j
        while k < n:
            z = data.find(b"\x00" * _ZERO_RUN, k)
            if z < 0:
                k = n
                break
            k = z
            break
        out.append((offset + j, data[j:k]))
        i = k
    return out


def gaps(raw: Sequence[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """The ``[lo, hi)`` ranges of a file of ``size`` bytes outside the raw data, ``raw``
    ``(offset, nbytes)``."""
    out = []
    pos = 0
    for lo, hi in sorted((o, o + n) for o, n in raw if n):
        if lo > pos:
            out.append((pos, min(lo, size)))
        pos = max(pos, hi)
    if size > pos:
        out.append((pos, size))
    return [(lo, hi) for lo, hi in out if hi > lo]


def _pieces(fd: int, spans: Sequence[tuple[int, int]]) -> Iterator[tuple[int, bytes]]:
    """The bytes of ``spans``, in pieces of at most ``_READ_BYTES``; a short read raises."""
    for lo, hi in spans:
        pos = lo
        while pos < hi:
            data = os.pread(fd, min(_READ_BYTES, hi - pos), pos)
            if not data:
                raise OSError(f"the file ends at {pos}, before {hi}")
            yield pos, data
            pos += len(data)


def capture(
    path: str, raw: Sequence[tuple[int, int]], size: int, fn: Callable[..., int]
) -> FileTemplate:
    """The template of the file at ``path``, whose raw data lies in ``raw`` ``(offset, nbytes)``,
    with its structure checksum under the checksum function ``fn``."""
    regions: list[tuple[int, bytes]] = []
    crc = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for lo, hi in gaps(raw, size):
            data = b"".join(d for _, d in _pieces(fd, [(lo, hi)]))
            crc = fn(data, crc)
            regions += _strip_zero_runs(lo, data)
    finally:
        os.close(fd)
    return FileTemplate(tuple(regions), size, crc)


def structure_checksum(
    fd: int, raw: Sequence[tuple[int, int]], size: int, fn: Callable[..., int], limit: int
) -> int | None:
    """The structure checksum of the open file ``fd`` of ``size`` bytes whose raw data
    lies in ``raw``; ``None`` (nothing read) when its other bytes exceed ``limit``."""
    spans = gaps(raw, size)
    if sum(hi - lo for lo, hi in spans) > limit:
        return None
    crc = 0
    for _, data in _pieces(fd, spans):
        crc = fn(data, crc)
    return crc


def create_from(path: str, template: FileTemplate) -> None:
    """Create ``path`` from ``template`` (it must not exist)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for off, data in template.regions:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(fd, view[done:], off + done)
        os.ftruncate(fd, template.size)
    except BaseException:
        os.close(fd)
        try:
            os.remove(path)
        except OSError:
            pass
        raise
    os.close(fd)
