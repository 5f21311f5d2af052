"""The commit protocol (write) and the validated read path of a checkpoint.

Write (DESIGN.md "Commit protocol"):

1. rank 0 creates ``P.data-<token>.h5`` with every dataset (contiguous, allocated,
   in one deterministic order) and broadcasts their offsets;
2. every rank writes its slices with collective MPI-IO (ranks with nothing to
   write take part with an empty selection), checksums them, syncs, closes;
3. rank 0 gathers each rank's outcome and checksums; if all succeeded it fsyncs
   the data file, writes ``P.index.json`` atomically (tmp + fsync + rename +
   directory fsync) and removes data files of ``P`` the index does not name;
4. the outcome is broadcast and every rank returns or raises the same error.

Read: rank 0 reads and validates the index and the data file's structure, and
broadcasts the index; every rank reads the hyperslabs it asks for with
collective MPI-IO and verifies the checksums of every saved slice its reads
cover; the outcome is agreed.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from mpi4py import MPI

from .. import _dist, _faults
from .._checksum import DEFAULT_ALGORITHM, checksum
from .._dist import Deadline
from ..errors import CheckpointError, CorruptCheckpointError, NotFoundError
from ..index import (
    DATA_FILE_RE,
    MAX_INDEX_BYTES,
    CheckpointIndex,
    SliceEntry,
    TensorEntry,
    dataset_name_for_key,
    parse_index,
)
from ..options import CheckpointOptions
from . import _fsutil, _h5
from ._mpiio import Piece, collective_io, open_file, posix_io, split_direct
from ._verify import StreamVerifier, verify_request

__all__ = [
    "ReadRequest",
    "SaveTensor",
    "checkpoint_exists",
    "data_file_path",
    "index_path",
    "library_versions",
    "load_index",
    "load_index_bytes",
    "normalize_prefix",
    "own_data_files",
    "read_index",
    "read_tensor_serial",
    "read_tensors",
    "verify_tensor",
    "write_checkpoint",
]

INDEX_SUFFIX = ".index.json"
VALIDATORS = 8  # ranks that share the structural check of a data file
_TOKEN_RE = re.compile(r"[0-9a-f]{8,64}\.h5")


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


def normalize_prefix(path: str | os.PathLike) -> str:
    """The checkpoint prefix ``P`` for a path given as ``P`` or ``P.index.json``."""
    p = os.fspath(path)
    if not isinstance(p, str) or not p:
        raise ValueError(f"checkpoint path must be a non-empty string, got {path!r}")
    if "\x00" in p:
        raise ValueError(f"checkpoint path {p!r} contains NUL")
    return p[: -len(INDEX_SUFFIX)] if p.endswith(INDEX_SUFFIX) else p


def index_path(prefix: str) -> str:
    """``P.index.json``."""
    return prefix + INDEX_SUFFIX


def data_file_path(prefix: str, name: str) -> str:
    """The path of data file ``name`` beside checkpoint ``prefix``."""
    return os.path.join(os.path.dirname(prefix), name)


def checkpoint_exists(prefix: str) -> bool:
    """Whether ``P.index.json`` exists (a committed checkpoint)."""
    return os.path.isfile(index_path(prefix))


def library_versions() -> dict[str, str]:
    """Versions recorded in every index."""
    import h5py
    import mpi4py

    from .. import __version__

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


def _move(
    comm: MPI.Comm,
    path: str,
    pieces: list[Piece],
    options: CheckpointOptions,
    *,
    write: bool,
    deadline: Deadline,
    on_chunk: Callable[[Piece, int, int], None] | None = None,
    on_written: Callable[[], None] | None = None,
) -> None:
    """Move this rank's pieces: large contiguous runs directly, the rest with MPI-IO.

    With ``options.collective`` every rank opens the file with MPI-IO and makes the
    same collective calls (with empty selections where it has nothing) for the
    pieces that ``split_direct`` leaves to MPI-IO; the others (at least
    ``options.direct_io_threshold`` bytes, contiguous, or for reads sievable) are
    moved by their rank with ``pwrite``/``preadv``, where two-phase aggregation
    would only add copies. When no rank has a piece for MPI-IO, the file is not
    opened with MPI-IO at all. Writes are synced (MPI-IO ``Sync``, ``fsync``) before
    this returns; ``on_written()`` is called between the writes and the sync (to
    checksum the pieces while the disk flushes them). Reads of direct pieces report
    their chunks to ``on_chunk`` as they arrive. The first error is raised after
    this rank has made every collective call.

    Collective: call on all ranks.
    """
    direct, aggregated = (
        split_direct(pieces, options.direct_io_threshold, write=write)
        if options.collective
        else (pieces, [])
    )
    flag = np.array([1 if aggregated else 0], dtype=np.int32)
    anyone = np.zeros(1, dtype=np.int32)
    deadline.wait(comm.Iallreduce(flag, anyone, op=MPI.MAX), comm)
    if not anyone[0]:
        posix_io(path, direct, write=write, on_chunk=on_chunk, fsync=False)
        if write:
            _faults.point("mid_data", comm.Get_rank())
            if on_written is not None:
                on_written()
            _fsutil.fsync_path(path)
        return
    exc: BaseException | None = None
    with open_file(
        comm, path, MPI.MODE_WRONLY if write else MPI.MODE_RDONLY, options.mpi_info
    ) as fh:
        try:
            collective_io(fh, comm, aggregated, write=write)
            if write:
                _faults.point("mid_data", comm.Get_rank())
        except Exception as e:  # keep taking part; raised below
            exc = e
        if exc is None and direct:
            try:
                posix_io(path, direct, write=write, on_chunk=on_chunk, fsync=False)
            except Exception as e:
                exc = e
        if write:
            if exc is None and on_written is not None:
                on_written()
            fh.Sync()
            if exc is None and direct:
                try:
                    _fsutil.fsync_path(path)
                except Exception as e:
                    exc = e
    if exc is not None:
        raise exc


def own_data_files(prefix: str) -> list[str]:
    """Names of the data files of checkpoint ``prefix`` present in its directory."""
    d = os.path.dirname(prefix) or "."
    base = os.path.basename(prefix) + ".data-"
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    return [
        n
        for n in names
        if n.startswith(base) and _TOKEN_RE.fullmatch(n[len(base) :]) and DATA_FILE_RE.match(n)
    ]


def _cleanup_leftovers(prefix: str, keep: str) -> None:
    d = os.path.dirname(prefix) or "."
    for name in own_data_files(prefix):
        if name != keep:
            _fsutil.remove_later(os.path.join(d, name))  # unreferenced: off the critical path
    tmp = os.path.basename(index_path(prefix)) + ".tmp-"
    for name in os.listdir(d):
        if name.startswith(tmp):
            _fsutil.remove_quietly(os.path.join(d, name))


def _slice_rows(slices: list[tuple[int, tuple[int, ...], tuple[int, ...], int]], width: int):
    """This rank's written slices as int64 rows ``[tensor, crc, *start, *shape]`` (padded)."""
    rows = np.zeros((len(slices), 2 + 2 * width), dtype=np.int64)
    for r, (i, start, shape, crc) in enumerate(slices):
        n = len(start)
        rows[r, 0] = i
        rows[r, 1] = crc
        rows[r, 2 : 2 + n] = start
        rows[r, 2 + width : 2 + width + n] = shape
    return rows


