"""Peak memory of saving and restoring a ghosted 2-D field without copies (issue 13).

Each rank owns a block of a 2-D field on a ``Compute_dims`` grid, stored with one
layer of ghost cells (an ``(n + 2, m + 2)`` array); the Variable aliases its
interior ``u[1:-1, 1:-1]`` (``from_local(..., copy=False)``), a strided view.
For a synchronous save and a restore (``restore_in_place``), each rank measures
how far its peak resident memory (``VmHWM``, reset through ``/proc/self/clear_refs``
just before) rises above its resident memory before the call. With ``--copy`` the
Variable owns a contiguous copy of the interior instead (what a port needed before):
the copy itself is then part of the baseline, and the figure shows what the
save/restore adds on top of it.

usage: mpirun -n 4 python -m mpi4py benchmarks/memory.py DIR --mib 256 [--copy]
Prints one JSON line (rank 0) with every rank's figures in MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

import numpy as np
from mpi4py import MPI

import hpckpt

MiB = float(1 << 20)


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> int:
    """Reset the peak RSS to the current RSS; return the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status("VmRSS")


def measure(fn) -> tuple[float, float]:
    """``(extra peak MiB, seconds)`` of ``fn()`` on this rank."""
    MPI.COMM_WORLD.Barrier()
    base = reset_peak()
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    return (_status("VmHWM") - base) / MiB, dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--mib", type=int, default=256, help="interior MiB per rank")
    ap.add_argument("--copy", action="store_true", help="a Variable owning a copy (baseline)")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    dims = MPI.Compute_dims(comm.size, 2)
    mesh = hpckpt.create_mesh([("x", dims[0]), ("y", dims[1])])
    cols = 4096
    rows = max(1, int(args.mib * MiB) // (8 * cols))
    shape = (rows * dims[0], cols * dims[1])
    lay = hpckpt.Layout(["x", "y"], mesh)
    n, m = lay.local_shape(shape)
    u = np.empty((n + 2, m + 2))
    u[...] = comm.rank  # touch every page
    inner = u[1:-1, 1:-1]
    v = hpckpt.Variable.from_local(inner, lay, shape, copy=args.copy)
    if args.copy:
        v.local[...] = inner
    ck = hpckpt.Checkpoint(u=v)
    rss_before = _status("VmRSS") / MiB
    prefix = os.path.join(args.dir, "mem")
    save_mib, save_s = measure(lambda: ck.write(prefix))
    restore_mib, restore_s = measure(lambda: ck.read(prefix).assert_consumed())
    ok = np.all(inner == comm.rank) if not args.copy else np.all(v.local == comm.rank)
    every = comm.gather(
        {
            "rank": comm.rank,
            "rss_before_mib": round(rss_before, 1),
            "save_extra_mib": round(save_mib, 1),
            "restore_extra_mib": round(restore_mib, 1),
            "save_s": round(save_s, 2),
            "restore_s": round(restore_s, 2),
            "ok": bool(ok),
        },
        root=0,
    )
    if comm.rank == 0:
        print(
            json.dumps(
                {
                    "ranks": comm.size,
                    "grid": dims,
                    "global_shape": list(shape),
                    "interior_mib_per_rank": round(n * m * 8 / MiB, 1),
                    "copy": args.copy,
                    "per_rank": every,
                    "max_save_extra_mib": max(e["save_extra_mib"] for e in every),
                    "max_restore_extra_mib": max(e["restore_extra_mib"] for e in every),
                }
            )
        )
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
