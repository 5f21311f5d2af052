import numpy as np

import hpckpt

mesh = hpckpt.create_mesh()  # 1-D mesh "x" over all ranks
w = hpckpt.Variable(np.zeros((8, 6)), hpckpt.Layout(["x", hpckpt.UNSHARDED], mesh))  # rows sharded
step = hpckpt.Variable(np.int64(0))  # a replicated scalar
ckpt = hpckpt.Checkpoint(w=w, step=step)
manager = hpckpt.CheckpointManager(ckpt, "ckpts", max_to_keep=3)
manager.restore_or_initialize()  # the latest checkpoint, whatever rank count wrote it
w.local[...] += mesh.rank + 1  # "train": each rank updates its own rows
step.local[...] += 1
path = manager.save()  # collective: each rank writes its rows into ckpts/ckpt-N.data-*.h5
total = w.numpy().sum()  # collective: gathers the global array
if mesh.rank == 0:
    print(f"{path}: step {int(step.local)}, {mesh.size} rank(s), sum(w) = {total}")
