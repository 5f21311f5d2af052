"""Writing a checkpoint: the commit protocol (DESIGN.md "Commit protocol").

Call order (``write_checkpoint`` is collective; inside it):

1. every rank: agree that all ranks save the same tensors with the same layouts
   (one reduction of a structure hash; on a mismatch the ranks that differ are named);
2. rank 0: create ``P.data-<token>.h5`` with every dataset (contiguous, allocated,
   in one deterministic order); the outcome is agreed and the dataset offsets are
   broadcast;
3. every rank: write its pieces (direct IO or collective MPI-IO, see
   :mod:`.transfer`), checksum them while the disk flushes, sync;
4. rank 0: gather every rank's outcome and slice checksums (fixed-size records);
   check that every saved slice was written exactly once (layout-based tensors) and
   that per-rank boxes tile each tensor exactly once; if all is well, fsync the data
   file, write ``P.index.json`` atomically (tmp + fsync + rename + directory fsync)
   and remove the data files of ``P`` the index does not name;
5. rank 0 broadcasts the outcome; every rank returns or raises the same error.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..errors import CheckpointError, CorruptCheckpointError
from ..layout import LayoutSpec
from . import hdf5
from .checksum import DEFAULT_ALGORITHM, checksum
from .cleanup import remove_stale_files
from .fsutil import atomic_write, fsync_path, remove_quietly
from .index import REPLICA_SPLIT_BYTES, CheckpointIndex, TensorEntry, dataset_name_for_key
from .mpiio import Piece
from .options import IOOptions
from .paths import data_file_name, data_file_path, index_path, new_token
from .slicing import DerivedSlicing, ListedSlicing, check_exact_cover
from .transfer import move_pieces

__all__ = [
    "SaveTensor",
    "agree_structure",
    "derived_slicing",
    "index_entries",
    "library_versions",
    "write_checkpoint",
]


@dataclass
class SaveTensor:
    """A tensor to save: its global description and this rank's pieces to write.

    Attributes:
        key: The checkpoint key.
        dtype: The numpy dtype of the stored bytes.
        shape: The global shape.
        layout: Its layout: the saved slices are derived from it
            (:func:`derived_slicing`), and ``slice_ids`` names the slice of each
            piece. ``None``: per-rank boxes, listed in the index (every rank's
            pieces together must tile the tensor exactly once).
        pieces: ``(start, array)`` hyperslabs this rank writes (C-contiguous arrays).
        slice_ids: With a layout, the derived slice index of each piece.
        logical_dtype: The dtype the bytes hold if it is not a numpy dtype.
        checksums: The save-time checksum of each piece when the pieces are copies
            of saved data (a flush of the local tier to the parallel file system):
            the bytes written must match them, so that the index records checksums
            computed when the state was saved, not when it was copied.
    """

    key: str
    dtype: np.dtype
    shape: tuple[int, ...]
    layout: LayoutSpec | None
    pieces: list[tuple[tuple[int, ...], np.ndarray]]
    slice_ids: list[int] = field(default_factory=list)
    logical_dtype: str | None = None
    checksums: list[int] | None = None


def derived_slicing(shape: tuple[int, ...], layout: LayoutSpec, dtype: np.dtype) -> DerivedSlicing:
    """The slices a save writes for a layout-based tensor (what the index derives)."""
    return DerivedSlicing(shape, layout, dtype.itemsize, REPLICA_SPLIT_BYTES)


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


def structure_hash(tensors: Sequence[SaveTensor]) -> int:
    """A 63-bit hash of what every rank must agree on: keys, dtypes, shapes, layouts."""
    h = hashlib.blake2b(digest_size=8)
    for t in tensors:
        lay = (
            repr((t.layout.specs, t.layout.dim_names, t.layout.mesh_shape, t.layout.splits))
            if t.layout
            else "boxes"
        )
        h.update(repr((t.key, t.dtype.str, t.shape, lay, t.logical_dtype)).encode())
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def _checksums(pieces: list[tuple[int, int, np.ndarray]]) -> list[int]:
    return [checksum(a) for _, _, a in pieces]


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

    ``tensors`` must list the same keys, dtypes, shapes and layouts in the same order
    on every rank; each rank's pieces are its own.

    Collective: call on all ranks.
    """
    what = f"write of checkpoint {prefix!r}"
    # (tensor, piece number, array) of every non-empty piece
    own = [(i, j, a) for i, t in enumerate(tensors) for j, (_, a) in enumerate(t.pieces) if a.size]
    # The checksums run in a worker thread while the written pages are flushed to disk:
    # the sync is waiting on the device, the CRC on the CPU.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpckpt-crc")
    try:
        return _write_and_commit(comm, prefix, tensors, own, pool, graph, options, deadline, what)
    finally:
        pool.shutdown(wait=True)


