"""Reusing a data file's HDF5 structure from one save to the next (rank 0's plan cache).

Creating the datasets of a data file is serial HDF5 metadata work on rank 0 (about
0.1 ms per dataset). A training job saves the same tensors again and again: the data
file of the next save has the same structure, byte for byte, except for the raw data.
:class:`FileTemplate` keeps the bytes of a freshly created file that are not raw data
(its metadata; runs of zeros are left out) and writes them into the next file, which
is then extended to the same size: a valid HDF5 file with every dataset at the same
offset, made in a few writes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FileTemplate", "capture", "create_from"]

_ZERO_RUN = 4096  # zero runs at least this long are not stored


@dataclass(frozen=True)
class FileTemplate:
    """The non-raw bytes of a data file: ``(offset, bytes)`` regions and the file size."""

    regions: tuple[tuple[int, bytes], ...]
    size: int

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


def capture(path: str, raw: Sequence[tuple[int, int]], size: int) -> FileTemplate:
    """The template of the file at ``path``, whose raw data lies in ``raw`` ``(offset, nbytes)``."""
    regions: list[tuple[int, bytes]] = []
    pos = 0
    spans = sorted((o, o + n) for o, n in raw if n)
    with open(path, "rb", buffering=0) as f:
        for lo, hi in [*spans, (size, size)]:
            if lo > pos:
                f.seek(pos)
                regions += _strip_zero_runs(pos, f.read(lo - pos))
            pos = max(pos, hi)
    return FileTemplate(tuple(regions), size)


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
