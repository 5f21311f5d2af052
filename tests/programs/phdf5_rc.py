"""Parallel HDF5 checkpoints across rank counts (run under mpirun by tests/test_phdf5_files.py).

usage: phdf5_rc.py save DIR OPTIONS      save on this rank count (1-D mesh: uneven rows,
                                         empty shards on 4+ ranks, a replicated tensor)
       phdf5_rc.py restore DIR IO        restore on this rank count onto another decomposition
                                         (a 2-D mesh where it can) with CheckpointOptions(io=IO)
OPTIONS: "gzip" (compression="shuffle+gzip:1") or "hdf5" (io="hdf5").
Prints "SAVED n" / "RESTORED-OK n" (or "RESTORED-WRONG n [keys]") on rank 0.
"""

import sys

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout


def values():
    x = np.linspace(0.0, 1.0, 61)
    return {
        # a smooth field (compresses well) and random data (does not)
        "field": np.exp(-((x[:, None] - 0.4) ** 2 + (x[None, :47] - 0.6) ** 2) * 9.0),
        "noise": np.random.default_rng(3).standard_normal((33, 20)).astype(np.float32),
        "ids": np.arange(700, dtype=np.int64),
        "tiny": np.array([1.0, 2.0, 3.0]),
        "scalar": np.float64(0.5),
    }


def main():
    mode, d, arg = sys.argv[1], sys.argv[2], sys.argv[3]
    comm = MPI.COMM_WORLD
    size = comm.size
    vals = values()
    if mode == "save":
        mesh = hpckpt.create_mesh([("r", size)])
        lays = {
            "field": Layout(["r", UNSHARDED], mesh),
            "noise": Layout([UNSHARDED, "r"], mesh),
            "ids": Layout.replicated(mesh, 1),
            "tiny": Layout(["r"], mesh),
            "scalar": Layout([], mesh),
        }
        opts = (
            hpckpt.CheckpointOptions(compression="shuffle+gzip:1")
            if arg == "gzip"
            else hpckpt.CheckpointOptions(io="hdf5")
        )
        vs = {k: hpckpt.Variable(v, lays[k]) for k, v in vals.items()}
        hpckpt.CheckpointManager(hpckpt.Checkpoint(**vs), d, max_to_keep=1).save(options=opts)
        if comm.rank == 0:
            print("SAVED", size)
        return
    shape = (2, size // 2) if size % 2 == 0 else (1, size)
    mesh = hpckpt.create_mesh([("x", shape[0]), ("y", shape[1])])
    lays = {
        "field": Layout(["y", "x"], mesh),
        "noise": Layout(["x", UNSHARDED], mesh),
        "ids": Layout(["y"], mesh),
        "tiny": Layout.replicated(mesh, 1),
        "scalar": Layout([], mesh),
    }
    vs = {k: hpckpt.Variable(np.zeros_like(v), lays[k]) for k, v in vals.items()}
    opts = hpckpt.CheckpointOptions(io=arg)
    hpckpt.Checkpoint(**vs).restore(hpckpt.latest_checkpoint(d), options=opts).assert_consumed()
    bad = [k for k in vals if not np.array_equal(vs[k].numpy(), vals[k])]
    bad = comm.allreduce(bad)
    if comm.rank == 0:
        print("RESTORED-OK" if not bad else "RESTORED-WRONG", size, *bad)


if __name__ == "__main__":
    main()
