"""What the data file's structure checksum saves a restore of many small tensors.

    mpirun -n 4 python -m mpi4py -m benchmarks.probes.structure_check [--count 20000] [--reps 7]

Saves the ``small`` suite's model of ``--count`` tensors once, then restores it
``--reps`` times each way, alternating: with the per-dataset check of the data file's
HDF5 structure forced (``hdf5.structure_unchanged`` patched to answer "changed", as
before the structure checksum existed), and as hpckpt does it (the index's structure
checksum compared by rank 0). Prints the median seconds and ms per tensor of each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from mpi4py import MPI

import hpckpt
from hpckpt.io import hdf5

from ..context import RunContext
from ..workload import model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    comm = MPI.COMM_WORLD
    ctx = RunContext.create(args.dir, cold=False, mpi_info=None, keep=False, verbose=False)
    wl = model(ctx, args.count)
    ck = hpckpt.Checkpoint(model=wl.root())
    prefix = os.path.join(ctx.directory, "ck")
    ck.write(prefix)
    ck.read(prefix)  # warm
    real = hdf5.structure_unchanged
    ways = {"per-dataset check": lambda *a, **k: False, "structure checksum": real}
    times: dict[str, list[float]] = {k: [] for k in ways}
    try:
        for _ in range(args.reps):
            for name, fn in ways.items():
                hdf5.structure_unchanged = fn  # type: ignore[assignment]
                comm.Barrier()
                t = time.perf_counter()
                ck.read(prefix)
                comm.Barrier()
                times[name].append(time.perf_counter() - t)
    finally:
        hdf5.structure_unchanged = real  # type: ignore[assignment]
    n = len(wl.tensors)
    if comm.rank == 0:
        print(f"{n} tensors, {comm.size} ranks, medians of {args.reps}")
        for name, ts in times.items():
            m = statistics.median(ts)
            print(f"{name:20s} {m:.3f} s  {m / n * 1e3:.3f} ms/tensor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
