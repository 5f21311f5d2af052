"""Reading a checkpoint collectively: the index, then each rank's hyperslabs.

Call order (both functions are collective):

* :func:`read_index`: every rank names the same path (agreed); rank 0 reads the
  index file (bounded, regular files only) and validates it; agreed; only then are
  the bytes broadcast, and the other ranks parse them on trust (agreed); up to
  ``VALIDATORS`` ranks check a share each of the data file's HDF5 structure;
  agreed.
* :func:`read_tensors`: every rank plans its pieces; agreed before any byte lands
  in a caller's array; every rank reads (direct IO or collective MPI-IO) and
  verifies the checksums of every saved slice its reads cover; agreed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..errors import CorruptCheckpointError
from . import hdf5
from .index import CheckpointIndex, TensorEntry, parse_index
from .load import read_index_bytes
from .mpiio import Piece
from .options import IOOptions
from .paths import data_file_path, index_path
from .transfer import move_pieces
from .verify import StreamVerifier

__all__ = ["VALIDATORS", "ReadRequest", "read_index", "read_tensors"]

VALIDATORS = 8  # ranks that share the structural check of a data file


@dataclass(frozen=True)
class ReadRequest:
    """A hyperslab of a saved tensor to read.

    Attributes:
        entry: The saved tensor.
        start: The hyperslab's first element in the global array.
        shape: The hyperslab's shape.
        out: Where to read it: a C-contiguous array of ``shape`` and the entry's
            dtype (a variable's own shard, so a restore needs no second buffer and
            no copy), or ``None`` for a new array.
    """

    entry: TensorEntry
    start: tuple[int, ...]
    shape: tuple[int, ...]
    out: np.ndarray | None = field(default=None, compare=False, repr=False)

    def destination(self) -> np.ndarray:
        """``out`` if it fits, else a new array."""
        o = self.out
        if (
            o is not None
            and o.shape == self.shape
            and o.dtype == self.entry.dtype
            and o.flags.c_contiguous
            and o.flags.writeable
        ):
            return o
        return np.empty(self.shape, dtype=self.entry.dtype)


def read_index(comm: MPI.Comm, prefix: str, deadline: Deadline) -> CheckpointIndex:
    """Read, validate and broadcast the index of ``prefix`` (with its data file's structure).

    Raises:
        NotFoundError: No committed checkpoint at ``prefix``, or its data file is gone.
        CorruptCheckpointError: The index or the data file is damaged or hostile.

    Collective: call on all ranks.
    """
    what = f"read of checkpoint {prefix!r}"
    _dist.agree_same_path(comm, prefix, what, deadline)  # before any rank opens a file

    rank, size = comm.Get_rank(), comm.Get_size()

    def load() -> tuple[bytes, CheckpointIndex] | None:
        _faults.point("read_index", rank)
        if rank != 0:
            return None
        data = read_index_bytes(prefix)
        return data, parse_index(data, source=index_path(prefix))

    # Rank 0 reads (bounded, regular files only) and validates; only a valid index is
    # broadcast, and the other ranks parse it on trust.
    got = _dist.run_agreed(comm, what, load, deadline)
    text = _dist.bcast_bytes(comm, got[0] if got is not None else None, 0, deadline)

    def parse() -> CheckpointIndex:
        return got[1] if got is not None else parse_index(text, trusted=True)

    index = _dist.run_agreed(comm, what, parse, deadline)
    # The data file's structure is checked by up to VALIDATORS ranks, a share each.
    validators = min(size, VALIDATORS)

    def validate() -> None:
        if rank < validators:
            tensors = list(index.tensors.values())[rank::validators]
            hdf5.validate_data_file(
                data_file_path(prefix, index.data_file),
                index.data_size,
                tensors,
                check_links=rank == 0,
                datasets=[t.dataset for t in index.tensors.values()] if rank == 0 else None,
            )

    _dist.run_agreed(comm, what, validate, deadline)
    return index


def read_tensors(
    comm: MPI.Comm,
    prefix: str,
    index: CheckpointIndex,
    requests: Sequence[ReadRequest],
    *,
    options: IOOptions,
    deadline: Deadline,
) -> list[np.ndarray]:
    """Read each request's hyperslab (into its ``out`` where given); verify; agree.

    Returns one array per request: its ``out`` when that fits, else a new array.
    A failure found before the data moves changes no ``out`` array; one found while
    or after it moves (an IO error, a checksum mismatch) may leave ``out`` arrays
    holding part of the checkpoint's data.

    Collective: call on all ranks (each with its own requests, possibly none).
    """
    what = f"read of checkpoint {prefix!r}"
    exc: BaseException | None = None
    arrays: list[np.ndarray] = []
    pieces: list[Piece] = []
    try:
        _faults.point("read_data", comm.Get_rank())
        arrays = [r.destination() for r in requests]
        pieces = [
            Piece(r.entry.offset, r.entry.shape, r.start, a)  # type: ignore[arg-type]
            for r, a in zip(requests, arrays, strict=True)
            if a.size
        ]
    except BaseException as e:
        exc, pieces = e, []
    # Agree before any byte lands in a variable: a failure found so far (planning,
    # a bad request) on any rank changes nothing anywhere.
    _dist.agree(comm, what, exc, deadline)
    verifier = None
    if options.verify_checksums and exc is None:
        verifier = StreamVerifier(
            index.checksum,
            [(r.entry, r.start, a) for r, a in zip(requests, arrays, strict=True)],
            stream_min_bytes=options.direct_io_threshold if options.collective else 0,
        )
    try:
        move_pieces(
            comm,
            data_file_path(prefix, index.data_file),
            pieces,
            options,
            write=False,
            deadline=deadline,
            on_chunk=verifier.on_chunk if verifier is not None else None,
        )
    except MPI.Exception as e:
        exc = exc or CorruptCheckpointError(f"MPI-IO error reading {prefix!r}: {e}")
    except OSError as e:
        exc = exc or CorruptCheckpointError(f"error reading {prefix!r}: {e}")
    except BaseException as e:
        exc = exc or e
    if verifier is not None:
        try:
            if exc is None:
                verifier.finish()
        except BaseException as e:
            exc = e
        finally:
            verifier.close()
    _dist.agree(comm, what, exc, deadline)
    return arrays
