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
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..errors import CheckpointError
from ..layout import LayoutSpec
from . import hdf5
from .aggregate import BandTask, write_bands
from .checksum import DEFAULT_ALGORITHM, checksum, checksum_function
from .cleanup import remove_stale_files
from .fsutil import atomic_write, fsync_path, remove_quietly
from .index import REPLICA_SPLIT_BYTES, CheckpointIndex, TensorEntry, dataset_name_for_key
from .mpiio import Piece
from .options import IOOptions
from .paths import data_file_name, data_file_path, index_path, new_token
from .slicing import (
    DerivedSlicing,
    ListedSlicing,
    cached_slicing,
    check_exact_cover,
    strided_shards,
    volume,
)
from .template import FileTemplate, capture, create_from
from .transfer import move_pieces

__all__ = [
    "SaveTensor",
    "derived_slicing",
    "library_versions",
    "use_rows",
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
        mesh_rank: This rank's rank in the layout's mesh. When it is the rank in the
            checkpoint's communicator on every rank (the usual case), rank 0 knows from
            the layouts which slices each rank wrote and gathers packed checksum arrays
            only; otherwise it gathers a record per slice.
        ordinal: The ``ordinal`` the pieces were chosen with (``DerivedSlicing.written_by``:
            small replicated shards are written by the replica ``ordinal % replicas``).
        rows: Saved in row bands (:mod:`.aggregate`): ``pieces`` is then this rank's
            whole shard, which the ranks sharing its rows exchange before writing.
    """

    key: str
    dtype: np.dtype
    shape: tuple[int, ...]
    layout: LayoutSpec | None
    pieces: list[tuple[tuple[int, ...], np.ndarray]]
    slice_ids: list[int] = field(default_factory=list)
    logical_dtype: str | None = None
    mesh_rank: int | None = None
    ordinal: int = 0
    rows: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes of the whole tensor."""
        return math.prod(self.shape) * self.dtype.itemsize


def derived_slicing(
    shape: tuple[int, ...], layout: LayoutSpec, dtype: np.dtype, rows: bool = False
) -> DerivedSlicing:
    """The slices a save writes for a layout-based tensor (what the index derives)."""
    return cached_slicing(tuple(shape), layout, dtype.itemsize, REPLICA_SPLIT_BYTES, rows)


ROWS_MIN_BYTES = 1 << 20


def use_rows(shape: tuple[int, ...], layout: LayoutSpec, dtype: np.dtype) -> bool:
    """Whether a tensor is saved in row bands: its shards are strided in the file and the
    largest is at least ``ROWS_MIN_BYTES`` (smaller ones go through collective MPI-IO)."""
    if not strided_shards(shape, layout):
        return False
    sl = derived_slicing(shape, layout, dtype)
    largest = max((volume(sl.box(i)[1]) for i in range(min(len(sl), 64))), default=0)
    return largest * dtype.itemsize >= ROWS_MIN_BYTES


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
        h.update(b"r" if t.rows else b"-")
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
        return _write_and_commit(comm, prefix, tensors, own, pool, graph, options, deadline, what)
    finally:
        pool.shutdown(wait=True)


@dataclass
class _CachedPlan:
    """What a save with the same structure can reuse (every rank: offsets; rank 0: template)."""

    offsets: list[int | None]
    size: int
    template: FileTemplate | None = None


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
) -> tuple[int, bool]:
    """Agree that every rank saves the same structure into the same path; returns the
    structure's hash and whether every rank holds a cached plan for it (one reduction)."""
    h = structure_hash(tensors) ^ hash((options.alignment, options.alignment_threshold)) & (
        (1 << 63) - 1
    )
    cached = h in _PLANS
    # the path travels in the same reduction: ranks that name different files must fail
    # before anything is created or opened (an MPI_File_open no timeout can bound)
    p = _dist.path_hash(prefix)
    got = _dist.allreduce_max(
        comm, np.array([h, -h, p, -p, 0 if cached else 1], dtype=np.int64), deadline
    )
    if got[2] != -got[3]:
        _dist.raise_different_paths(comm, prefix, deadline)
    if got[0] == -got[1]:
        return h, not got[4]
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
    h, cached = _agree_structure(comm, prefix, tensors, options, deadline, what)
    names = [dataset_name_for_key(t.key) for t in tensors]

    def create() -> dict | None:
        _faults.point("create", rank)
        if rank != 0:
            return None
        os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
        token = new_token()
        path = data_file_path(prefix, data_file_name(prefix, token))
        hit = _PLANS.get(h) if cached else None
        if hit is not None and hit.template is not None:
            create_from(path, hit.template)  # the same structure as last time
            return {"token": token}
        specs = [
            hdf5.DatasetSpec(n, t.dtype, t.shape, t.logical_dtype)
            for n, t in zip(names, tensors, strict=True)
        ]
        offsets, size = hdf5.create_data_file(
            path, specs, alignment=options.alignment, threshold=options.alignment_threshold
        )
        raw = [(o, t.nbytes) for o, t in zip(offsets, tensors, strict=True) if o is not None]
        tpl = capture(path, raw, size)
        _remember(h, _CachedPlan(offsets, size, tpl))
        return {"token": token, "offsets": offsets, "size": size}

    plan = _dist.run_agreed(comm, what, create, deadline)
    if cached:  # every rank knows the offsets: only the token travels
        token = _dist.bcast_json(comm, plan["token"] if plan is not None else None, 0, deadline)
        hit = _PLANS[h]
        plan = {"token": token, "offsets": hit.offsets, "size": hit.size}
    else:
        plan = _dist.bcast_json(comm, plan, 0, deadline)
        if rank != 0:
            _remember(h, _CachedPlan(plan["offsets"], plan["size"]))
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
            np.ascontiguousarray(t.pieces[0][1]) if t.pieces else np.empty(0),
        )
        for i, t in enumerate(tensors)
        if t.rows and t.layout is not None
    ]
    if tasks:  # strided shards: exchanged, then written in contiguous bands
        bands, err = write_bands(
            comm, data_path, tasks, deadline, checksum_function(DEFAULT_ALGORITHM)
        )
        exc = exc or err
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
    packed = _dist.all_true(
        comm, all(t.mesh_rank == rank for t in tensors if t.layout is not None), deadline
    )
    derived, listed = _records(tensors, own, rank)
    crc_array = np.zeros(0, dtype=np.uint32)
    try:
        if exc is None:
            values = crcs[0].result() if crcs else _checksums(own)
            derived, listed = _records(tensors, own, rank, values)
            if bands:  # in tensor order with the others
                extra = np.asarray([[i, k, c, rank] for i, k, c in bands], dtype=np.int64)
                derived = np.concatenate([derived, extra])
                derived = derived[np.argsort(derived[:, 0], kind="stable")]
            if packed:  # the layouts say who wrote what: checksums only, in tensor order
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
                if got_crcs is not None:
                    got_derived = _rows_from_layouts(tensors, got_crcs, what)
                entries = _entries(tensors, names, offsets, got_derived, got_listed, what)
                _commit(prefix, data_path, data_name, plan, entries, graph, comm)
            except BaseException as e:
                exc = e
                records[0] = _dist.failure_record(e)
        if any(r is not None for r in records):
            remove_quietly(data_path)
    records = _dist.bcast_json(comm, records, 0, deadline)
    _dist.raise_failures(comm, what, records, exc)
    return int(plan["size"])


