"""The storage layer's own options (the public ``CheckpointOptions`` maps onto these)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .filters import Compression

__all__ = ["IO_MODES", "IOOptions"]

IO_MODES = ("auto", "mpiio", "hdf5", "posix")


@dataclass(frozen=True)
class IOOptions:
    """How the storage layer moves bytes.

    Attributes:
        collective: Every rank takes part in one collective IO phase (MPI-IO for
            strided or small pieces, direct ``pwrite``/``preadv`` for large
            contiguous ones); ``False``: per-rank ``pwrite``/``preadv`` only.
        mpi_info: MPI-IO hints for ``MPI.File.Open`` (and for parallel HDF5's
            ``mpio`` driver).
        verify_checksums: Check the checksum of every saved slice a read covers.
        direct_io_threshold: Contiguous pieces of at least this many bytes bypass
            MPI-IO aggregation (``None``: everything goes through two-phase
            collective MPI-IO). With ``io="hdf5"``: a dataset whose pieces on every
            rank are such runs is moved by independent MPI-IO inside the collective
            ``H5Dwrite``/``H5Dread`` (``H5FD_MPIO_INDIVIDUAL_IO``).
        alignment: Datasets of at least ``alignment_threshold`` bytes start at a
            multiple of this many bytes; ``None``: the file system's stripe or
            block size (:mod:`.striping`).
        alignment_threshold: See ``alignment``.
        io: ``"auto"``, ``"mpiio"``, ``"posix"`` (these three move bytes at the
            contiguous datasets' offsets, see ``collective`` and
            ``direct_io_threshold``) or ``"hdf5"`` (parallel HDF5: the file is
            created, written and read collectively through the ``mpio`` driver).
        compression: The filter pipeline of compressed tensors (``None``: none).
            Compression writes through parallel HDF5 whatever ``io`` says.
        striping_factor: MPI-IO hint ``striping_factor`` for collectively created
            files (Lustre: the new file's stripe count).
        striping_unit: MPI-IO hint ``striping_unit`` for collectively created files
            (Lustre: the stripe size); also the alignment when ``alignment`` is None.
        progress: Told ``progress(done, total)`` as this rank's data moves: bytes of
            its own share moved so far, and its whole share (``None``: not told).
    """

    collective: bool = True
    mpi_info: dict[str, str] | None = None
    verify_checksums: bool = True
    direct_io_threshold: int | None = 1 << 20
    alignment: int | None = None
    alignment_threshold: int = 1 << 20
    io: str = "auto"
    compression: Compression | None = None
    striping_factor: int | None = None
    striping_unit: int | None = None
    progress: Callable[[int, int], None] | None = None

    @property
    def parallel_hdf5(self) -> bool:
        """Whether a save creates and writes the data file with parallel HDF5."""
        return self.io == "hdf5" or self.compression is not None
