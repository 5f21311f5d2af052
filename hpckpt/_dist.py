"""Error-agreeing collectives: the only place where hpckpt calls MPI collectives.

Every collective step of hpckpt runs through this module: :func:`agree` and
:func:`run_agreed` turn a failure on any rank into the same exception on every
rank instead of a hang, and every wait is bounded by a :class:`Deadline`.

What travels, and how (nothing is pickled: no call here uses mpi4py's lower-case,
pickle-based methods):

* :func:`allgather_json`, :func:`gather_json`, :func:`bcast_json`: JSON text as
  bytes over ``Iallgatherv``/``Igatherv``/``Ibcast``;
* :func:`bcast_bytes`: raw bytes (the index text);
* :func:`gather_rows`: int64 rows (slice records and checksums);
* :func:`gather_arrays`: any numeric 1-D arrays as raw bytes (packed checksums);
* :func:`allreduce_int`, :func:`all_true`, :func:`any_true`: one int64 or flag;
* :func:`allreduce_max`: an int64 array (the Slurm helpers' decision flags);
* :func:`allgatherv_array`: a numeric array's raw bytes (``Variable.numpy``);
* :func:`exchange`: point-to-point raw bytes between the ranks that need them
  (restores that change the layout: each saved slice is read by one rank and its
  parts sent to the others);
* agreement records: JSON bytes, point to point through rank 0 under a timeout.

Outside this module, three kinds of collective call remain, each documented where
it is made: communicator construction (``Create_cart`` in :mod:`hpckpt.mesh`,
``Dup`` for the background writer), which MPI cannot bound; and collective
MPI-IO (``File.Open``, ``Write_all``/``Read_all``, ``Sync``, ``Close``) in
:mod:`hpckpt.io.mpiio`, which every rank enters only after an agreement here on
the file to open.
"""

from __future__ import annotations

import json
import os
import sys
import time
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from mpi4py import MPI

from . import _interrupts
from .errors import (
    CheckpointError,
    CheckpointValueError,
    CorruptCheckpointError,
    InvalidStateFileError,
    NotFoundError,
    RankFailure,
)

__all__ = [
    "Deadline",
    "agree",
    "agree_same_path",
    "path_hash",
    "raise_different_paths",
    "all_true",
    "allgather_json",
    "allgatherv_array",
    "allreduce_int",
    "allreduce_max",
    "exchange",
    "exchange_start",
    "any_true",
    "bcast_bytes",
    "bcast_json",
    "failure_record",
    "gather_arrays",
    "gather_json",
    "gather_rows",
    "interrupted",
    "raise_failures",
    "raise_interrupt",
    "run_agreed",
]

T = TypeVar("T")


def _abort(status: int, message: str) -> None:
    sys.stderr.write(f"hpckpt: rank {MPI.COMM_WORLD.Get_rank()}: {message}\n")
    sys.stderr.flush()
    MPI.COMM_WORLD.Abort(status)


_interrupts.set_abort(_abort)

_POLL_SECONDS = 5e-5  # first sleep between polls of a pending request
_LOCAL_SIZE_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE")


def poll_max(environ: dict[str, str] | None = None, cores: int | None = None) -> float:
    """The longest sleep between polls of a pending collective, in seconds.

    A waiting rank sleeps (leaving its core to the ranks still working) and wakes
    up to this late when the last rank arrives: idle time for every rank. Where the
    launcher says this node runs at most two ranks per core (Open MPI's
    ``OMPI_COMM_WORLD_LOCAL_SIZE``, MPICH's ``MPI_LOCALNRANKS``, PMI's
    ``PMI_LOCAL_SIZE``), 0.5 ms: a 1 GiB restore on 4 ranks sharing 2 cores took
    3% less than with 2 ms. More ranks per core (64 on 2 cores in the scale suite),
    or no launcher information: 2 ms, so that the many waiting ranks' wake-ups do
    not take the cores from the working ones. Pure: reads the given environment.
    """
    env = os.environ if environ is None else environ
    cores = cores or os.cpu_count() or 1
    for name in _LOCAL_SIZE_VARIABLES:
        try:
            local = int(env.get(name, ""))
        except ValueError:
            continue
        return 5e-4 if 0 < local <= 2 * cores else 2e-3
    return 2e-3


_POLL_MAX = poll_max()  # longest sleep between polls
_SPIN_SECONDS = 2e-4  # poll without sleeping this long first
_P2P_POLL_SECONDS = 2e-4  # polls of the point-to-point agreement (with a timeout)