def write_checkpoint(
    comm: MPI.Comm,
    prefix: str,
    tensors: Sequence[SaveTensor],
    *,
    graph: dict | None,
    options: CheckpointOptions,
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
    options: CheckpointOptions,
    deadline: Deadline,
    what: str,
) -> int:
    rank = comm.Get_rank()
    signature = zlib.crc32(repr([(t.key, t.dtype.str, t.shape) for t in tensors]).encode())
    sigs = _dist.allgather_json(comm, signature, deadline)
    if len(set(sigs)) != 1:
        odd = [r for r, s in enumerate(sigs) if s != sigs[0]]
        raise CheckpointError(
            f"{what}: ranks disagree on the tensors to save (ranks {odd} differ from rank 0)"
        )

    names = [dataset_name_for_key(t.key) for t in tensors]

    def create() -> dict | None:
        _faults.point("create", rank)
        if rank != 0:
            return None
        os.makedirs(os.path.dirname(prefix) or ".", exist_ok=True)
        token = secrets.token_hex(8)
        path = data_file_path(prefix, f"{os.path.basename(prefix)}.data-{token}.h5")
        specs = [_h5.DatasetSpec(n, t.dtype, t.shape) for n, t in zip(names, tensors, strict=True)]
        offsets, size = _h5.create_data_file(
            path, specs, alignment=options.alignment, threshold=options.alignment_threshold
        )
        return {"token": token, "offsets": offsets, "size": size}

    plan = _dist.run_agreed(comm, what, create, deadline)
    plan = _dist.bcast_json(comm, plan, 0, deadline)
    data_name = f"{os.path.basename(prefix)}.data-{plan['token']}.h5"
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
    except Exception as e:
        exc, pieces = e, []
    crcs: list[Future] = []
    try:
        _move(
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
    width = max((len(t.shape) for t in tensors), default=0)
    rows = np.zeros((0, 2 + 2 * width), dtype=np.int64)
    try:
        if exc is None:
            rows = _slice_rows(crcs[0].result() if crcs else _checksums(own), width)
    except Exception as e:
        exc = e

    errors = _dist.gather_json(comm, _dist.failure_record(exc), 0, deadline)
    gathered = _dist.gather_rows(comm, rows, 0, deadline)
    records: list | None = None
    if rank == 0:
        assert errors is not None and gathered is not None
        records = errors
        if all(r is None for r in records):
            try:
                _faults.point("before_commit", rank)
                _commit(prefix, data_path, data_name, plan, names, tensors, gathered, graph, comm)
            except Exception as e:
                exc = e
                records[0] = _dist.failure_record(e)
        if any(r is not None for r in records):
            _fsutil.remove_quietly(data_path)
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
    _fsutil.fsync_path(data_path)
    _fsutil.atomic_write(index_path(prefix), index.to_json().encode(), plan["token"])
    _cleanup_leftovers(prefix, keep=data_name)


def read_index(comm: MPI.Comm, prefix: str, deadline: Deadline) -> CheckpointIndex:
    """Read, validate and broadcast the index of ``prefix`` (with its data file's structure).

    Raises:
        NotFoundError: No committed checkpoint at ``prefix``, or its data file is gone.
        CorruptCheckpointError: The index or the data file is damaged or hostile.

    Collective: call on all ranks.
    """
    what = f"read of checkpoint {prefix!r}"

    rank, size = comm.Get_rank(), comm.Get_size()

    def load() -> bytes | None:
        _faults.point("read_index", rank)
        return _read_index_bytes(prefix) if rank == 0 else None

    text = _dist.run_agreed(comm, what, load, deadline)
    text = _dist.bcast_bytes(comm, text, 0, deadline)
    # All ranks parse at once: rank 0 validates everything, the others parse the
    # same bytes on trust; rank 0's verdict decides (a hostile index fails there).
    index: CheckpointIndex | None = None
    exc: BaseException | None = None
    try:
        index = (
            parse_index(text, source=index_path(prefix))
            if rank == 0
            else parse_index(text, trusted=True)
        )
    except Exception as e:
        exc = e
    _dist.agree(comm, what, exc, deadline, authority=0)
    assert index is not None
    # The data file's structure is checked by up to VALIDATORS ranks, a share each.
    validators = min(size, VALIDATORS)

    def validate() -> None:
        if rank < validators:
            tensors = list(index.tensors.values())[rank::validators]
            _h5.validate_data_file(
                data_file_path(prefix, index.data_file),
                index.data_size,
                tensors,
                check_links=rank == 0,
            )

    _dist.run_agreed(comm, what, validate, deadline)
    return index


def _read_index_bytes(prefix: str) -> bytes:
    ip = index_path(prefix)
    try:
        with open(ip, "rb") as f:
            return f.read(MAX_INDEX_BYTES + 1)  # parse_index refuses anything longer
    except FileNotFoundError:
        raise NotFoundError(f"no checkpoint at {prefix!r}: {ip!r} does not exist") from None
    except IsADirectoryError:
        raise CorruptCheckpointError(f"{ip!r} is a directory") from None


def load_index_bytes(prefix: str) -> bytes:
    """Read ``P.index.json`` and validate it and the data file's structure (one process).

    Raises:
        NotFoundError: No committed checkpoint at ``prefix``, or its data file is gone.
        CorruptCheckpointError: The index or the data file is damaged or hostile.
    """
    return load_index(prefix)[0]


def load_index(prefix: str) -> tuple[bytes, CheckpointIndex]:
    """Read and validate ``P.index.json`` and the data file's structure (one process).

    Returns:
        The index text and the parsed index.

    Raises:
        NotFoundError: No committed checkpoint at ``prefix``, or its data file is gone.
        CorruptCheckpointError: The index or the data file is damaged or hostile.
    """
    ip = index_path(prefix)
    text = _read_index_bytes(prefix)
    index = parse_index(text, source=ip)
    _h5.validate_data_file(
        data_file_path(prefix, index.data_file), index.data_size, list(index.tensors.values())
    )
    return text, index


def read_tensors(
    comm: MPI.Comm,
    prefix: str,
    index: CheckpointIndex,
    requests: Sequence[ReadRequest],
    *,
    options: CheckpointOptions,
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
    except Exception as e:
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
        _move(
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
    except Exception as e:
        exc = exc or e
    if verifier is not None:
        try:
            if exc is None:
                verifier.finish()
        except Exception as e:
            exc = e
        finally:
            verifier.close()
    _dist.agree(comm, what, exc, deadline)
    return arrays


def verify_tensor(entry: TensorEntry, array: np.ndarray, algorithm: str) -> None:
    """Check every saved slice of a whole (global) tensor against its checksum.

    Args:
        entry: The tensor's index entry.
        array: Its global array.
        algorithm: The index's checksum algorithm (``CheckpointIndex.checksum``).

    Raises:
        CorruptCheckpointError: A slice's bytes do not match, naming the tensor and byte range.
    """
    verify_request(entry, (0,) * len(entry.shape), array, algorithm)


def read_tensor_serial(
    prefix: str, index: CheckpointIndex, entry: TensorEntry, *, verify: bool = True
) -> np.ndarray:
    """Read one whole tensor on a single process (no MPI); verify its checksums.

    Raises:
        CorruptCheckpointError: Short read or checksum mismatch.
    """
    if entry.offset is None:
        return np.empty(entry.shape, dtype=entry.dtype)
    path = data_file_path(prefix, index.data_file)
    out = np.empty(entry.shape, dtype=entry.dtype)
    buf = out.reshape(-1).view(np.uint8)
    with open(path, "rb", buffering=0) as f:
        n = os.preadv(f.fileno(), [buf], entry.offset) if buf.size else 0
    if n != buf.size:
        raise CorruptCheckpointError(
            f"short read of tensor {entry.key!r}: {n} of {buf.size} bytes at offset {entry.offset}"
        )
    if verify:
        verify_tensor(entry, out, index.checksum)
    return out
