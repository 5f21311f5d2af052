"""Manual checkpointing with a CheckpointManager, and the training loop.

Each run trains 50 steps and saves every 10 steps, keeping the last three
checkpoints; a second run (on any number of ranks) picks up where the first
stopped.

    rm -rf tf_ckpts
    mpirun -n 4 python -m mpi4py docs/examples/training_loop.py   # from scratch
    mpirun -n 3 python -m mpi4py docs/examples/training_loop.py   # resumes
"""

import os

import numpy as np
from mpi4py import MPI
from training_model import Net, ToyIterator, say, train_step

import hpckpt

mesh = hpckpt.create_mesh([("x", MPI.COMM_WORLD.size)])
opt = hpckpt.optimizers.Adam(0.1)
net = Net(mesh)
iterator = ToyIterator()
ckpt = hpckpt.Checkpoint(
    step=hpckpt.Variable(np.int64(1)), optimizer=opt, net=net, iterator=iterator
)
manager = hpckpt.CheckpointManager(ckpt, "./tf_ckpts", max_to_keep=3)


def train_and_checkpoint(net, manager):
    ckpt.restore(manager.latest_checkpoint)
    if manager.latest_checkpoint:
        say(f"Restored from {manager.latest_checkpoint}")
    else:
        say("Initializing from scratch.")

    for _ in range(50):
        example = next(iterator)
        loss = train_step(net, example, opt)
        ckpt.step.local[...] += 1
        if int(ckpt.step.local) % 10 == 0:
            save_path = manager.save()
            say(f"Saved checkpoint for step {int(ckpt.step.local)}: {save_path}")
            say(f"loss {loss:1.2f}")


train_and_checkpoint(net, manager)
say("ranks:", MPI.COMM_WORLD.size, " kept:", manager.checkpoints)
if MPI.COMM_WORLD.rank == 0:
    print("files:", sorted(os.listdir("tf_ckpts")))