class Deadline:
    """An optional bound on each wait for other ranks.

    Every synchronization point (a collective step or an agreement) may wait at
    most ``timeout`` seconds, counted from when this rank starts waiting there.

    Args:
        timeout: Seconds, or ``None`` for no limit.
        what: The operation, named in the timeout error.
    """

    def __init__(self, timeout: float | None, what: str = "checkpoint operation") -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = timeout
        self.what = what

    def window(self) -> float | None:
        """The absolute end of a wait that starts now (``None``: unbounded)."""
        return None if self.timeout is None else time.monotonic() + self.timeout

    def wait(self, request: MPI.Request, comm: MPI.Comm) -> None:
        """Complete ``request``, raising :class:`CheckpointError` when the bound passes.

        Polls briefly, then sleeps between polls (backing off to ``_POLL_MAX``): a
        rank waiting for rank 0's serial work (creating the data file, parsing the
        index, the commit) leaves it the CPU instead of spinning in ``MPI_Wait``,
        which matters whenever ranks share cores.
        """
        end = self.window()
        start = time.monotonic()
        spin_end = start + _SPIN_SECONDS
        while not request.Test():
            now = time.monotonic()
            if now < spin_end:
                continue
            _interrupts.escape_if_due(start)
            if end is not None and now > end:
                raise CheckpointError(
                    f"{self.what}: timed out after {self.timeout} s waiting for other ranks "
                    f"(this is rank {comm.Get_rank()} of {comm.Get_size()})"
                )
            pause = min(_POLL_MAX, max(_POLL_SECONDS, (now - spin_end) / 8))
            time.sleep(pause)

    def wait_all(self, requests: list[MPI.Request], comm: MPI.Comm) -> None:
        """Complete every request (data transfers); on timeout cancel them and raise
        :class:`CheckpointError`.

        Large messages move in fragments that advance only while MPI's progress engine
        runs, so this never sleeps between polls: without a timeout it waits in
        ``MPI_Waitall``; with one it polls and only yields the processor.
        """
        if not requests:
            return
        if self.timeout is None:
            MPI.Request.Waitall(requests)
            return
        end = self.window()
        assert end is not None
        start = time.monotonic()
        while not MPI.Request.Testall(requests):
            _interrupts.escape_if_due(start)
            if time.monotonic() > end:
                for r in requests:
                    if r != MPI.REQUEST_NULL:
                        r.Cancel()
                raise CheckpointError(
                    f"{self.what}: timed out after {self.timeout} s waiting for other ranks' "
                    f"data (this is rank {comm.Get_rank()} of {comm.Get_size()})"
                )
            time.sleep(0)


def _encode(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, separators=(",", ":")).encode(), dtype=np.uint8)


def _decode(buf: np.ndarray) -> Any:
    return json.loads(buf.tobytes().decode())


def allgather_json(comm: MPI.Comm, obj: Any, deadline: Deadline | None = None) -> list[Any]:
    """Gather a JSON-serializable object from every rank onto every rank.

    Collective: call on all ranks.
    """
    deadline = deadline or Deadline(None)
    data = _encode(obj)
    counts = np.empty(comm.Get_size(), dtype=np.int64)
    deadline.wait(comm.Iallgather(np.array([data.size], dtype=np.int64), counts), comm)
    displs = np.concatenate(([0], np.cumsum(counts)[:-1]))
    out = np.empty(int(counts.sum()), dtype=np.uint8)
    deadline.wait_all(
        [comm.Iallgatherv(data, [out, counts.tolist(), displs.tolist(), MPI.BYTE])], comm
    )
    return [_decode(out[d : d + c]) for d, c in zip(displs, counts, strict=True)]


def _gatherv(
    comm: MPI.Comm, data: np.ndarray, root: int, deadline: Deadline
) -> tuple[np.ndarray, list[int], list[int]] | None:
    """Gather a 1-D array of any length from every rank onto ``root``.

    Returns ``(concatenation, counts, displacements)`` on ``root``, ``None`` elsewhere.
    """
    is_root = comm.Get_rank() == root
    counts = np.empty(comm.Get_size(), dtype=np.int64) if is_root else None
    deadline.wait(comm.Igather(np.array([data.size], dtype=np.int64), counts, root=root), comm)
    if not is_root:
        deadline.wait_all([comm.Igatherv(data, None, root=root)], comm)
        return None
    assert counts is not None
    displs = np.concatenate(([0], np.cumsum(counts)[:-1])).tolist()
    out = np.empty(int(counts.sum()), dtype=data.dtype)
    mpitype = MPI.BYTE if data.dtype == np.uint8 else MPI.INT64_T
    deadline.wait_all(
        [comm.Igatherv(data, [out, counts.tolist(), displs, mpitype], root=root)], comm
    )
    return out, counts.tolist(), displs


