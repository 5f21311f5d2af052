"""Save on one rank count, restore on another (mesh and layout follow the job).

    mpirun -n 4 python -m mpi4py docs/examples/guide_resume.py save
    mpirun -n 3 python -m mpi4py docs/examples/guide_resume.py restore
    python docs/examples/guide_resume.py restore          # 1 process, no launcher
"""

import sys

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import Layout

comm = MPI.COMM_WORLD
n = comm.size
# The mesh depends on the job size: 2 x n/2 when n is even, n x 1 otherwise.
dims = [("data", 2), ("model", n // 2)] if n % 2 == 0 else [("data", n), ("model", 1)]
mesh = hpckpt.create_mesh(dims)

emb = hpckpt.Variable(np.zeros((10, 6), np.float32), Layout(["data", "model"], mesh))
bias = hpckpt.Variable(np.zeros(7, np.float32), Layout(["model"], mesh))
step = hpckpt.Variable(np.int64(0), Layout([], mesh))
ckpt = hpckpt.DTensorCheckpoint(mesh, emb=emb, bias=bias, step=step)
manager = hpckpt.CheckpointManager(ckpt, "./resume", max_to_keep=2)

if sys.argv[1] == "save":
    emb.assign(np.arange(60, dtype=np.float32).reshape(10, 6))
    bias.assign(np.arange(7, dtype=np.float32) / 2)
    step.local[...] = 1000
    path = manager.save()
else:
    path = manager.restore_or_initialize()

shards = comm.gather((emb.local.shape, bias.local.shape))
e, b = emb.numpy(), bias.numpy()  # collective
if comm.rank == 0:
    print(f"{sys.argv[1]} on {n} rank(s), mesh {mesh}: {path}")
    print("  step", int(step.local), " emb sum", e.sum(), " bias", b)
    print("  shards (emb, bias) per rank:", shards)
