"""Parallel HDF5: the data file created, written and read collectively.

Used for ``io="hdf5"`` and for every compressed save (compression needs parallel
HDF5's collective filtered IO), and on restore for compressed datasets (and for
every dataset with ``io="hdf5"``). The file is the standard format
(DESIGN.md "On-disk format"): one dataset per tensor at the root, contiguous,
allocated early and never filled, or chunked and filtered when compressed.

Write (:func:`write_file`; collective):

1. every rank builds the file access list (``mpio`` driver with the MPI-IO hints
   and the striping hints, alignment, collective metadata reads and writes through
   :mod:`.h5capi`, file locking as ``HDF5_USE_FILE_LOCKING`` says) and the dataset
   creation lists; agreed;
2. ``H5Fcreate`` on every rank; agreed (a rank that cannot open the file never lets
   the others enter the dataset creation);
3. every rank creates every dataset and attribute in the same order (collective
   metadata) and reads the contiguous datasets' offsets; agreed;
4. one reduction gives, per dataset, the most pieces any rank writes and whether
   every piece is a large contiguous run; then, per dataset and round, every rank
   calls ``H5Dwrite`` in collective transfer mode with its piece selected, or
   with ``select_none()`` (h5py's ``ds[sel] = x`` returns early on an empty
   selection and would leave the other ranks waiting). Datasets whose pieces are
   all large contiguous runs are moved with independent MPI-IO inside the
   collective call (``H5FD_MPIO_INDIVIDUAL_IO``: no two-phase copy); the others,
   and every chunked dataset, with two-phase collective MPI-IO (filters require it);
5. ``on_written()`` (checksums start while the disk flushes), ``H5Fflush``
   (collective: metadata, then ``MPI_File_sync``), close.

A failure on one rank after step 3 never skips a collective call: that rank keeps
calling with empty selections and reports its error to the caller, which agrees.
A failure inside HDF5's own collectives (not in this code) cannot be bounded by
the deadline: like collective MPI-IO, every rank enters them only after an
agreement on the file.

Read (:func:`read_pieces`; collective): the same file access list, ``H5Fopen`` on
every rank (agreed), then per dataset and round a collective ``H5Dread`` of each
rank's saved slices (whole slices, each read by its owner: see :mod:`.read`).

:data:`LAST` records, per rank, how the last transfers moved their data
(HDF5's ``H5Pget_mpio_actual_io_mode``) and the collective-metadata settings and
hints of the last file opened: the tests check them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import h5py
import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._dist import Deadline
from ..layout import LayoutSpec
from . import h5capi
from .filters import CHUNK_TARGET_BYTES, Compression, chunk_shape, compressible
from .h5select import memory
from .hdf5 import DTYPE_ATTR, FORMAT_ATTR, DatasetSpec, file_locking, h5type
from .mpiio import contiguous_offset
from .options import IOOptions
from .space import METADATA_MARGIN, METADATA_PER_DATASET, check_free_space, reservation, reserve
from .striping import striping_hints

__all__ = ["LAST", "IOStats", "dataset_specs", "read_pieces", "write_file"]

Pieces = Sequence[tuple[Sequence[int], np.ndarray]]

# File ids whose collective close could hang (the file opened on some ranks only):
# kept alive so that no garbage collection ever closes them.
_ABANDONED: list[Any] = []


@dataclass
class IOStats:
    """What this rank's last parallel HDF5 operation did (for tests and diagnostics).

    Attributes:
        modes: Dataset name -> the ``H5Pget_mpio_actual_io_mode`` values of its
            transfers on this rank (see :data:`.h5capi.ACTUAL_IO_MODES`).
        individual: Datasets moved by independent MPI-IO inside collective calls.
        calls: ``H5Dwrite``/``H5Dread`` calls this rank made.
        collective_metadata: ``(all_coll_metadata_ops, coll_metadata_write)`` of the
            last file opened, read back from its access property list.
        hints: The MPI-IO hints of that file, as the MPI library holds them for
            HDF5's own ``MPI_File`` handle.
        alignment: ``(threshold, alignment)`` of that file.
    """

    modes: dict[str, set[int]] = field(default_factory=dict)
    individual: set[str] = field(default_factory=set)
    calls: int = 0
    collective_metadata: tuple[bool, bool] = (False, False)
    hints: dict[str, str] = field(default_factory=dict)
    alignment: tuple[int, int] = (1, 1)


LAST = IOStats()


class _Tensor(Protocol):
    key: str
    dtype: np.dtype
    shape: tuple[int, ...]
    layout: LayoutSpec | None
    logical_dtype: str | None


def dataset_specs(
    tensors: Sequence[_Tensor], names: Sequence[str], compression: Compression | None
) -> list[DatasetSpec]:
    """The datasets of a save: chunked and filtered where compression applies.

    Compressible tensors (:func:`.filters.compressible`) get a chunk shape that
    follows their layout's blocks (:func:`.filters.chunk_shape`).
    """
    out = []
    for t, name in zip(tensors, names, strict=True):
        chunks = None
        if compression is not None and compressible(t.shape, t.dtype.itemsize):
            bounds = t.layout.bounds(t.shape) if t.layout is not None else None
            chunks = chunk_shape(t.shape, t.dtype.itemsize, bounds)
        out.append(
            DatasetSpec(
                name,
                t.dtype,
                tuple(t.shape),
                t.logical_dtype,
                chunks=chunks,
                compression=compression if chunks is not None else None,
            )
        )
    return out


# --- property lists ----------------------------------------------------------------------


def _info(hints: dict[str, str] | None) -> MPI.Info:
    if not hints:
        return MPI.INFO_NULL
    info = MPI.Info.Create()
    for k, v in hints.items():
        info.Set(str(k), str(v))
    return info


def _file_access(
    comm: MPI.Comm,
    hints: dict[str, str] | None,
    alignment: tuple[int, int] | None,
    deadline: Deadline,
    what: str,
) -> h5py.h5p.PropFAID:
    """An ``mpio`` file access list with collective metadata reads and writes; agreed.

    ``H5Pset_fapl_mpio`` duplicates the communicator (``MPI_Comm_dup``, a collective
    call MPI cannot bound): everything that may fail on one rank is done and agreed
    on first, so that every rank makes that call or none does.

    Collective: call on all ranks.
    """

    def check() -> MPI.Info:
        h5capi.library()  # a missing parallel HDF5 fails here, on every rank
        return _info(hints)

    info = _dist.run_agreed(comm, what, check, deadline)

    def build() -> h5py.h5p.PropFAID:
        try:
            fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
            fapl.set_fapl_mpio(comm, info)  # collective; HDF5 keeps duplicates of both
        finally:
            if info != MPI.INFO_NULL:
                info.Free()
        if alignment is not None:
            fapl.set_alignment(*alignment)
        h5capi.set_collective_metadata(fapl, ops=True, write=True)
        locking = file_locking()
        if locking is not None:
            fapl.set_file_locking(bool(locking), locking == "best-effort")
        return fapl

    return _dist.run_agreed(comm, what, build, deadline)


def _record_file(fid: h5py.h5f.FileID) -> None:
    """Read back what the opened file's access list holds (into :data:`LAST`)."""
    apl = fid.get_access_plist()
    LAST.collective_metadata = h5capi.get_collective_metadata(apl)
    threshold, alignment = apl.get_alignment()
    LAST.alignment = (int(threshold), int(alignment))
    LAST.hints = h5capi.mpi_file_hints(fid)