def gather_json(
    comm: MPI.Comm, obj: Any, root: int = 0, deadline: Deadline | None = None
) -> list[Any] | None:
    """Gather a JSON-serializable object from every rank onto ``root`` (others get ``None``).

    Collective: call on all ranks.
    """
    got = _gatherv(comm, _encode(obj), root, deadline or Deadline(None))
    if got is None:
        return None
    out, counts, displs = got
    return [_decode(out[d : d + c]) for d, c in zip(displs, counts, strict=True)]


def gather_rows(
    comm: MPI.Comm, rows: np.ndarray, root: int = 0, deadline: Deadline | None = None
) -> np.ndarray | None:
    """Gather every rank's int64 rows (a 2-D array, the same width everywhere) onto ``root``.

    Returns the rows of all ranks in rank order on ``root``, ``None`` elsewhere.

    Collective: call on all ranks.
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    got = _gatherv(comm, rows.reshape(-1), root, deadline or Deadline(None))
    return None if got is None else got[0].reshape(-1, rows.shape[1])


def gather_arrays(
    comm: MPI.Comm, data: np.ndarray, root: int = 0, deadline: Deadline | None = None
) -> list[np.ndarray] | None:
    """Gather every rank's 1-D array (any length, the same dtype everywhere) onto ``root``.

    Returns the arrays in rank order on ``root``, ``None`` elsewhere. Raw bytes: nothing
    is pickled.

    Collective: call on all ranks.
    """
    data = np.ascontiguousarray(data).reshape(-1)
    got = _gatherv(comm, data.view(np.uint8), root, deadline or Deadline(None))
    if got is None:
        return None
    out, counts, displs = got
    return [out[d : d + c].view(data.dtype) for d, c in zip(displs, counts, strict=True)]


def bcast_json(comm: MPI.Comm, obj: Any, root: int = 0, deadline: Deadline | None = None) -> Any:
    """Broadcast a JSON-serializable object from ``root``.

    Collective: call on all ranks.
    """
    deadline = deadline or Deadline(None)
    is_root = comm.Get_rank() == root
    data = _encode(obj) if is_root else None
    n = np.array([data.size if data is not None else 0], dtype=np.int64)
    deadline.wait(comm.Ibcast(n, root=root), comm)
    if not is_root:
        data = np.empty(int(n[0]), dtype=np.uint8)
    assert data is not None
    deadline.wait_all([comm.Ibcast(data, root=root)], comm)
    return obj if is_root else _decode(data)


def exchange(
    comm: MPI.Comm,
    sends: list[tuple[int, Any]],
    recvs: list[tuple[int, Any]],
    tag: int,
    deadline: Deadline | None = None,
) -> None:
    """Point-to-point exchange: post every receive and send, then wait for all of them.

    ``sends``/``recvs`` are ``(peer, buffer)`` with buffers as mpi4py takes them (for
    example ``[MPI.BOTTOM, 1, datatype]``: raw bytes, no pickle). Every rank calls it at
    the same step, with its own peers (possibly none); each message's two ends must
    describe the same number of bytes.

    Collective: call on all ranks (each with its own peers).
    """
    (deadline or Deadline(None)).wait_all(exchange_start(comm, sends, recvs, tag), comm)


def exchange_start(
    comm: MPI.Comm, sends: list[tuple[int, Any]], recvs: list[tuple[int, Any]], tag: int
) -> list[MPI.Request]:
    """Post the receives and sends of a point-to-point :func:`exchange`; complete them
    with :meth:`Deadline.wait_all` (every posted message must be waited for).

    Collective: call on all ranks (each with its own peers), like :func:`exchange`.
    """
    reqs = [comm.Irecv(buf, source=src, tag=tag) for src, buf in recvs]
    reqs += [comm.Isend(buf, dest=dst, tag=tag) for dst, buf in sends]
    return reqs


def allreduce_int(
    comm: MPI.Comm, value: int, op: MPI.Op = MPI.MAX, deadline: Deadline | None = None
) -> int:
    """Reduce one integer over all ranks (``op``: ``MPI.MAX``, ``MPI.MIN``, ``MPI.SUM``).

    Collective: call on all ranks.
    """
    send = np.array([value], dtype=np.int64)
    recv = np.zeros(1, dtype=np.int64)
    (deadline or Deadline(None)).wait(comm.Iallreduce(send, recv, op=op), comm)
    return int(recv[0])


def allreduce_max(
    comm: MPI.Comm, values: np.ndarray, deadline: Deadline | None = None
) -> np.ndarray:
    """The element-wise maximum of every rank's int64 ``values`` (flags: a logical or).

    Collective: call on all ranks.
    """
    send = np.ascontiguousarray(values, dtype=np.int64)
    recv = np.zeros_like(send)
    (deadline or Deadline(None)).wait(comm.Iallreduce(send, recv, op=MPI.MAX), comm)
    return recv


def all_true(comm: MPI.Comm, flag: bool, deadline: Deadline | None = None) -> bool:
    """Whether ``flag`` holds on every rank.

    Collective: call on all ranks.
    """
    return allreduce_int(comm, 1 if flag else 0, MPI.MIN, deadline) == 1


def any_true(comm: MPI.Comm, flag: bool, deadline: Deadline | None = None) -> bool:
    """Whether ``flag`` holds on at least one rank.

    Collective: call on all ranks.
    """
    return allreduce_int(comm, 1 if flag else 0, MPI.MAX, deadline) == 1


def allgatherv_array(
    comm: MPI.Comm, local: np.ndarray, counts: list[int], deadline: Deadline | None = None
) -> np.ndarray:
    """Concatenate every rank's 1-D array (``counts[r]`` elements on rank ``r``) on every rank.

    Collective: call on all ranks.
    """
    local = np.ascontiguousarray(local).reshape(-1)
    displs = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64).tolist()
    out = np.empty(int(sum(counts)), dtype=local.dtype)
    item = MPI.BYTE.Create_contiguous(local.dtype.itemsize).Commit()  # counts in elements
    try:
        req = comm.Iallgatherv(
            [local.view(np.uint8), local.size, item],
            [out.view(np.uint8), list(counts), displs, item],
        )
        (deadline or Deadline(None)).wait_all([req], comm)
    finally:
        item.Free()
    return out


def _failure_of(exc: BaseException | None) -> list[str] | None:
    if exc is None:
        return None
    if isinstance(exc, InvalidStateFileError):
        kind = "statefile"
    elif isinstance(exc, CorruptCheckpointError):
        kind = "corrupt"
    elif isinstance(exc, NotFoundError):
        kind = "notfound"
    elif isinstance(exc, CheckpointValueError):
        kind = "value"
    elif isinstance(exc, CheckpointError):
        kind = "checkpoint"
    elif isinstance(exc, ValueError):
        kind = "value"
    elif isinstance(exc, TypeError):
        kind = "argument"
    else:
        kind = "other"
    return [kind, type(exc).__name__, str(exc)]


def interrupted(exc: BaseException | None) -> BaseException | None:
    """This rank's failure for an agreement made by hand (gather + broadcast).

    Delivers the signals deferred so far (:mod:`hpckpt._interrupts`): what their
    handlers raise is the failure (and is raised again on this rank by
    :func:`raise_failures`); otherwise ``exc``.
    """
    interrupt = _interrupts.deliver()
    return interrupt if interrupt is not None else exc


def raise_interrupt() -> None:
    """Raise what the handler of a signal deferred so far raises (a last check before a
    step that cannot be undone, made by one rank inside an agreed step)."""
    interrupt = _interrupts.deliver()
    if interrupt is not None:
        raise interrupt


def failure_record(exc: BaseException | None) -> list[str] | None:
    """A JSON-able record of a rank's exception (``None`` for success)."""
    return _failure_of(exc)


