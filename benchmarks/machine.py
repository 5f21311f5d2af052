"""A description of the machine and software, stored with every JSON result."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from typing import Any

from mpi4py import MPI

__all__ = ["filesystem_of", "machine_info"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def filesystem_of(path: str) -> dict[str, str]:
    """The mount (device, mount point, type) holding ``path``, from /proc/mounts."""
    best = {"device": "?", "mount": "?", "type": "?"}
    best_len = -1
    try:
        real = os.path.realpath(path)
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, typ = line.split()[:3]
                inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= best_len:
                    best, best_len = {"device": dev, "mount": mnt, "type": typ}, len(mnt)
    except OSError:
        pass
    return best


def hpckpt_revision() -> dict[str, Any]:
    """The git commit of the hpckpt source tree in use, and whether ``hpckpt/`` has edits."""
    import hpckpt

    root = os.path.dirname(os.path.dirname(os.path.abspath(hpckpt.__file__)))
    out: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode == 0:
            out["commit"] = head.stdout.strip()
            st = subprocess.run(
                ["git", "-C", root, "status", "--porcelain", "--", "hpckpt"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            out["dirty"] = bool(st.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def machine_info(comm: MPI.Comm, directory: str) -> dict[str, Any]:
    """Ranks, nodes, CPU, memory, file system and library versions.

    Collective: call on all ranks.
    """
    import h5py
    import mpi4py
    import numpy as np

    import hpckpt

    hosts = comm.allgather(MPI.Get_processor_name())
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hostname": socket.gethostname(),
        "ranks": comm.Get_size(),
        "nodes": len(set(hosts)),
        "ranks_per_node": max(hosts.count(h) for h in set(hosts)),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_bytes": _mem_total(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "filesystem": filesystem_of(directory),
        "directory": directory,
        "hpckpt_source": hpckpt_revision() if comm.Get_rank() == 0 else None,
        "versions": {
            "hpckpt": hpckpt.__version__,
            "numpy": np.__version__,
            "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version,
            "mpi4py": mpi4py.__version__,
            "mpi": MPI.Get_library_version().replace("\x00", "").splitlines()[0].strip(),
        },
        "env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("OMPI_MCA_", "ROMIO_", "HDF5_", "SLURM_JOB_", "HPCKPT_"))
        },
    }
