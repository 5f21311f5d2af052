"""Multi-level checkpointing: a node-local tier with partner copies, persisted in the background.

Run on two emulated nodes of two ranks each (docs/multilevel.md):

    HPCKPT_RANKS_PER_NODE=2 mpirun -n 4 python -m mpi4py docs/examples/multilevel.py

On a cluster, leave HPCKPT_RANKS_PER_NODE unset (a node is the ranks that share memory)
and give LocalTier a node-local path such as /dev/shm/my-run or $TMPDIR/my-run.
"""

import shutil
import warnings

import numpy as np
from mpi4py import MPI

import hpckpt

comm = MPI.COMM_WORLD
mesh = hpckpt.create_mesh([("x", comm.size)])
w = hpckpt.Variable(np.zeros((8, 4)), hpckpt.Layout(["x", hpckpt.UNSHARDED], mesh))
ckpt = hpckpt.Checkpoint(w=w)


def new_manager():
    """What a (re)started job builds."""
    tier = hpckpt.LocalTier("ml-local/node-{node}", keep=2, redundancy="partner")
    return hpckpt.CheckpointManager(
        ckpt, "ml-pfs", max_to_keep=2, local_tier=tier, persist_every=2
    )


def say(*args):
    if comm.rank == 0:
        print(*args, flush=True)


manager = new_manager()
for step in range(1, 6):
    w.assign(np.full((8, 4), float(step)))
    path = manager.save()  # returns once the local tier (and the partner copy) is committed
    say(f"step {step}: saved {path}")
manager.sync()  # wait for the background flush of save 4 to the parallel file system
say("local:", manager.local_checkpoints)
say("persisted:", manager.checkpoints)
say("latest:", manager.latest_checkpoint)

# Node 1's storage is lost: a restarted job restores node 1's data from its partner copy.
comm.Barrier()
if comm.rank == 0:
    shutil.rmtree("ml-local/node-1")
comm.Barrier()
w.assign(np.zeros((8, 4)))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    restored = new_manager().restore_or_initialize()
say("restored", restored, "w[0, 0] =", w.numpy()[0, 0])
for c in caught:
    say("warning:", c.message)

# Every node is lost: the newest persisted checkpoint.
comm.Barrier()
if comm.rank == 0:
    shutil.rmtree("ml-local")
comm.Barrier()
restored = new_manager().restore_or_initialize()
say("restored", restored, "w[0, 0] =", w.numpy()[0, 0])
