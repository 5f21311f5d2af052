"""CheckpointManager: numbering, retention, step intervals, restore_or_initialize.

    mpirun -n 4 python -m mpi4py docs/examples/guide_manager.py
"""

import os

import numpy as np
from mpi4py import MPI

import hpckpt

comm = MPI.COMM_WORLD


def say(*args):
    if comm.rank == 0:
        print(*args, flush=True)


step = hpckpt.Variable(np.int64(0))
w = hpckpt.Variable(np.zeros(6), hpckpt.Layout(["x"], hpckpt.create_mesh()))
ckpt = hpckpt.Checkpoint(step=step, w=w)
manager = hpckpt.CheckpointManager(
    ckpt,
    "./managed",
    max_to_keep=2,
    checkpoint_name="model",  # model-<n>
    step_counter=step,  # read by checkpoint_interval
    checkpoint_interval=5,  # save() does nothing until 5 steps passed since the last save
    init_fn=lambda: w.assign(np.full(6, 0.5)),  # runs when there is nothing to restore
)
say("restore_or_initialize ->", manager.restore_or_initialize(), "| w:", w.numpy())

for s in range(1, 13):
    step.local[...] = s
    w.local[...] += 1
    path = manager.save(checkpoint_number=step)  # name the file by the step
    if path:
        say(f"step {s:2d}: saved {path}")
say("kept:", manager.checkpoints, " latest:", manager.latest_checkpoint)
manager.sync()  # collective: the files of dropped checkpoints are gone when it returns
say("files:", sorted(os.listdir("./managed")) if comm.rank == 0 else None)
manager.close()  # gives the directory's lease (.hpckpt.lock) up; so does the program's end

# A new manager (a new job) finds the kept checkpoints through the state file.
again = hpckpt.CheckpointManager(ckpt, "./managed", max_to_keep=2, checkpoint_name="model")
w.assign(np.zeros(6))
restored = again.restore_or_initialize()
say("restore_or_initialize ->", restored, "| step", int(step.local), "| w:", w.numpy())
say("save_counter:", int(ckpt.save_counter.local))
# check_interval=False forces a save (e.g. at the end of the job).
say("forced:", again.save(checkpoint_number=99, check_interval=False))
again.close()
