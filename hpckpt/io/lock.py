"""The writer lease of a checkpoint directory: one writing job per directory.

``DIR/.hpckpt.lock`` names the job that writes into ``DIR`` (JSON: a unique token,
host, pid, Slurm job id, since when). A :class:`~hpckpt.CheckpointManager` takes
it at its first save and holds it until it is closed, garbage-collected or the
process exits; rank 0 renews it (the file's modification time) every
:attr:`DirectoryLease.renew_every` seconds.

A second live job is refused at once, with a message naming the holder. A lease is
taken over only when its holder is provably gone: its process no longer exists
(same host), it is this same Slurm job before it was requeued (a lower
``SLURM_RESTART_COUNT``), or it was not renewed for
:attr:`DirectoryLease.stale_after` seconds (another host, whose processes cannot
be checked).

Why no ``flock``/``fcntl`` lock: they are unavailable or node-local on some
parallel file systems (Lustre without ``-o flock``, NFS without a lock manager),
and they vanish silently there. Everything here uses operations that are atomic on
POSIX file systems and NFS alike:

* **creation** with its whole content: the content is written to a temporary file,
  then hard-linked to the lease name (``link`` fails if the name exists; on NFS,
  a link count of 2 on the temporary file proves success). A reader never sees a
  partial lease. Where hard links are not supported, ``O_EXCL`` creation is used
  and readers retry a lease that is momentarily empty.
* **takeover** of a dead holder's lease: the contenders race to create
  ``.hpckpt.lock.takeover-<holder's token>`` (the same exclusive creation); the
  one that wins checks that the lease still is that holder's and renames its own
  lease over it (``rename`` replaces atomically), then removes the marker. The
  others retry, and find a live lease. A marker whose own creator died is taken
  over the same way, one level down.

A manager checks before each save that the lease is still its own; if another job
took it over (this job was stopped for longer than ``stale_after``), the save is
refused (or the lease retaken, if that job is gone too).
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from dataclasses import dataclass

from ..errors import CheckpointError
from .fsutil import read_bounded, remove_quietly
from .paths import LOCK_NAME, new_token, tmp_path

__all__ = ["LOCK_NAME", "DirectoryLease", "LeaseHolder"]

_FORMAT = "hpckpt-lease"
_MAX_LEASE_BYTES = 1 << 16
_MAX_DEPTH = 3  # takeover markers of takeover markers
_MARKER_STALE = 60.0  # seconds after which a takeover marker is abandoned


def _env_seconds(name: str, default: float) -> float:
    try:
        v = float(os.environ.get(name, default))
    except ValueError:
        return default
    return v if v > 0 else default


def _job_id() -> str | None:
    return os.environ.get("SLURM_JOB_ID") or None


def _restarts() -> int:
    """How many times Slurm restarted (requeued) this job: ``SLURM_RESTART_COUNT``."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read(4096).rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class LeaseHolder:
    """What a lease file says (fields ``None`` when the file does not say).

    Attributes:
        ident: Identifies this lease file's content: its token, or (an unreadable or
            older lock file) its inode and modification time.
        token: The holder's unique token.
        host, pid, job_id: The holder's host name, process id, Slurm job id.
        restarts: The holder's ``SLURM_RESTART_COUNT`` (``None`` in lock files of
            earlier versions).
        since: When the holder took the lease (seconds since the epoch).
        renewed: The file's modification time (the holder's last renewal).
        readable: Whether the content was a valid lease document.
    """

    ident: str
    token: str | None
    host: str | None
    pid: int | None
    job_id: str | None
    restarts: int | None
    since: float | None
    renewed: float
    readable: bool

    def describe(self) -> str:
        """``job id J, host H, pid P, since T``, for messages."""
        if not self.readable:
            return "an unreadable lease file"
        since = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
            if self.since is not None
            else "an unknown time"
        )
        job = self.job_id if self.job_id is not None else "none (not a Slurm job)"
        return f"job id {job}, host {self.host}, pid {self.pid}, since {since}"


def _parse(data: bytes, st: os.stat_result) -> LeaseHolder:
    ident = f"i{st.st_ino}-{st.st_mtime_ns}-{st.st_size}"
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        return LeaseHolder(ident, None, None, None, None, None, None, st.st_mtime, False)
    token = doc.get("token")
    token = token if isinstance(token, str) and token.isalnum() and len(token) <= 64 else None
    host = doc.get("host")
    pid = doc.get("pid")
    job = doc.get("job_id")
    since = doc.get("since", doc.get("time"))  # "time": lock files of earlier versions
    restarts = doc.get("restarts")
    return LeaseHolder(
        ident=token or ident,
        token=token,
        host=host if isinstance(host, str) else None,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        job_id=str(job) if isinstance(job, (str, int)) and not isinstance(job, bool) else None,
        restarts=restarts if isinstance(restarts, int) and not isinstance(restarts, bool) else None,
        since=float(since)
        if isinstance(since, (int, float)) and not isinstance(since, bool)
        else None,
        renewed=st.st_mtime,
        readable=isinstance(host, str) or isinstance(pid, int) or job is not None,
    )


