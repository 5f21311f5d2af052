"""Writing a checkpoint: the commit protocol (DESIGN.md "Commit protocol").

Call order (``write_checkpoint`` is collective; inside it):

1. every rank: agree that all ranks save the same tensors with the same layouts
   (one reduction of a structure hash; on a mismatch the ranks that differ are named);
2. rank 0: create ``P.data-<token>.h5`` with every dataset (contiguous, allocated,
   in one deterministic order); the outcome is agreed and the dataset offsets are
   broadcast. With parallel HDF5 (``io="hdf5"`` or compression) rank 0 only picks
   the token and the alignment, and every rank creates the file in step 3;
3. every rank: write its pieces (direct IO or collective MPI-IO, see
   :mod:`.transfer`; or parallel HDF5's collective ``H5Dwrite``, see :mod:`.phdf5`),
   checksum them while the disk flushes, sync;
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
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..errors import CheckpointError
from . import hdf5, phdf5
from .aggregate import BandTask, write_bands
from .checksum import DEFAULT_ALGORITHM, checksum, checksum_function
from .cleanup import remove_stale_files
from .fsutil import atomic_write, fsync_path, remove_quietly
from .index import CheckpointIndex, dataset_name_for_key
from .index_template import IndexTemplate
from .mpiio import Piece
from .options import IOOptions
from .paths import data_file_name, data_file_path, index_path, new_token
from .records import check_known, index_entries, rows_from_layouts, slice_records
from .save_tensor import SaveTensor, derived_slicing, structure_hash, use_rows, without_rows
from .slicing import (
    tiling_problem,
)
from .striping import resolve_alignment
from .template import FileTemplate, capture, create_from
from .transfer import ProgressCounter, move_pieces

__all__ = [
    "SaveTensor",
    "derived_slicing",
    "index_entries",
    "library_versions",
    "structure_hash",
    "tiling_problem",
    "use_rows",
    "without_rows",
    "write_checkpoint",
]


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
    agreed = _agree_structure(comm, prefix, tensors, options, deadline, what)
    if agreed[2] or options.parallel_hdf5:
        # no row bands: some rank's strided shard is not a contiguous array, or parallel
        # HDF5 writes each layout slice (strided or not) with its own hyperslab selection
        tensors = [without_rows(t) for t in tensors]
    # (tensor, piece number, array) of every non-empty piece
    own = [
        (i, j, a)
        for i, t in enumerate(tensors)
        if not t.rows
        for j, (_, a) in enumerate(t.pieces)
        if a.size
    ]
    # The checksums run in a worker thread while the written pages are flushed to disk:
    # the sync is waiting on the device, the CRC on the CPU.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpckpt-crc")
    try:
        return _write_and_commit(
            comm, prefix, tensors, own, pool, graph, options, deadline, what, agreed[:2]
        )
    finally:
        pool.shutdown(wait=True)


@dataclass
class _CachedPlan:
    """What a save with the same structure can reuse (every rank: offsets; rank 0: the
    data file's and the index's templates)."""

    offsets: list[int | None]
    size: int
    template: FileTemplate | None = None
    index: IndexTemplate | None = None  # rank 0, from the second save of the structure


# the plan of the last save of each structure (a few: a job saves one or two structures)
_PLANS: dict[int, _CachedPlan] = {}
_MAX_PLANS = 4


def _agree_structure(
    comm: MPI.Comm,
    prefix: str,
    tensors: Sequence[SaveTensor],
    options: IOOptions,
    deadline: Deadline,
    what: str,
) -> tuple[int, bool, bool]:
    """Agree that every rank saves the same structure into the same path (one
    reduction); returns the structure's hash, whether every rank holds a cached plan
    for it, and whether any rank holds a strided shard in a non-contiguous array (then
    no tensor is saved in row bands: the band exchange would need a copy of the shard,
    the zero-copy path does not)."""
    how = repr(
        (
            options.alignment,
            options.alignment_threshold,
            options.io,
            options.compression,
            options.striping_unit,
        )
    )  # the same on every rank (str hashes are salted per process: no hash() here)
    h = structure_hash(tensors) ^ int.from_bytes(
        hashlib.blake2b(how.encode(), digest_size=8).digest(), "little"
    ) & ((1 << 63) - 1)
    cached = h in _PLANS
    loose = any(t.rows and any(not a.flags.c_contiguous for _, a in t.pieces) for t in tensors)
    # the path travels in the same reduction: ranks that name different files must fail
    # before anything is created or opened (an MPI_File_open no timeout can bound)
    p = _dist.path_hash(prefix)
    got = _dist.allreduce_max(
        comm,
        np.array([h, -h, p, -p, 0 if cached else 1, int(loose)], dtype=np.int64),
        deadline,
    )
    if got[2] != -got[3]:
        _dist.raise_different_paths(comm, prefix, deadline)
    if got[0] == -got[1]:
        return h, not got[4], bool(got[5])
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
    agreed: tuple[int, bool],
) -> int:
    rank = comm.Get_rank()
    h, cached = agreed
    names = [dataset_name_for_key(t.key) for t in tensors]

    parallel = options.parallel_hdf5  # io="hdf5" or compression: see io/phdf5.py

    def create() -> dict | None:
        if not parallel:
            _faults.point("create", rank)
        if rank != 0:
            return None
        directory = os.path.dirname(prefix) or "."
        os.makedirs(directory, exist_ok=True)
        alignment = resolve_alignment(options.alignment, options.striping_unit, directory)
        token = new_token()
        if parallel:  # every rank creates the file in phdf5.write_file
            return {"token": token, "alignment": alignment}
        path = data_file_path(prefix, data_file_name(prefix, token))
        hit = _PLANS.get(h) if cached else None
        if hit is not None and hit.template is not None:
            create_from(path, hit.template)  # the same structure as last time
            return {"token": token, "structure": hit.template.checksum}
        specs = [
            hdf5.DatasetSpec(n, t.dtype, t.shape, t.logical_dtype)
            for n, t in zip(names, tensors, strict=True)
        ]
        offsets, size = hdf5.create_data_file(
            path, specs, alignment=alignment, threshold=options.alignment_threshold
        )
        raw = [(o, t.nbytes) for o, t in zip(offsets, tensors, strict=True) if o is not None]
        tpl = capture(path, raw, size, checksum_function(DEFAULT_ALGORITHM))
        _remember(h, _CachedPlan(offsets, size, tpl))
        return {"token": token, "offsets": offsets, "size": size, "structure": tpl.checksum}

    plan = _dist.run_agreed(comm, what, create, deadline)
    if cached:  # every rank knows the offsets: only the token travels
        structure = plan.get("structure") if plan is not None else None  # rank 0's
        token = _dist.bcast_json(comm, plan["token"] if plan is not None else None, 0, deadline)
        hit = _PLANS[h]
        plan = {"token": token, "offsets": hit.offsets, "size": hit.size, "structure": structure}
    else:
        plan = _dist.bcast_json(comm, plan, 0, deadline)
        if rank != 0 and not parallel:
            _remember(h, _CachedPlan(plan["offsets"], plan["size"]))
    data_name = data_file_name(prefix, plan["token"])
    data_path = data_file_path(prefix, data_name)
    crcs: list[Future] = []
    specs: list[hdf5.DatasetSpec] | None = None
    bands: list[tuple[int, int, int]] = []

    # Every rank makes every collective call below even after a local failure
    # (with nothing to write), so that a failure is agreed on, never a hang.
    exc: BaseException | None = None
    if parallel:  # --- io dispatch (issue 14): parallel HDF5 creates and writes the file ---
        specs = phdf5.dataset_specs(tensors, names, options.compression)
        counter = ProgressCounter(options, sum(a.nbytes for _, _, a in own))
        offsets, exc = phdf5.write_file(
            comm,
            data_path,
            specs,
            [t.pieces for t in tensors],
            options,
            alignment=int(plan["alignment"]),
            deadline=deadline,
            what=what,
            on_written=lambda: crcs.append(pool.submit(_checksums, own)),
            on_moved=counter.hook(),
        )
        try:
            _faults.point("after_data", rank)
            plan["size"] = os.path.getsize(data_path)
        except BaseException as e:
            exc = exc or e
    else:
        offsets, exc, bands = _write_data(
            comm, data_path, tensors, own, pool, crcs, plan, options, deadline, what
        )
    packed = _dist.all_true(
        comm, all(t.mesh_rank == rank for t in tensors if t.layout is not None), deadline
    )
    derived, listed = slice_records(tensors, own, rank)
    crc_array = np.zeros(0, dtype=np.uint32)
    try:
        if exc is None:
            values = crcs[0].result() if crcs else _checksums(own)
            check_known(tensors, own, values, what)
            if packed and not bands:  # the layouts say who wrote what: checksums only
                crc_array = np.asarray(  # in tensor order, as the derived rows would be
                    [
                        c
                        for (i, _, _), c in zip(own, values, strict=True)
                        if tensors[i].layout is not None
                    ],
                    dtype=np.uint32,
                )
                _, listed = slice_records(tensors, own, rank, values, derived_rows=False)
            else:
                derived, listed = slice_records(tensors, own, rank, values)
                if bands:  # in tensor order with the others
                    extra = np.asarray([[i, k, c, rank] for i, k, c in bands], dtype=np.int64)
                    derived = np.concatenate([derived, extra])
                    derived = derived[np.argsort(derived[:, 0], kind="stable")]
                if packed:  # checksums only, in tensor order
                    crc_array = derived[:, 2].astype(np.uint32)
                    derived = derived[:0]
    except BaseException as e:
        exc = e

    exc = _dist.interrupted(exc)  # a signal deferred during the data phase fails the save here
    errors = _dist.gather_json(comm, _dist.failure_record(exc), 0, deadline)
    got_crcs = _dist.gather_arrays(comm, crc_array, 0, deadline) if packed else None
    got_derived = _dist.gather_rows(comm, derived, 0, deadline) if not packed else derived
    got_listed = _dist.gather_rows(comm, listed, 0, deadline)
    records: list | None = None
    if rank == 0:
        assert errors is not None and got_derived is not None and got_listed is not None
        records = errors
        if all(r is None for r in records):
            try:
                _faults.point("before_commit", rank)
                _dist.raise_interrupt()  # a signal on rank 0: no commit
                text = _index_text(
                    comm,
                    _PLANS.get(h) if cached else None,
                    tensors,
                    names,
                    offsets,
                    data_name,
                    plan,
                    graph,
                    specs,
                    got_crcs,
                    got_derived,
                    got_listed,
                    what,
                )
                _commit(prefix, data_path, data_name, plan["token"], text)
            except BaseException as e:
                exc = e
                records[0] = _dist.failure_record(e)
        if any(r is not None for r in records):
            remove_quietly(data_path)
    records = _dist.bcast_json(comm, records, 0, deadline)
    _dist.raise_failures(comm, what, records, exc)
    return int(plan["size"])


def _write_data(
    comm: MPI.Comm,
    data_path: str,
    tensors: Sequence[SaveTensor],
    own: list[tuple[int, int, np.ndarray]],
    pool: ThreadPoolExecutor,
    crcs: list[Future],
    plan: dict,
    options: IOOptions,
    deadline: Deadline,
    what: str,
) -> tuple[list[int | None], BaseException | None, list[tuple[int, int, int]]]:
    """Write this rank's pieces into the file rank 0 created: row bands of strided shards
    (:mod:`.aggregate`), then direct IO or collective MPI-IO (:mod:`.transfer`).

    Returns the datasets' offsets, this rank's error and its band records.

    Collective: call on all ranks.
    """
    rank = comm.Get_rank()
    offsets: list[int | None] = plan["offsets"]
    exc: BaseException | None = None
    pieces: list[Piece] = []
    try:
        _faults.point("before_data", rank)
        pieces = _pieces(tensors, own, offsets, what)
    except BaseException as e:
        exc, pieces = e, []
    bands: list[tuple[int, int, int]] = []
    tasks = [
        BandTask(
            i,
            derived_slicing(t.shape, t.layout, t.dtype, rows=True),
            t.layout,
            t.dtype,
            offsets[i],
            t.pieces[0][1] if t.pieces else np.empty(0),
        )
        for i, t in enumerate(tensors)
        if t.rows and t.layout is not None
    ]
    if tasks:  # strided shards: exchanged, then written in contiguous bands
        bands, err = write_bands(
            comm, data_path, tasks, deadline, checksum_function(DEFAULT_ALGORITHM)
        )
        exc = exc or err
    counter = ProgressCounter(options, sum(p.nbytes for p in pieces))
    try:
        move_pieces(
            comm,
            data_path,
            pieces,
            options,
            write=True,
            deadline=deadline,
            on_written=lambda: crcs.append(pool.submit(_checksums, own)),
            on_moved=counter.hook(),
        )
        _faults.point("after_data", rank)
    except BaseException as e:
        exc = exc or e
    return offsets, exc, bands


def _pieces(
    tensors: Sequence[SaveTensor],
    own: list[tuple[int, int, np.ndarray]],
    offsets: list[int | None],
    what: str,
) -> list[Piece]:
    """This rank's pieces at their file offsets. A tensor with a ``memo`` keeps each
    piece's file run there for the next save of a piece at the same place (only
    numbers: the memo holds no array)."""
    pieces = []
    for i, j, a in own:
        t = tensors[i]
        off = offsets[i]
        if off is None:
            raise CheckpointError(f"{what}: tensor {t.key!r} has no storage")
        start = tuple(t.pieces[j][0])
        memo = t.memo
        if memo is None:
            pieces.append(Piece(off, t.shape, start, a))
            continue
        where = (off, t.shape, start, a.shape, a.dtype.itemsize)
        got = memo.get(j)
        if got is not None and got[0] == where:
            pieces.append(Piece.with_run(off, t.shape, start, a, got[1]))
        else:
            p = Piece(off, t.shape, start, a)
            memo[j] = (where, p.file_run)
            pieces.append(p)
    return pieces


def _remember(h: int, plan: _CachedPlan) -> None:
    _PLANS.pop(h, None)
    while len(_PLANS) >= _MAX_PLANS:
        _PLANS.pop(next(iter(_PLANS)))
    _PLANS[h] = plan


def _index_text(
    comm: MPI.Comm,
    hit: _CachedPlan | None,
    tensors: Sequence[SaveTensor],
    names: list[str],
    offsets: list[int | None],
    data_name: str,
    plan: dict,
    graph: dict | None,
    specs: Sequence[hdf5.DatasetSpec] | None,
    got_crcs: list[np.ndarray] | None,
    got_derived: np.ndarray,
    got_listed: np.ndarray,
    what: str,
) -> str:
    """Rank 0: the index text of a save, checking that every slice was written once.

    ``hit``: the cached plan of this save's structure, when every rank holds one. A
    save of a structure committed before, with packed checksums, fills in the
    structure's :class:`.index_template.IndexTemplate` (made at the first such save,
    from the rows and entries checked by ``index_entries``); others build every entry.
    """
    index = CheckpointIndex(
        data_file=data_name,
        data_size=int(plan["size"]),
        structure_checksum=plan.get("structure"),
        tensors={},
        nprocs=comm.Get_size(),
        created=time.time(),
        graph=graph,
        library=library_versions(),
        checksum=DEFAULT_ALGORITHM,
    )
    if got_crcs is None or specs is not None:  # per-slice records, or parallel HDF5
        hit = None
    template = hit.index if hit is not None else None
    if template is not None and got_crcs is not None and template.fits(tensors):
        listed = index_entries(
            tensors, names, offsets, got_derived[:0], got_listed, what, listed_only=True
        )
        return template.render(index, got_crcs, listed, [t.key for t in tensors], what)
    if got_crcs is not None:
        got_derived = rows_from_layouts(tensors, got_crcs, what)
    index.tensors = index_entries(tensors, names, offsets, got_derived, got_listed, what, specs)
    if hit is not None:  # the second save of this structure (or its bands changed)
        hit.index = IndexTemplate.build(tensors, index.tensors, got_derived, comm.Get_size())
    return index.to_json()


def _commit(prefix: str, data_path: str, data_name: str, token: str, text: str) -> None:
    fsync_path(data_path)
    atomic_write(index_path(prefix), text.encode(), token)
    remove_stale_files(prefix, keep=data_name)