def agree_structure(
    comm: MPI.Comm, tensors: Sequence[SaveTensor], deadline: Deadline, what: str
) -> None:
    """Raise the same :class:`CheckpointError` on every rank unless all ranks save the
    same keys, dtypes, shapes and layouts (ranks that differ are named).

    Collective: call on all ranks.
    """
    h = structure_hash(tensors)
    lo = _dist.allreduce_int(comm, h, MPI.MIN, deadline)
    hi = _dist.allreduce_int(comm, h, MPI.MAX, deadline)
    if lo == hi:
        return
    hashes = _dist.allgather_json(comm, h, deadline)
    odd = [r for r, x in enumerate(hashes) if x != hashes[0]]
    raise CheckpointError(
        f"{what}: ranks disagree on the tensors to save, or on their layouts (ranks {odd} "
        f"differ from rank 0): every rank must save the same keys, dtypes, shapes and layouts"
    )


def _write_and_commit(
    comm: MPI.Comm,
    prefix: str,
    tensors: Sequence[SaveTensor],
    own: list[tuple[int, int, np.ndarray]],
    pool: ThreadPoolExecutor,
    graph: dict | None,
    options: IOOptions,
    deadline: Deadline,
    what: str,
) -> int:
    rank = comm.Get_rank()
    agree_structure(comm, tensors, deadline, what)
    names = [dataset_name_for_key(t.key) for t in tensors]

    def create() -> dict | None:
        _faults.point("create", rank)
        if rank != 0:
            return None
        os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
        token = new_token()
        path = data_file_path(prefix, data_file_name(prefix, token))
        specs = [
            hdf5.DatasetSpec(n, t.dtype, t.shape, t.logical_dtype)
            for n, t in zip(names, tensors, strict=True)
        ]
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
        for i, j, a in own:
            off = offsets[i]
            if off is None:
                raise CheckpointError(f"{what}: tensor {tensors[i].key!r} has no storage")
            pieces.append(Piece(off, tensors[i].shape, tuple(tensors[i].pieces[j][0]), a))
    except Exception as e:
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
    except Exception as e:
        exc = exc or e
    derived, listed = _records(tensors, own, rank)
    try:
        if exc is None:
            values = crcs[0].result() if crcs else _checksums(own)
            _check_known(tensors, own, values, what)
            derived, listed = _records(tensors, own, rank, values)
    except Exception as e:
        exc = e

    errors = _dist.gather_json(comm, _dist.failure_record(exc), 0, deadline)
    got_derived = _dist.gather_rows(comm, derived, 0, deadline)
    got_listed = _dist.gather_rows(comm, listed, 0, deadline)
    records: list | None = None
    if rank == 0:
        assert errors is not None and got_derived is not None and got_listed is not None
        records = errors
        if all(r is None for r in records):
            try:
                _faults.point("before_commit", rank)
                entries = index_entries(tensors, names, offsets, got_derived, got_listed, what)
                _commit(prefix, data_path, data_name, plan, entries, graph, comm)
            except Exception as e:
                exc = e
                records[0] = _dist.failure_record(e)
        if any(r is not None for r in records):
            remove_quietly(data_path)
    records = _dist.bcast_json(comm, records, 0, deadline)
    _dist.raise_failures(comm, what, records, exc)
    return int(plan["size"])


def _check_known(
    tensors: Sequence[SaveTensor],
    own: list[tuple[int, int, np.ndarray]],
    values: list[int],
    what: str,
) -> None:
    """The written copies match their save-time checksums (``SaveTensor.checksums``)."""
    for (i, j, _), crc in zip(own, values, strict=True):
        known = tensors[i].checksums
        if known is not None and int(known[j]) != crc:
            raise CorruptCheckpointError(
                f"{what}: piece {j} of tensor {tensors[i].key!r} does not match the checksum "
                f"computed when it was saved (its source copy is damaged)"
            )


def _width(tensors: Sequence[SaveTensor]) -> int:
    return max((len(t.shape) for t in tensors if t.layout is None), default=0)


