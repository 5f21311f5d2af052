"""Warm restores into the caller's own arrays against hpckpt's page-aligned ones.

    mpirun -n 4 python -m mpi4py -m benchmarks.probes.user_arrays [--size 1G] [--reps 7]

Every rank holds one row shard of a float32 tensor twice: as a ``Variable.from_local
(..., copy=False)`` over an array from ``np.empty`` (numpy's memory: 16 bytes past a
page boundary for large arrays, as a legacy code's arrays are), and as a Variable
that hpckpt allocated (page-aligned). The checkpoint is saved once and restored into
each, alternating, ``--reps`` times each from the warm page cache; a raw ``preadv`` of the
same bytes into a page-aligned buffer is the baseline. Prints the medians and their
ratios to the raw read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt.variable import aligned_empty

from ..context import RunContext
from ..util import parse_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=parse_size, default=1 << 30)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--io", default="auto", help="CheckpointOptions(io=...) of the restores")
    ap.add_argument(
        "--reshard", action="store_true", help="restore by columns (saved by rows): MPI exchange"
    )
    args = ap.parse_args(argv)
    comm = MPI.COMM_WORLD
    p, r = comm.size, comm.rank
    ctx = RunContext.create(args.dir, cold=False, mpi_info=None, keep=False, verbose=False)
    cols = 1024
    rows = max(p, args.size // 4 // cols // p * p)
    mesh = hpckpt.create_mesh([("x", p)], comm=comm)
    layout = hpckpt.Layout(["x", hpckpt.UNSHARDED], mesh)
    local_rows = rows // p
    saved = np.empty((local_rows, cols), np.float32)
    saved[...] = np.random.default_rng(r).random(saved.shape, dtype=np.float32)
    prefix = os.path.join(ctx.directory, "ck")
    hpckpt.Checkpoint(v=hpckpt.Variable.from_local(saved, layout, (rows, cols))).write(prefix)
    if args.reshard:
        layout = hpckpt.Layout([hpckpt.UNSHARDED, "x"], mesh)
    mine = np.empty(layout.local_shape((rows, cols)), np.float32)  # the caller's memory
    mine[...] = 0
    user = hpckpt.Variable.from_local(mine, layout, (rows, cols), copy=False)
    ours = hpckpt.Variable.from_local(mine, layout, (rows, cols))  # copied: page-aligned
    ck_user, ck_ours = hpckpt.Checkpoint(v=user), hpckpt.Checkpoint(v=ours)
    ck_user.read(prefix)
    entries = {e.key: e for e in hdf5_entries(prefix)}
    path = ctx.directory
    nbytes = mine.nbytes
    raw = aligned_empty((nbytes,), np.uint8)
    data = next(f for f in os.listdir(path) if ".data-" in f)
    off = entries["v/.ATTRIBUTES/VARIABLE_VALUE"].offset + r * nbytes

    def raw_read() -> None:
        fd = os.open(os.path.join(path, data), os.O_RDONLY)
        try:
            done = 0
            while done < nbytes:
                done += os.preadv(fd, [raw.data[done : done + (64 << 20)]], off + done)
        finally:
            os.close(fd)

    opts = hpckpt.CheckpointOptions(io=args.io)
    unverified = hpckpt.CheckpointOptions(io=args.io, verify_checksums=False)
    ways = {
        "raw preadv (aligned)": raw_read,
        "restore, hpckpt's array": lambda: ck_ours.read(prefix, options=opts),
        "restore, caller's array": lambda: ck_user.read(prefix, options=opts),
        "restore, hpckpt's, unverified": lambda: ck_ours.read(prefix, options=unverified),
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.reps):
        for name, fn in ways.items():
            comm.Barrier()
            t = time.perf_counter()
            fn()
            comm.Barrier()
            times[name].append(time.perf_counter() - t)
    if r == 0:
        print(
            f"{p} ranks, {rows * cols * 4 / 2**20:.0f} MiB restored, "
            f"caller's array at page offset {mine.ctypes.data % 4096}, io={args.io!r}, "
            f"medians of {args.reps}"
        )
        base = statistics.median(times["raw preadv (aligned)"])
        for name, ts in times.items():
            m = statistics.median(ts)
            print(f"{name:28s} {m:.3f} s  {m / base:.2f}x")
    return 0


def hdf5_entries(prefix: str) -> list:
    from hpckpt.io.load import read_index_file

    index, _ = read_index_file(prefix)
    return list(index.tensors.values())


if __name__ == "__main__":
    raise SystemExit(main())
