"""The storage layer's own options (the public ``CheckpointOptions`` maps onto these)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["IOOptions"]


@dataclass(frozen=True)
class IOOptions:
    """How the storage layer moves bytes.

    Attributes:
        collective: Every rank takes part in one collective IO phase (MPI-IO for
            strided or small pieces, direct ``pwrite``/``preadv`` for large
            contiguous ones); ``False``: per-rank ``pwrite``/``preadv`` only.
        mpi_info: MPI-IO hints for ``MPI.File.Open``.
        verify_checksums: Check the checksum of every saved slice a read covers.
        direct_io_threshold: Contiguous pieces of at least this many bytes bypass
            MPI-IO (``None``: everything goes through MPI-IO).
        alignment: Datasets of at least ``alignment_threshold`` bytes start at a
            multiple of this many bytes.
        alignment_threshold: See ``alignment``.
        progress: Told ``progress(done, total)`` as this rank's data moves: bytes of
            its own share moved so far, and its whole share (``None``: not told).
    """

    collective: bool = True
    mpi_info: dict[str, str] | None = None
    verify_checksums: bool = True
    direct_io_threshold: int | None = 1 << 20
    alignment: int = 1 << 20
    alignment_threshold: int = 1 << 20
    progress: Callable[[int, int], None] | None = None
