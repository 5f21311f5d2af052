"""Save on one rank count, restore on another (run under mpirun by tests/test_rankcount.py).

usage: rankcount.py save|restore DIR
"""

import sys

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout


def values():
    rng = np.random.default_rng(1)
    return {
        "w": rng.standard_normal((13, 7)).astype(np.float32),
        "b": rng.integers(-5, 5, 9).astype(np.int16),
        "s": np.float64(0.125),
    }


def main():
    mode, d = sys.argv[1], sys.argv[2]
    size = MPI.COMM_WORLD.size
    vals = values()
    if mode == "save":
        mesh = hpckpt.create_mesh([("x", 2), ("y", size // 2)])
        vs = {
            "w": hpckpt.Variable(vals["w"], Layout(["x", "y"], mesh)),
            "b": hpckpt.Variable(vals["b"], Layout(["y"], mesh)),
            "s": hpckpt.Variable(vals["s"], Layout([], mesh)),
        }
        hpckpt.CheckpointManager(hpckpt.Checkpoint(**vs), d, max_to_keep=1).save()
    else:
        mesh = hpckpt.create_mesh([("m", size)])
        vs = {
            "w": hpckpt.Variable(np.zeros((13, 7), np.float32), Layout([UNSHARDED, "m"], mesh)),
            "b": hpckpt.Variable(np.zeros(9, np.int16), Layout(["m"], mesh)),
            "s": hpckpt.Variable(np.float64(0), Layout([], mesh)),
        }
        hpckpt.Checkpoint(**vs).restore(hpckpt.latest_checkpoint(d)).assert_consumed()
        ok = all(np.array_equal(vs[k].numpy(), vals[k]) for k in vals)
        ok = MPI.COMM_WORLD.allreduce(ok, op=MPI.LAND)
        if MPI.COMM_WORLD.rank == 0:
            print("RESTORED-OK" if ok else "RESTORED-WRONG", size)


if __name__ == "__main__":
    main()