def _creation_list(spec: DatasetSpec, cache: dict[Any, h5py.h5p.PropDCID]) -> h5py.h5p.PropDCID:
    key = (spec.chunks, spec.compression, spec.dtype.itemsize if spec.compression else 0)
    dcpl = cache.get(key)
    if dcpl is None:
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_obj_track_times(False)
        # Parallel HDF5 1.10 allocates every dataset early; no fill: every byte is written.
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        if spec.chunks is None:
            dcpl.set_layout(h5py.h5d.CONTIGUOUS)
        else:
            assert spec.compression is not None
            dcpl.set_chunk(spec.chunks)
            if spec.compression.shuffle:
                dcpl.set_shuffle()
            dcpl.set_deflate(spec.compression.level)
        cache[key] = dcpl
    return dcpl


def _transfer_lists() -> tuple[h5py.h5p.PropDXID, h5py.h5p.PropDXID]:
    """Collective transfer lists: two-phase MPI-IO, and independent MPI-IO underneath."""
    coll = h5py.h5p.create(h5py.h5p.DATASET_XFER)
    coll.set_dxpl_mpio(h5py.h5fd.MPIO_COLLECTIVE)
    indiv = h5py.h5p.create(h5py.h5p.DATASET_XFER)
    indiv.set_dxpl_mpio(h5py.h5fd.MPIO_COLLECTIVE)
    h5capi.set_individual_io(indiv, True)
    return coll, indiv


