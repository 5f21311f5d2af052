"""Writing a checkpoint: the commit protocol (DESIGN.md "Commit protocol").

Call order (``write_checkpoint`` is collective; inside it):

1. every rank: agree that all ranks save the same tensors (keys, dtypes, shapes);
2. rank 0: create ``P.data-<token>.h5`` with every dataset (contiguous, allocated,
   in one deterministic order); the outcome is agreed and the dataset offsets are
   broadcast;
3. every rank: write its pieces (direct IO or collective MPI-IO, see
   :mod:`.transfer`), checksum them while the disk flushes, sync;
4. rank 0: gather every rank's outcome and slice checksums; if all succeeded,
   fsync the data file, write ``P.index.json`` atomically (tmp + fsync + rename +
   directory fsync) and remove the data files of ``P`` the index does not name;
5. rank 0 broadcasts the outcome; every rank returns or raises the same error.
"""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..errors import CheckpointError
from . import hdf5
from .checksum import DEFAULT_ALGORITHM, checksum
from .cleanup import remove_stale_files
from .fsutil import atomic_write, fsync_path, remove_quietly
from .index import CheckpointIndex, SliceEntry, TensorEntry, dataset_name_for_key
from .mpiio import Piece
from .options import IOOptions
from .paths import data_file_name, data_file_path, index_path, new_token
from .transfer import move_pieces

__all__ = ["SaveTensor", "library_versions", "write_checkpoint"]


@dataclass
class SaveTensor:
    """A tensor to save: its global description and this rank's pieces to write.

    Attributes:
        key: The checkpoint key.
        dtype: The numpy dtype.
        shape: The global shape.
        layout: ``(sharding_specs, mesh dim_names, mesh shape)`` at save (tuples).
        pieces: ``(start, array)`` hyperslabs this rank writes (C-contiguous arrays).
    """

    key: str
    dtype: np.dtype
    shape: tuple[int, ...]
    layout: tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]
    pieces: list[tuple[tuple[int, ...], np.ndarray]]


def library_versions() -> dict[str, str]:
    """Versions recorded in every index."""
    import h5py
    import mpi4py

    from .._version import __version__

    return {
        "hpckpt": __version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "mpi4py": mpi4py.__version__,
        "numpy": np.__version__,
        "mpi": MPI.Get_library_version().replace("\x00", "").splitlines()[0].strip(),
    }


def _checksums(
    pieces: list[tuple[int, tuple[int, ...], np.ndarray]],
) -> list[tuple[int, tuple[int, ...], tuple[int, ...], int]]:
    return [(i, start, a.shape, checksum(a)) for i, start, a in pieces]


def _slice_rows(
    slices: list[tuple[int, tuple[int, ...], tuple[int, ...], int]], width: int
) -> np.ndarray:
    """This rank's written slices as int64 rows ``[tensor, crc, *start, *shape]`` (padded)."""
    rows = np.zeros((len(slices), 2 + 2 * width), dtype=np.int64)
    for r, (i, start, shape, crc) in enumerate(slices):
        n = len(start)
        rows[r, 0] = i
        rows[r, 1] = crc
        rows[r, 2 : 2 + n] = start
        rows[r, 2 + width : 2 + width + n] = shape
    return rows


def _agree_on_target(
    comm: MPI.Comm, prefix: str, tensors: Sequence[SaveTensor], deadline: Deadline, what: str
) -> None:
    """Every rank writes the same checkpoint: the same path, the same tensors (keys, dtypes,
    shapes). Checked before anything is created, so that no rank opens another file
    collectively (an open MPI cannot bound) and nothing is left behind.

    Collective: call on all ranks.
    """
    signature = zlib.crc32(repr([(t.key, t.dtype.str, t.shape) for t in tensors]).encode())
    _dist.agree_same_path(comm, prefix, what, deadline, extra=signature)


def write_checkpoint(
    comm: MPI.Comm,
    prefix: str,
    tensors: Sequence[SaveTensor],
    *,
    graph: dict | None,
    options: IOOptions,
    deadline: Deadline,
) -> int:
    """Write and commit checkpoint ``prefix``; returns the data file's size in bytes.

    ``tensors`` must list the same keys, dtypes and shapes in the same order on
    every rank; each rank's pieces are its own.

    Collective: call on all ranks.
    """
    what = f"write of checkpoint {prefix!r}"
    own = [(i, tuple(start), a) for i, t in enumerate(tensors) for start, a in t.pieces if a.size]
    # The checksums run in a worker thread while the written pages are flushed to disk:
    # the sync is waiting on the device, the CRC on the CPU.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpckpt-crc")
    try:
        return _write_and_commit(comm, prefix, tensors, own, pool, graph, options, deadline, what)
    finally:
        pool.shutdown(wait=True)