def _records(
    tensors: Sequence[SaveTensor],
    own: list[tuple[int, int, np.ndarray]],
    rank: int,
    values: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """This rank's slice records: ``[tensor, slice, crc, rank]`` for layout-based tensors,
    ``[tensor, crc, rank, *start, *shape]`` (padded) for listed ones."""
    width = _width(tensors)
    derived = np.zeros((0, 4), dtype=np.int64)
    listed = np.zeros((0, 3 + 2 * width), dtype=np.int64)
    if values is None:
        return derived, listed
    d_rows, l_rows = [], []
    for (i, j, a), crc in zip(own, values, strict=True):
        t = tensors[i]
        if t.layout is not None:
            d_rows.append([i, t.slice_ids[j], crc, rank])
        else:
            start = list(t.pieces[j][0])
            row = [i, crc, rank] + [0] * (2 * width)
            row[3 : 3 + len(start)] = start
            row[3 + width : 3 + width + len(start)] = list(a.shape)
            l_rows.append(row)
    if d_rows:
        derived = np.asarray(d_rows, dtype=np.int64)
    if l_rows:
        listed = np.asarray(l_rows, dtype=np.int64)
    return derived, listed


def index_entries(
    tensors: Sequence[SaveTensor],
    names: list[str],
    offsets: list[int | None],
    derived: np.ndarray,
    listed: np.ndarray,
    what: str,
) -> dict[str, TensorEntry]:
    """Rank 0: build every tensor's index entry; check that every slice was written once.

    ``derived`` rows are ``[tensor, slice, crc, rank, ...]``, ``listed`` rows
    ``[tensor, crc, rank, *start, *shape, ...]`` (padded to the largest rank of a
    listed tensor); trailing columns are ignored. A listed tensor's slices are its
    rows in the order given.
    """
    width = _width(tensors)
    by_tensor_d: dict[int, np.ndarray] = {}
    if len(derived):
        order = np.argsort(derived[:, 0], kind="stable")
        derived = derived[order]
        cuts = np.flatnonzero(np.diff(derived[:, 0])) + 1
        for part in np.split(derived, cuts):
            by_tensor_d[int(part[0, 0])] = part
    by_tensor_l: dict[int, np.ndarray] = {}
    if len(listed):
        order = np.argsort(listed[:, 0], kind="stable")
        listed = listed[order]
        cuts = np.flatnonzero(np.diff(listed[:, 0])) + 1
        for part in np.split(listed, cuts):
            by_tensor_l[int(part[0, 0])] = part
    entries: dict[str, TensorEntry] = {}
    for i, t in enumerate(tensors):
        nd = len(t.shape)
        if t.layout is not None:
            slicing = derived_slicing(t.shape, t.layout, t.dtype)
            rows = by_tensor_d.get(i, np.zeros((0, 4), dtype=np.int64))
            crcs = np.zeros(len(slicing), dtype=np.uint32)
            seen = np.zeros(len(slicing), dtype=np.int64)
            ids = rows[:, 1]
            if np.any(ids < 0) or np.any(ids >= len(slicing)):
                raise CheckpointError(f"{what}: tensor {t.key!r}: a slice number out of range")
            np.add.at(seen, ids, 1)
            crcs[ids] = rows[:, 2].astype(np.uint32)
            sizes = slicing.nonempty()
            if np.any(seen[sizes] != 1) or np.any(seen[~sizes] != 0):
                missing = np.flatnonzero(sizes & (seen == 0)).tolist()
                twice = np.flatnonzero(seen > 1).tolist()
                raise CheckpointError(
                    f"{what}: tensor {t.key!r} would be committed with holes or overlaps "
                    f"(slices never written: {missing[:8]}, written more than once: {twice[:8]})"
                )
            entries[t.key] = TensorEntry(
                t.key,
                names[i],
                t.dtype,
                t.shape,
                offsets[i],
                t.layout,
                slicing,
                crcs,
                t.logical_dtype,
            )
        else:
            rows = by_tensor_l.get(i, np.zeros((0, 3 + 2 * width), dtype=np.int64))
            starts = rows[:, 3 : 3 + nd]
            shapes = rows[:, 3 + width : 3 + width + nd]
            problem = check_exact_cover(t.shape, starts, shapes)
            if problem is not None:
                ranks = sorted({int(r) for r in rows[:, 2]})
                raise CheckpointError(
                    f"{what}: the boxes of tensor {t.key!r} written by ranks {ranks} do not tile "
                    f"its shape {t.shape} exactly once ({problem})"
                )
            listed_slicing = ListedSlicing(starts, shapes)
            crcs = rows[:, 1].astype(np.uint32)
            entries[t.key] = TensorEntry(
                t.key,
                names[i],
                t.dtype,
                t.shape,
                offsets[i],
                None,
                listed_slicing,
                crcs,
                t.logical_dtype,
            )
    return entries


def _commit(
    prefix: str,
    data_path: str,
    data_name: str,
    plan: dict,
    entries: dict[str, TensorEntry],
    graph: dict | None,
    comm: MPI.Comm,
) -> None:
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