# --- one collective transfer ---------------------------------------------------------------


def _transfer(
    dsid: h5py.h5d.DatasetID,
    name: str,
    dtype: np.dtype,
    piece: tuple[Sequence[int], np.ndarray] | None,
    dxpl: h5py.h5p.PropDXID,
    write: bool,
) -> int:
    """One collective ``H5Dwrite``/``H5Dread``: ``piece`` selected, or nothing.

    The piece's array may be strided: a box of a C-contiguous array is selected in
    that array's dataspace (:func:`.h5select.memory`, no copy); other layouts go
    through a contiguous copy. The call is made even when the selection cannot be
    built (then with nothing selected; the error is raised after it). Returns the
    bytes moved.
    """
    error: BaseException | None = None
    fspace = dsid.get_space()
    mspace = buf = target = None
    copy_back = False
    if piece is not None:
        try:
            start, target = piece
            if fspace.get_simple_extent_ndims():
                fspace.select_hyperslab(tuple(int(s) for s in start), tuple(target.shape))
                got = memory(target)
                if got is None:  # no box of a contiguous array: through a copy
                    buf = np.ascontiguousarray(target) if write else np.empty_like(target)
                    copy_back = not write
                    mspace = h5py.h5s.create_simple(tuple(target.shape))
                else:
                    buf, mspace = got
            else:  # a scalar: the whole (one-element) dataspace
                buf = target.reshape(())
                mspace = h5py.h5s.create(h5py.h5s.SCALAR)
        except BaseException as e:
            error, mspace, target = e, None, None
    if mspace is None:
        fspace.select_none()
        mspace = h5py.h5s.create_simple((1,))
        mspace.select_none()
        buf = np.zeros(1, dtype=dtype)
    LAST.calls += 1
    if write:
        dsid.write(mspace, fspace, buf, dxpl=dxpl)
    else:
        dsid.read(mspace, fspace, buf, dxpl=dxpl)
        if copy_back and target is not None:
            target[...] = buf  # the copy of a strided destination
    LAST.modes.setdefault(name, set()).add(h5capi.actual_io_mode(dxpl))
    if error is not None:
        raise error
    return int(target.nbytes) if target is not None else 0


