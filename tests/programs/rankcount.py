"""Save on one rank count, restore on another (run under mpirun by tests/test_rankcount.py).

usage: rankcount.py save|restore DIR
       rankcount.py save-rows DIR            (w sharded by rows over all ranks)
       rankcount.py restore-rows DIR         (expects the saved values, rows over all ranks)
       rankcount.py restore-rows-corrupt DIR (expects CorruptCheckpointError on every rank)
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
    if mode.endswith("-rows") or mode == "restore-rows-corrupt":
        mesh = hpckpt.create_mesh([("r", size)])
        vs = {
            "w": hpckpt.Variable(
                vals["w"] if mode == "save-rows" else np.zeros((13, 7), np.float32),
                Layout(["r", UNSHARDED], mesh),
            )
        }
        if mode == "save-rows":
            hpckpt.CheckpointManager(hpckpt.Checkpoint(**vs), d, max_to_keep=1).save()
            return
        caught = None
        try:
            hpckpt.Checkpoint(**vs).restore(hpckpt.latest_checkpoint(d)).expect_partial()
        except hpckpt.CorruptCheckpointError as e:
            caught = str(e)
        got = vs["w"].numpy() if caught is None else None
        flags = MPI.COMM_WORLD.allgather([caught is not None, caught])
        if MPI.COMM_WORLD.rank == 0:
            if mode == "restore-rows-corrupt":
                if all(f[0] for f in flags) and len({f[1] for f in flags}) == 1:
                    print("CORRUPT-DETECTED", size, flags[0][1])
                else:
                    print("NOT-DETECTED", size, flags)
            else:
                ok = got is not None and np.array_equal(got, vals["w"])
                print("RESTORED-OK" if ok else "RESTORED-WRONG", size)
        return
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