def raise_failures(
    comm: MPI.Comm, what: str, records: list[Any], exc: BaseException | None = None
) -> None:
    """Raise the agreed exception for per-rank failure ``records`` (one per rank).

    Returns if every record is ``None``. Otherwise raises, identically on every rank:

    * :class:`InvalidStateFileError` if every failing rank saw an invalid state file;
    * :class:`CorruptCheckpointError` if any rank saw a damaged checkpoint;
    * :class:`NotFoundError` if every failing rank saw a missing file;
    * the original ``ValueError``/``TypeError`` if every rank failed with that same
      error (a bad argument, checked identically everywhere), unless it is a
      ``CheckpointError``;
    * :class:`CheckpointValueError` (a ``CheckpointError`` that is also a ``ValueError``)
      if every failing rank raised a ``ValueError``;
    * :class:`CheckpointError` naming each failing rank and its cause otherwise;

    except on a rank whose own ``exc`` is not an ``Exception`` (``SystemExit``,
    ``KeyboardInterrupt``): that rank raises ``exc`` itself, once all ranks know.
    """
    failed = [(r, f) for r, f in enumerate(records) if f is not None]
    if not failed:
        return
    if exc is not None and not isinstance(exc, Exception):
        raise exc
    failures = tuple(RankFailure(r, f[1], f[2]) for r, f in failed)
    kinds = {f[0] for _, f in failed}
    if "timeout" in kinds:
        late = [r for r, f in failed if f[0] == "timeout"]
        raise CheckpointError(f"{what} timed out: rank(s) {late} did not arrive", failures) from exc
    if kinds == {"statefile"}:
        raise InvalidStateFileError(f"{what} failed", failures) from exc
    if kinds & {"corrupt", "statefile"}:
        raise CorruptCheckpointError(f"{what} failed", failures) from exc
    if kinds == {"notfound"}:
        raise NotFoundError(failures[0].message) from exc
    if (
        kinds <= {"argument", "value"}
        and len(failed) == comm.Get_size()
        and len({(f[1], f[2]) for _, f in failed}) == 1
        and isinstance(exc, (ValueError, TypeError))
        and not isinstance(exc, CheckpointError)
    ):
        raise exc
    if kinds == {"value"}:
        raise CheckpointValueError(f"{what} failed", failures) from exc
    raise CheckpointError(f"{what} failed", failures) from exc