def _plan_rounds(
    comm: MPI.Comm,
    specs: Sequence[tuple[tuple[int, ...], bool]],
    mine: Sequence[list[tuple[Sequence[int], np.ndarray]]],
    threshold: int | None,
    deadline: Deadline,
) -> tuple[np.ndarray, np.ndarray]:
    """Per dataset: the most pieces any rank moves, and whether all pieces on all ranks
    are contiguous runs of at least ``threshold`` bytes (one reduction).

    ``specs``: per dataset ``(shape, chunked)``.

    Collective: call on all ranks.
    """
    n = len(specs)
    local = np.zeros(2 * n, dtype=np.int64)
    for i, ((shape, chunked), pieces) in enumerate(zip(specs, mine, strict=True)):
        local[i] = len(pieces)
        small = chunked or threshold is None
        for start, a in pieces:
            if small or threshold is None:
                break
            if a.nbytes < threshold or (
                a.ndim and contiguous_offset(shape, tuple(start), a.shape) is None
            ):
                small = True
        local[n + i] = 1 if (pieces and small) else 0
    got = _dist.allreduce_max(comm, local, deadline)
    counts = got[:n]
    individual = (counts > 0) & (got[n:] == 0)
    for i, (_, chunked) in enumerate(specs):
        individual[i] = individual[i] and not chunked and threshold is not None
    return counts, individual


def _own(pieces: Pieces) -> list[tuple[Sequence[int], np.ndarray]]:
    return [(start, a) for start, a in pieces if a.size]


# --- write -------------------------------------------------------------------------------


def write_file(
    comm: MPI.Comm,
    path: str,
    specs: Sequence[DatasetSpec],
    pieces: Sequence[Pieces],
    options: IOOptions,
    *,
    alignment: int,
    deadline: Deadline,
    what: str,
    on_written: Callable[[], None] | None = None,
    on_moved: Callable[[int], None] | None = None,
) -> tuple[list[int | None], BaseException | None]:
    """Create ``path`` collectively with every dataset and write every rank's pieces.

    Args:
        comm: The ranks that write.
        path: The new data file (the same on every rank).
        specs: Every dataset, in the same order on every rank.
        pieces: Per dataset, this rank's ``(start, C-contiguous array)`` pieces.
        options: Hints, alignment threshold, direct IO threshold.
        alignment: The alignment of large datasets (agreed by the caller).
        deadline: Bounds every agreement.
        what: Named in errors.
        on_written: Called after the writes, before the flush.

    Returns:
        Each dataset's byte offset (``None`` for chunked and empty datasets) and
        this rank's error while writing (``None``: success); the caller agrees.

    Raises:
        CheckpointError: On every rank, if the file could not be set up (nothing
            was written; a file may have been created).

    Collective: call on all ranks.
    """
    rank = comm.Get_rank()
    LAST.__init__()  # type: ignore[misc]
    threshold = options.alignment_threshold
    if any(s.chunks is not None for s in specs):
        # compressed chunks (at most CHUNK_TARGET_BYTES before deflate) are never padded
        threshold = max(threshold, 2 * CHUNK_TARGET_BYTES)

    def prepare() -> list[h5py.h5p.PropDCID]:
        _faults.point("create", rank)
        if rank == 0:
            check_free_space(path, METADATA_MARGIN + METADATA_PER_DATASET * len(specs))
        cache: dict[Any, h5py.h5p.PropDCID] = {}
        return [_creation_list(s, cache) for s in specs]

    dcpls = _dist.run_agreed(comm, what, prepare, deadline)
    hints = striping_hints(options.striping_factor, options.striping_unit, options.mpi_info)
    fapl = _file_access(comm, hints, (threshold, alignment), deadline, what)
    fid = _open(comm, path, fapl, create=True, deadline=deadline, what=what)
    offsets: list[int | None] = []
    dsids: list[h5py.h5d.DatasetID] = []
    exc: BaseException | None = None
    try:
        _record_file(fid)
        offsets, dsids = _create_datasets(fid, specs, dcpls)
    except BaseException as e:
        exc = e
    try:
        _dist.agree(comm, what, exc, deadline)
    except BaseException:
        _close(dsids, fid)
        raise
    # Reserve the file's blocks before any data moves: HDF5's collective flush and close
    # diverge between ranks when a metadata write fails on some (a full disk), and then
    # wait forever; with the blocks reserved, no write inside HDF5 can run out of space.
    try:
        if rank == 0:
            reserve(path, reservation(specs, offsets))
    except BaseException as e:
        exc = e
    failed = _dist.any_true(comm, exc is not None, deadline)
    if not failed:
        mine: list[list[tuple[Sequence[int], np.ndarray]]] = [[] for _ in specs]
        try:
            _faults.point("before_data", rank)
            mine = [_own(p) for p in pieces]
        except BaseException as e:
            exc = e
        exc = _move(
            comm, dsids, specs, mine, options, deadline, write=True, exc=exc, on_moved=on_moved
        )
        try:
            if exc is None:
                _faults.point("mid_data", rank)
        except BaseException as e:
            exc = e
        if exc is None and on_written is not None:
            try:
                on_written()
            except BaseException as e:
                exc = e
        failed = _dist.any_true(comm, exc is not None, deadline)
    if failed and rank == 0:
        # The file is discarded: give its blocks back first, so that the metadata
        # the collective close still writes finds room even on a full disk.
        try:
            os.truncate(path, 0)
        except OSError:
            pass
    try:
        h5py.h5f.flush(fid, h5py.h5f.SCOPE_GLOBAL)  # collective: metadata, then MPI_File_sync
    except BaseException as e:
        exc = exc or e
    try:
        _close(dsids, fid)
    except BaseException as e:
        exc = exc or e
    return offsets, exc