def _rows_from_layouts(
    tensors: Sequence[SaveTensor], crcs: list[np.ndarray], what: str
) -> np.ndarray:
    """Rank 0: ``[tensor, slice, crc, rank]`` rows from each rank's packed checksums.

    Every rank sent the checksums of the derived slices it wrote, in tensor order;
    which slice each rank writes follows from the layouts (``DerivedSlicing.writers``).
    """
    nranks = len(crcs)
    if nranks <= 64:  # a loop costs less than numpy's calls
        lists = [c.tolist() for c in crcs]
        pos = [0] * nranks
        out: list[list[int]] = []
        for i, t in enumerate(tensors):
            if t.layout is None:
                continue
            sl = derived_slicing(t.shape, t.layout, t.dtype, t.rows)
            if math.prod(sl.spec.mesh_shape) != nranks:
                raise CheckpointError(f"{what}: tensor {t.key!r}: its mesh is not the checkpoint's")
            for r, k in enumerate(sl.writers(t.ordinal).tolist()):
                if k < 0:
                    continue
                if pos[r] >= len(lists[r]):
                    raise CheckpointError(
                        f"{what}: ranks sent fewer checksums than their layouts say"
                    )
                out.append([i, k, lists[r][pos[r]], r])
                pos[r] += 1
        if pos != [len(x) for x in lists]:
            raise CheckpointError(f"{what}: ranks sent more checksums than their layouts say")
        return np.asarray(out, dtype=np.int64).reshape(len(out), 4)
    ptr = np.zeros(nranks, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum([len(c) for c in crcs])[:-1])).astype(np.int64)
    flat = np.concatenate(crcs) if crcs else np.zeros(0, dtype=np.uint32)
    parts = []
    for i, t in enumerate(tensors):
        if t.layout is None:
            continue
        w = derived_slicing(t.shape, t.layout, t.dtype, t.rows).writers(t.ordinal)
        if len(w) != nranks:
            raise CheckpointError(f"{what}: tensor {t.key!r}: its mesh is not the checkpoint's")
        who = np.flatnonzero(w >= 0)
        at = starts[who] + ptr[who]
        if np.any(ptr[who] >= np.asarray([len(crcs[k]) for k in who], dtype=np.int64)):
            raise CheckpointError(f"{what}: ranks sent fewer checksums than their layouts say")
        rows = np.empty((len(who), 4), dtype=np.int64)
        rows[:, 0] = i
        rows[:, 1] = w[who]
        rows[:, 2] = flat[at]
        rows[:, 3] = who
        parts.append(rows)
        ptr[who] += 1
    if any(int(ptr[k]) != len(crcs[k]) for k in range(nranks)):
        raise CheckpointError(f"{what}: ranks sent more checksums than their layouts say")
    return np.concatenate(parts) if parts else np.zeros((0, 4), dtype=np.int64)