def _write_and_commit(
    comm: MPI.Comm,
    prefix: str,
    tensors: Sequence[SaveTensor],
    own: list[tuple[int, tuple[int, ...], np.ndarray]],
    pool: ThreadPoolExecutor,
    graph: dict | None,
    options: IOOptions,
    deadline: Deadline,
    what: str,
) -> int:
    rank = comm.Get_rank()
    _agree_on_target(comm, prefix, tensors, deadline, what)

    names = [dataset_name_for_key(t.key) for t in tensors]

    def create() -> dict | None:
        _faults.point("create", rank)
        if rank != 0:
            return None
        os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
        token = new_token()
        path = data_file_path(prefix, data_file_name(prefix, token))
        specs = [hdf5.DatasetSpec(n, t.dtype, t.shape) for n, t in zip(names, tensors, strict=True)]
        offsets, size = hdf5.create_data_file(
            path, specs, alignment=options.alignment, threshold=options.alignment_threshold
        )
        return {"token": token, "offsets": offsets, "size": size}

    plan = _dist.run_agreed(comm, what, create, deadline)
    plan = _dist.bcast_json(comm, plan, 0, deadline)
    data_name = data_file_name(prefix, plan["token"])
    data_path = data_file_path(prefix, data_name)
    offsets: list[int | None] = plan["offsets"]

    # Every rank makes every collective call below even after a local failure
    # (with nothing to write), so that a failure is agreed on, never a hang.
    exc: BaseException | None = None
    pieces: list[Piece] = []
    try:
        _faults.point("before_data", rank)
        for i, start, a in own:
            off = offsets[i]
            if off is None:
                raise CheckpointError(f"{what}: tensor {tensors[i].key!r} has no storage")
            pieces.append(Piece(off, tensors[i].shape, start, a))
    except BaseException as e:
        exc, pieces = e, []
    crcs: list[Future] = []
    try:
        move_pieces(
            comm,
            data_path,
            pieces,
            options,
            write=True,
            deadline=deadline,
            on_written=lambda: crcs.append(pool.submit(_checksums, own)),
        )
        _faults.point("after_data", rank)
    except BaseException as e:
        exc = exc or e
    width = max((len(t.shape) for t in tensors), default=0)
    rows = np.zeros((0, 2 + 2 * width), dtype=np.int64)
    try:
        if exc is None:
            rows = _slice_rows(crcs[0].result() if crcs else _checksums(own), width)
    except BaseException as e:
        exc = e

    exc = _dist.interrupted(exc)  # a signal deferred during the data phase fails the save here
    errors = _dist.gather_json(comm, _dist.failure_record(exc), 0, deadline)
    gathered = _dist.gather_rows(comm, rows, 0, deadline)
    records: list | None = None
    if rank == 0:
        assert errors is not None and gathered is not None
        records = errors
        if all(r is None for r in records):
            try:
                _faults.point("before_commit", rank)
                _dist.raise_interrupt()  # a signal on rank 0: no commit
                _commit(prefix, data_path, data_name, plan, names, tensors, gathered, graph, comm)
            except BaseException as e:
                exc = e
                records[0] = _dist.failure_record(e)
        if any(r is not None for r in records):
            remove_quietly(data_path)
    records = _dist.bcast_json(comm, records, 0, deadline)
    _dist.raise_failures(comm, what, records, exc)
    return int(plan["size"])


def _commit(
    prefix: str,
    data_path: str,
    data_name: str,
    plan: dict,
    names: list[str],
    tensors: Sequence[SaveTensor],
    rows: np.ndarray,
    graph: dict | None,
    comm: MPI.Comm,
) -> None:
    per_tensor: list[list[SliceEntry]] = [[] for _ in tensors]
    width = (rows.shape[1] - 2) // 2
    for row in rows.tolist():
        i = row[0]
        n = len(tensors[i].shape)
        per_tensor[i].append(
            SliceEntry(tuple(row[2 : 2 + n]), tuple(row[2 + width : 2 + width + n]), row[1])
        )
    entries = {}
    offsets = plan["offsets"]
    for i, t in enumerate(tensors):
        specs, dim_names, mesh_shape = t.layout
        sl = per_tensor[i]
        if len(sl) > 1:
            sl.sort(key=lambda s: s.start)
        entries[t.key] = TensorEntry(
            t.key, names[i], t.dtype, t.shape, offsets[i], specs, dim_names, mesh_shape, tuple(sl)
        )
    index = CheckpointIndex(
        data_file=data_name,
        data_size=int(plan["size"]),
        tensors=entries,
        nprocs=comm.Get_size(),
        created=time.time(),
        graph=graph,
        library=library_versions(),
        checksum=DEFAULT_ALGORITHM,
    )
    fsync_path(data_path)
    atomic_write(index_path(prefix), index.to_json().encode(), plan["token"])
    remove_stale_files(prefix, keep=data_name)
