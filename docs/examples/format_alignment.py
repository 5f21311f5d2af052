"""Dataset alignment: tensors of at least `alignment_threshold` bytes start at a
multiple of `alignment` (both 1 MiB by default).

    mpirun -n 4 python -m mpi4py docs/examples/format_alignment.py
"""

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import Layout

mesh = hpckpt.create_mesh()
small = hpckpt.Variable(np.ones(10, np.float32), Layout(["x"], mesh))
big = hpckpt.Variable(np.ones((512, 1024), np.float32), Layout(["x", hpckpt.UNSHARDED], mesh))
ckpt = hpckpt.Checkpoint(small=small, big=big)
for name, opts in [
    ("default", None),
    ("4 KiB", hpckpt.CheckpointOptions(alignment=4096, alignment_threshold=4096)),
]:
    path = ckpt.write(f"./align/{name.replace(' ', '')}", options=opts)
    if MPI.COMM_WORLD.rank == 0:
        index = hpckpt.load_checkpoint(path).index
        offsets = {k.split("/")[0]: t.offset for k, t in index.tensors.items()}
        print(f"{name:8s} offsets {offsets}  file size {index.data_size}")
