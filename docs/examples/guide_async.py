"""Asynchronous saves: snapshot, keep training, sync.

    mpirun -n 4 python -m mpi4py docs/examples/guide_async.py
"""

import time

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout

comm = MPI.COMM_WORLD


def say(*args):
    if comm.rank == 0:
        print(*args, flush=True)


mesh = hpckpt.create_mesh()
w = hpckpt.Variable(np.zeros((4096, 1024), np.float32), Layout(["x", UNSHARDED], mesh))  # 16 MiB
ckpt = hpckpt.Checkpoint(w=w)
manager = hpckpt.CheckpointManager(ckpt, "./async", max_to_keep=2)
opts = hpckpt.CheckpointOptions(enable_async=True)

w.local[...] = 1.0
t0 = time.perf_counter()
path = manager.save(options=opts)  # returns once every rank has copied its shard
t1 = time.perf_counter()
w.local[...] = 2.0  # safe: the background write uses the snapshot
ckpt.sync()  # collective: waits for the background write and commit; raises its error
t2 = time.perf_counter()
say(f"save returned {path} after {t1 - t0:.3f} s; committed after {t2 - t0:.3f} s")
say("kept:", manager.checkpoints)

# The next save, restore or read of this checkpoint waits for the previous save itself.
manager.save(options=opts)  # waits for nothing here, then snapshots w == 2.0
w.local[...] = 3.0
ckpt.sync()
check = hpckpt.Variable(np.zeros((4096, 1024), np.float32), Layout(["x", UNSHARDED], mesh))
hpckpt.Checkpoint(w=check).restore(path).expect_partial()
first = float(check.numpy()[0, 0])
hpckpt.Checkpoint(w=check).restore(manager.latest_checkpoint).expect_partial()
say("values saved:", first, float(check.numpy()[0, 0]), " kept:", manager.checkpoints)

# With a memory budget too small for the snapshot, the save runs synchronously.
small = hpckpt.CheckpointOptions(enable_async=True, async_memory_budget=1 << 20)
say("synchronous fallback:", manager.save(options=small), " kept:", manager.checkpoints)