def _remember(h: int, plan: _CachedPlan) -> None:
    _PLANS.pop(h, None)
    while len(_PLANS) >= _MAX_PLANS:
        _PLANS.pop(next(iter(_PLANS)))
    _PLANS[h] = plan


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


def _entries(
    tensors: Sequence[SaveTensor],
    names: list[str],
    offsets: list[int | None],
    derived: np.ndarray,
    listed: np.ndarray,
    what: str,
) -> dict[str, TensorEntry]:
    """Rank 0: build every tensor's index entry; check that every slice was written once."""
    width = _width(tensors)
    by_tensor_d: dict[int, list[list[int]]] = {}
    for row in derived.tolist():
        by_tensor_d.setdefault(row[0], []).append(row)
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
            slicing = derived_slicing(t.shape, t.layout, t.dtype, t.rows)
            n = len(slicing)
            crc_list = [0] * n
            seen = [0] * n
            for _, k, crc, _ in by_tensor_d.get(i, ()):
                if not 0 <= k < n:
                    raise CheckpointError(f"{what}: tensor {t.key!r}: a slice number out of range")
                seen[k] += 1
                crc_list[k] = crc
            full = slicing.nonempty_list()
            if seen != full:
                missing = [k for k in range(n) if full[k] and not seen[k]]
                twice = [k for k in range(n) if seen[k] > full[k]]
                raise CheckpointError(
                    f"{what}: tensor {t.key!r} would be committed with holes or overlaps "
                    f"(slices never written: {missing[:8]}, written more than once: {twice[:8]})"
                )
            crcs = np.array(crc_list, dtype=np.uint32)
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