class _Held:
    def __init__(self, lease: DirectoryLease, token: str) -> None:
        self.lease = lease  # for the renewer: the path and the interval
        self.token = token
        self.count = 1
        self.lost: LeaseHolder | None = None


_held: dict[str, _Held] = {}  # lease path (real) -> what this process holds
_held_lock = threading.Lock()
_renewer: threading.Thread | None = None
_wake = threading.Event()  # a new lease: look again at how often to renew


def _renew_loop() -> None:
    while True:
        with _held_lock:
            every = min((h.lease.renew_every for h in _held.values()), default=60.0)
        _wake.wait(every)
        _wake.clear()
        with _held_lock:
            items = list(_held.values())
        for h in items:
            try:
                cur = h.lease.read()
                if cur is not None and cur.token == h.token:
                    os.utime(h.lease.path)
                elif h.lost is None and cur is not None:
                    h.lost = cur
            except Exception:  # a flaky file system: try again next time
                pass


def _start_renewer() -> None:
    global _renewer
    if _renewer is None or not _renewer.is_alive():
        _renewer = threading.Thread(target=_renew_loop, name="hpckpt-lease-renew", daemon=True)
        _renewer.start()
    _wake.set()


class DirectoryLease:
    """The writer lease of ``directory``, held by one process (rank 0 of the writing job).

    Args:
        directory: The checkpoint directory.
        stale_after: A lease not renewed for this many seconds is abandoned
            (default ``HPCKPT_LEASE_STALE_AFTER`` or 900).
        renew_every: How often the holder renews it (default
            ``HPCKPT_LEASE_RENEW_EVERY`` or 60).

    Several managers of one process share its lease (counted); the file goes when
    the last one releases it.
    """

    def __init__(
        self,
        directory: str,
        stale_after: float | None = None,
        renew_every: float | None = None,
    ) -> None:
        self.directory = directory
        self.stale_after = stale_after or _env_seconds("HPCKPT_LEASE_STALE_AFTER", 900.0)
        self.renew_every = renew_every or _env_seconds(
            "HPCKPT_LEASE_RENEW_EVERY", min(60.0, self.stale_after / 4)
        )
        self.path = os.path.join(directory, LOCK_NAME)
        self._key = ""
        self._h: _Held | None = None

    # -- files --

    def read(self, path: str | None = None) -> LeaseHolder | None:
        """The holder named by the lease file (or a takeover marker); ``None`` if there is none.

        Regular files only, at most 64 KiB, read without blocking (see
        :func:`~.fsutil.read_bounded`): a FIFO or a device in its place is refused.

        Raises:
            CorruptCheckpointError: The lease file is not a regular file or is too large.
        """
        path = path or self.path
        for attempt in range(20):
            try:
                st = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                return None
            data = read_bounded(path, _MAX_LEASE_BYTES, "lease file")
            if data is None:
                return None
            holder = _parse(data, st)
            # An empty lease is being written (file systems without hard links): wait for it.
            if data or attempt == 19 or time.time() - st.st_mtime > 2.0:
                return holder
            time.sleep(0.05)
        return None  # pragma: no cover

    def _content(self, token: str) -> bytes:
        return json.dumps(
            {
                "format": _FORMAT,
                "version": 1,
                "token": token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "job_id": _job_id(),
                "restarts": _restarts(),
                "since": time.time(),
            }
        ).encode()

    @staticmethod
    def _write_tmp(path: str, content: bytes) -> str:
        tmp = tmp_path(path, new_token())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    @classmethod
    def _create_exclusive(cls, path: str, content: bytes) -> bool:
        """Create ``path`` with ``content`` unless it exists; whether this call created it."""
        tmp = cls._write_tmp(path, content)
        try:
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            except OSError:
                try:  # NFS may report a failure of a link that succeeded
                    if os.stat(tmp).st_nlink == 2:
                        return True
                except OSError:
                    pass
            # no hard links here: exclusive creation, then the content
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                os.write(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        finally:
            remove_quietly(tmp)

    @classmethod
    def _replace(cls, path: str, content: bytes) -> None:
        tmp = cls._write_tmp(path, content)
        try:
            os.replace(tmp, path)
        except BaseException:
            remove_quietly(tmp)
            raise

    # -- rules --

    def _gone(self, h: LeaseHolder, token: str, stale_after: float | None = None) -> str | None:
        """Why holder ``h`` no longer holds the lease; ``None`` if it may be alive."""
        me = socket.gethostname()
        if h.host == me and h.pid is not None:
            if h.pid == os.getpid() and h.token != token:
                return "it named this process, which does not hold it (an earlier run)"
            if h.pid != os.getpid() and not _alive(h.pid):
                return f"its process {h.pid} on this host is gone"
        if (
            h.job_id is not None
            and h.job_id == _job_id()
            and (h.restarts is None or h.restarts < _restarts())
        ):
            return f"it is this same Slurm job {h.job_id}, before it was requeued"
        age = time.time() - h.renewed
        limit = self.stale_after if stale_after is None else stale_after
        if age > limit:
            return f"it was not renewed for {age:.0f} s (limit {limit:.0f} s)"
        return None

    def _refusal(self, h: LeaseHolder) -> CheckpointError:
        age = max(0.0, time.time() - h.renewed)
        what = h.describe()
        if not h.readable:
            what += f" {self.path!r}"
        return CheckpointError(
            f"checkpoint directory {self.directory!r} is held by another job ({what}; lease "
            f"renewed {age:.0f} s ago); refusing to write into it. A lease is given up when "
            f"its manager is closed or its process exits, and taken over when its process is "
            f"gone (same host), when the same Slurm job runs again, or after "
            f"{self.stale_after:.0f} s without renewal. If that job is gone, remove {self.path!r}"
        )

    # -- taking --

    def _take_over(
        self, path: str, holder: LeaseHolder, token: str, content: bytes, depth: int
    ) -> bool:
        """Replace ``path`` (naming ``holder``, who is gone) by ``content``, if this call wins."""
        marker = f"{path}.takeover-{holder.ident}"
        if not self._create_exclusive(marker, content):
            m = self.read(marker)
            # a takeover takes milliseconds: a marker a minute old was left by a dead process
            if m is None or depth >= _MAX_DEPTH or self._gone(m, token, _MARKER_STALE) is None:
                return False  # a live contender is taking over: it wins
            if not self._take_over(marker, m, token, content, depth + 1):
                return False
        try:
            cur = self.read(path)
            if cur is None or cur.ident != holder.ident:
                return False  # changed since it was judged: start again
            self._replace(path, content)
            return True
        finally:
            m = self.read(marker)
            if m is not None and m.token == token:
                remove_quietly(marker)

    def acquire(self, timeout: float = 30.0) -> None:
        """Take the lease, or share it with another manager of this process.

        Raises:
            CheckpointError: Another live job holds it (the message names it).
            CorruptCheckpointError: The lease file is not a regular file.
        """
        if self._h is not None:
            return
        os.makedirs(self.directory, exist_ok=True)
        key = os.path.realpath(self.path)
        with _held_lock:
            h = _held.get(key)
        if h is not None and h.lost is None:
            cur = self.read()
            if cur is not None and cur.token == h.token:
                with _held_lock:
                    h.count += 1
                self._h, self._key = h, key
                return
        token = new_token()
        content = self._content(token)
        end = time.monotonic() + timeout
        while True:
            if self._create_exclusive(self.path, content):
                break
            holder = self.read()
            if holder is None:
                continue
            if self._gone(holder, token) is None:
                raise self._refusal(holder)
            if self._take_over(self.path, holder, token, content, 0):
                break
            if time.monotonic() > end:
                raise CheckpointError(
                    f"could not take the lease {self.path!r} within {timeout} s "
                    f"(other processes keep taking it over)"
                )
            time.sleep(random.uniform(0.001, 0.02))
        self._clean_markers(token)
        h = _Held(self, token)
        with _held_lock:
            _held[key] = h
            _start_renewer()
        self._h, self._key = h, key

    def _clean_markers(self, token: str) -> None:
        """Remove takeover markers of earlier holders (their contenders will find the new lease)."""
        base = os.path.basename(self.path) + ".takeover-"
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        tmp = os.path.basename(self.path) + ".tmp-"
        for n in names:
            path = os.path.join(self.directory, n)
            if n.startswith(base) and not n.startswith(base + token):
                remove_quietly(path)
            elif n.startswith(tmp):  # of a process killed while writing one
                try:
                    if time.time() - os.stat(path).st_mtime > 60:
                        remove_quietly(path)
                except OSError:
                    pass

    def check(self) -> None:
        """Before a save: make sure this process holds the lease (take or retake it if it can).

        Raises:
            CheckpointError: Another live job holds the lease, or took it over.
        """
        h = self._h
        if h is None:
            self.acquire()
            return
        cur = self.read()
        if cur is not None and cur.token == h.token and h.lost is None:
            return
        self._drop()
        if cur is not None and cur.token != h.token and self._gone(cur, h.token) is None:
            raise CheckpointError(
                f"this job's lease on checkpoint directory {self.directory!r} was taken over by "
                f"another job ({cur.describe()}); it is given up only when its holder is gone or "
                f"not renewed for {self.stale_after:.0f} s (was this job stopped?); refusing "
                f"to save"
            )
        self.acquire()

    def _drop(self) -> _Held | None:
        """Stop holding (this object); returns the record if it was the last holder."""
        h, self._h = self._h, None
        if h is None:
            return None
        with _held_lock:
            h.count -= 1
            if h.count > 0:
                return None
            if _held.get(self._key) is h:
                del _held[self._key]
        return h

    def release(self) -> None:
        """Give the lease up (when the last manager of this process holding it lets go)."""
        h = self._drop()
        if h is None:
            return
        try:
            cur = self.read()
        except Exception:
            return
        if cur is not None and cur.token == h.token:
            remove_quietly(self.path)

    @property
    def held(self) -> bool:
        """Whether this object holds (a share of) the lease."""
        return self._h is not None