def _open(
    comm: MPI.Comm,
    path: str,
    fapl: h5py.h5p.PropFAID,
    *,
    create: bool,
    deadline: Deadline,
    what: str,
) -> h5py.h5f.FileID:
    """``H5Fcreate``/``H5Fopen`` on every rank, agreed.

    Collective: call on all ranks.
    """
    fid = None
    exc: BaseException | None = None
    try:
        name = os.fsencode(path)
        if create:
            fid = h5py.h5f.create(name, h5py.h5f.ACC_TRUNC, fapl=fapl)
        else:
            fid = h5py.h5f.open(name, h5py.h5f.ACC_RDONLY, fapl=fapl)
    except BaseException as e:
        exc = e
    try:
        _dist.agree(comm, what, exc, deadline)
    except BaseException:
        if fid is not None:  # open here but not everywhere: a close would wait forever
            _ABANDONED.append(fid)
        raise
    assert fid is not None
    return fid


def _create_datasets(
    fid: h5py.h5f.FileID, specs: Sequence[DatasetSpec], dcpls: Sequence[h5py.h5p.PropDCID]
) -> tuple[list[int | None], list[h5py.h5d.DatasetID]]:
    """Every dataset and attribute, in order (the same calls on every rank)."""
    h5py.h5a.create(
        fid, FORMAT_ATTR.encode(), h5py.h5t.STD_I64LE, h5py.h5s.create(h5py.h5s.SCALAR)
    ).write(np.array(1, dtype=np.int64))
    types: dict[str, h5py.h5t.TypeID] = {}
    offsets: list[int | None] = []
    dsids: list[h5py.h5d.DatasetID] = []
    for spec, dcpl in zip(specs, dcpls, strict=True):
        tid = types.get(spec.dtype.str)
        if tid is None:
            tid = types[spec.dtype.str] = h5type(spec.dtype)
        space = (
            h5py.h5s.create_simple(spec.shape) if spec.shape else h5py.h5s.create(h5py.h5s.SCALAR)
        )
        dsid = h5py.h5d.create(fid, spec.name.encode(), tid, space, dcpl=dcpl)
        dsids.append(dsid)
        if spec.logical_dtype is not None:
            h5py.Dataset(dsid).attrs[DTYPE_ATTR] = spec.logical_dtype
        offsets.append(dsid.get_offset() if spec.chunks is None else None)
    return offsets, dsids


def _close(dsids: Sequence[h5py.h5d.DatasetID], fid: h5py.h5f.FileID) -> None:
    """Close the datasets, then the file (collective)."""
    for d in dsids:
        if d.valid:
            d.close()
    if fid.valid:
        fid.close()


