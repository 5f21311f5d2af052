"""An advisory writer lock for a checkpoint directory.

``DIR/.hpckpt.lock`` holds JSON naming the writer (host, pid, Slurm job id,
time). It is created with ``O_EXCL`` while a :class:`~hpckpt.CheckpointManager`
saves, so a second job writing into the same directory is refused with a clear
error instead of corrupting the state file. A lock is taken over only when it is
provably stale: its process is gone (same host; a live holder on this host gets
``wait_same_host`` seconds to finish), it belongs to this same Slurm job (a
requeued job), or it is older than ``stale_after`` seconds.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass

from ..errors import CheckpointError
from .paths import LOCK_NAME

__all__ = ["LOCK_NAME", "DirectoryLock"]


def _job_id() -> str | None:
    return os.environ.get("SLURM_JOB_ID") or None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


@dataclass
class DirectoryLock:
    """The writer lock of ``directory`` (held by one process: rank 0)."""

    directory: str
    stale_after: float = 6 * 3600.0
    wait_same_host: float = 15.0

    @property
    def path(self) -> str:
        return os.path.join(self.directory, LOCK_NAME)

    def _mine(self) -> dict:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "job_id": _job_id(),
            "time": time.time(),
        }

    def _is_stale(self, holder: dict) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            if holder["pid"] == os.getpid() or not _alive(holder["pid"]):
                return True
        if holder.get("job_id") is not None and holder.get("job_id") == _job_id():
            return True
        t = holder.get("time")
        return isinstance(t, (int, float)) and time.time() - t > self.stale_after

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            CheckpointError: Another live writer holds it.
        """
        os.makedirs(self.directory, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = self._wait_for_local_holder(self._read())
                if holder is not None and not self._is_stale(holder):
                    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("time", 0)))
                    raise CheckpointError(
                        f"checkpoint directory {self.directory!r} is being written by another "
                        f"job (job id {holder.get('job_id')}, host {holder.get('host')}, pid "
                        f"{holder.get('pid')}, since {when}); refusing to save into it. If that "
                        f"job is gone, remove {self.path!r}"
                    ) from None
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._mine(), f)
            return
        raise CheckpointError(f"could not take the writer lock {self.path!r}")

    def _wait_for_local_holder(self, holder: dict | None) -> dict | None:
        """A live holder on this host (e.g. a job being torn down) gets a short grace period."""
        end = time.monotonic() + self.wait_same_host
        while (
            holder is not None
            and holder.get("host") == socket.gethostname()
            and isinstance(holder.get("pid"), int)
            and holder["pid"] != os.getpid()
            and _alive(holder["pid"])
            and time.monotonic() < end
        ):
            time.sleep(0.05)
            holder = self._read()
        return holder

    def _read(self) -> dict | None:
        try:
            with open(self.path) as f:
                d = json.loads(f.read(4096))
            return d if isinstance(d, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        """Drop the lock if this process holds it."""
        holder = self._read()
        if (
            holder is not None
            and holder.get("pid") == os.getpid()
            and holder.get("host") == socket.gethostname()
        ):
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