def agree(
    comm: MPI.Comm,
    what: str,
    exc: BaseException | None = None,
    deadline: Deadline | None = None,
    *,
    authority: int | None = None,
) -> None:
    """Agree on success: raise the same exception on every rank if any rank failed.

    Each rank passes the exception it caught (or ``None``); see
    :func:`raise_failures` for what is raised.

    With a timeout (``deadline.timeout``), the records travel point to point
    through rank 0 so that a rank that never arrives is named: rank 0 waits for
    each rank until the deadline, then tells every rank that did arrive which
    ranks are missing; a rank that hears nothing from rank 0 names rank 0.

    With ``authority``, a failure of that rank is the verdict: the other ranks'
    failures count only when it succeeded (used when rank 0 validates what the
    others take on trust).

    A signal deferred during the operation (:mod:`hpckpt._interrupts`) is delivered
    here first: what its handler raises is this rank's failure.

    Collective: call on all ranks.
    """
    interrupt = _interrupts.deliver()
    rec = _failure_of(exc if exc is not None else interrupt)
    if interrupt is not None:
        exc = interrupt
    if deadline is None or deadline.timeout is None:
        # One small reduction when all is well; the records travel only on failure.
        flag = np.array([rec is not None], dtype=np.int32)
        any_failed = np.zeros(1, dtype=np.int32)
        (deadline or Deadline(None)).wait(comm.Iallreduce(flag, any_failed, op=MPI.MAX), comm)
        if not any_failed[0]:
            _interrupts.agreed()
            return
        records = allgather_json(comm, rec, deadline)
    else:
        records = _p2p_agree(comm, rec, deadline)
    _interrupts.agreed()
    if authority is not None and records[authority] is not None:
        records = [r if i == authority else None for i, r in enumerate(records)]
    raise_failures(comm, what, records, exc)


_TAG_BASE = 0x4000
_late_sends: list[tuple[MPI.Request, np.ndarray]] = []  # verdicts for late ranks
_seq: dict[int, int] = {}  # per communicator handle: agreements so far


def _tags(comm: MPI.Comm) -> tuple[int, int]:
    """Fresh tags per agreement, so a late rank's stale message is never mistaken."""
    key = comm.py2f()
    n = _seq.get(key, 0)
    _seq[key] = n + 1
    t = _TAG_BASE + 2 * (n % 8000)
    return t, t + 1


def _recv_bytes(comm: MPI.Comm, source: int, tag: int, end: float) -> bytes | None:
    status = MPI.Status()
    while not comm.Iprobe(source=source, tag=tag, status=status):
        if time.monotonic() > end:
            return None
        time.sleep(_P2P_POLL_SECONDS)
    buf = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
    comm.Recv(buf, source=source, tag=tag)
    return buf.tobytes()