def _move(
    comm: MPI.Comm,
    dsids: Sequence[h5py.h5d.DatasetID | str],
    specs: Sequence[Any],
    mine: Sequence[list[tuple[Sequence[int], np.ndarray]]],
    options: IOOptions,
    deadline: Deadline,
    *,
    write: bool,
    exc: BaseException | None,
    fid: h5py.h5f.FileID | None = None,
    on_moved: Callable[[int], None] | None = None,
) -> BaseException | None:
    """Every dataset's collective transfers, in order; returns this rank's first error.

    ``dsids``: open datasets, or names to open (and close) one at a time in ``fid``.
    After an error this rank keeps making every call, with nothing selected.
    ``on_moved(n)`` is told the bytes of each piece moved.

    Collective: call on all ranks.
    """
    shapes = [(tuple(s.shape), _chunked(s)) for s in specs]
    counts, individual = _plan_rounds(
        comm,
        shapes,
        mine if exc is None else [[] for _ in specs],
        options.direct_io_threshold,
        deadline,
    )
    coll, indiv = _transfer_lists()
    for i, spec in enumerate(specs):
        n = int(counts[i])
        if n == 0:
            continue
        dxpl = indiv if individual[i] else coll
        name = spec.name if isinstance(spec, DatasetSpec) else spec.dataset
        if individual[i]:
            LAST.individual.add(name)
        d = dsids[i]
        dsid = h5py.h5d.open(fid, d.encode()) if isinstance(d, str) else d
        try:
            for j in range(n):
                piece = mine[i][j] if exc is None and j < len(mine[i]) else None
                try:
                    moved = _transfer(dsid, name, spec.dtype, piece, dxpl, write)
                    if moved and on_moved is not None:
                        on_moved(moved)
                except BaseException as e:
                    exc = exc or e
        finally:
            if isinstance(d, str):
                dsid.close()
    return exc


def _chunked(spec: Any) -> bool:
    if isinstance(spec, DatasetSpec):
        return spec.chunks is not None
    return getattr(spec, "filters", None) is not None


# --- read --------------------------------------------------------------------------------


class _Entry(Protocol):
    dataset: str
    dtype: np.dtype
    shape: tuple[int, ...]
    filters: Compression | None


def read_pieces(
    comm: MPI.Comm,
    path: str,
    entries: Sequence[_Entry],
    mine: Sequence[list[tuple[Sequence[int], np.ndarray]]],
    options: IOOptions,
    *,
    deadline: Deadline,
    what: str,
    on_moved: Callable[[int], None] | None = None,
) -> None:
    """Read this rank's pieces of each entry's dataset with collective ``H5Dread`` calls.

    ``entries`` are the same on every rank, in the same order; ``mine[i]`` this rank's
    ``(start, writable buffer of any strides)`` pieces of ``entries[i]`` (possibly
    none); ``on_moved(n)`` is told the bytes of each piece read. When no
    rank has a piece the file is not opened. The first error is raised after this
    rank has made every collective call.

    Collective: call on all ranks.
    """
    if not _dist.any_true(comm, any(mine), deadline):
        return
    LAST.__init__()  # type: ignore[misc]
    fapl = _file_access(comm, options.mpi_info, None, deadline, what)
    fid = _open(comm, path, fapl, create=False, deadline=deadline, what=what)
    exc: BaseException | None = None
    try:
        _record_file(fid)
        for pieces in mine:
            for _, buf in pieces:
                if not buf.flags.writeable:
                    raise ValueError(f"{what}: a read buffer is not writable")
    except BaseException as e:
        exc = e
    try:
        exc = _move(
            comm,
            [e.dataset for e in entries],
            entries,
            [[p for p in ps if p[1].size] for ps in mine],
            options,
            deadline,
            write=False,
            exc=exc,
            fid=fid,
            on_moved=on_moved,
        )
    finally:
        fid.close()
    if exc is not None:
        raise exc