def _p2p_agree(comm: MPI.Comm, rec: Any, deadline: Deadline) -> list[Any]:
    rank, size = comm.Get_rank(), comm.Get_size()
    end = deadline.window()
    assert end is not None
    tag_record, tag_result = _tags(comm)
    if rank != 0:
        req = comm.Isend(_encode(rec), dest=0, tag=tag_record)
        # rank 0 may itself wait a full timeout for a late rank before it answers
        data = _recv_bytes(comm, 0, tag_result, end + float(deadline.timeout or 0))
        if data is None:
            req.Cancel()
            return [
                [
                    "timeout",
                    "Timeout",
                    f"rank 0 did not answer within {2 * (deadline.timeout or 0)} s",
                ]
                if r == 0
                else None
                for r in range(size)
            ]
        req.Wait()
        return json.loads(data.decode())
    records: list[Any] = [rec] + [None] * (size - 1)
    missing = []
    for r in range(1, size):
        data = _recv_bytes(comm, r, tag_record, end)
        if data is None:
            missing.append(r)
            records[r] = ["timeout", "Timeout", f"did not arrive within {deadline.timeout} s"]
        else:
            records[r] = json.loads(data.decode())
    out = _encode(records)
    for r in missing:
        # A late rank finds the verdict when it arrives, so it raises the same error.
        _late_sends.append((comm.Isend(out, dest=r, tag=tag_result), out))
    reqs = [comm.Isend(out, dest=r, tag=tag_result) for r in range(1, size) if r not in missing]
    for q in reqs:
        while not q.Test():
            if time.monotonic() > end:
                q.Cancel()
                break
            time.sleep(_P2P_POLL_SECONDS)
    return records


def bcast_bytes(
    comm: MPI.Comm, data: bytes | None, root: int = 0, deadline: Deadline | None = None
) -> bytes:
    """Broadcast a byte string from ``root``.

    Collective: call on all ranks.
    """
    deadline = deadline or Deadline(None)
    is_root = comm.Get_rank() == root
    n = np.array([len(data) if is_root and data is not None else 0], dtype=np.int64)
    deadline.wait(comm.Ibcast(n, root=root), comm)
    buf = (
        np.frombuffer(data, dtype=np.uint8).copy()
        if is_root and data is not None
        else np.empty(int(n[0]), dtype=np.uint8)
    )
    deadline.wait_all([comm.Ibcast(buf, root=root)], comm)
    return data if is_root and data is not None else buf.tobytes()


def path_hash(path: str) -> int:
    """A hash of ``path``'s absolute form, the same on every rank that names that file."""
    return zlib.crc32(os.path.abspath(path).encode("utf-8", "surrogatepass"))


def raise_different_paths(comm: MPI.Comm, path: str, deadline: Deadline | None = None) -> None:
    """Raise, on every rank, the error for ranks that name different files (after a
    reduction showed it): one all-gather of the paths, for the message.

    Collective: call on all ranks.
    """
    full = os.path.abspath(path)
    paths = allgather_json(comm, full, deadline)
    odd = [r for r, q in enumerate(paths) if q != paths[0]]
    shown = "; ".join(f"rank {r}: {paths[r]!r}" for r in [0, *odd[:3]])
    raise CheckpointError(  # not the operation's name: it names this rank's own path
        f"ranks name different checkpoint paths ({shown}); every rank of the "
        f"communicator must pass the same path"
    )


def agree_same_path(comm: MPI.Comm, path: str, deadline: Deadline | None = None) -> None:
    """Check that every rank names the same file ``path`` (one reduction).

    Raises:
        CheckpointError: On every rank, naming the paths that differ.

    Collective: call on all ranks.
    """
    p = path_hash(path)
    got = allreduce_max(comm, np.array([p, -p], dtype=np.int64), deadline)
    if got[0] != -got[1]:
        raise_different_paths(comm, path, deadline)


def run_agreed(
    comm: MPI.Comm, what: str, fn: Callable[[], T], deadline: Deadline | None = None
) -> T:
    """Run ``fn`` on every rank and agree on its success.

    Returns ``fn()``'s result where every rank succeeded; otherwise raises on every
    rank as :func:`agree` describes.

    A ``BaseException`` (``SystemExit``, ``KeyboardInterrupt``) is agreed on like any
    failure; the rank that had it raises it again, the others ``CheckpointError``.

    Collective: call on all ranks.
    """
    result: Any = None
    exc: BaseException | None = None
    try:
        result = fn()
    except BaseException as e:
        exc = e
    agree(comm, what, exc, deadline)
    return result
