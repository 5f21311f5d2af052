"""Make a small checkpoint to look at with h5ls, h5dump and h5py (docs/format.md).

    mpirun -n 4 python -m mpi4py docs/examples/format_example.py
"""

import json

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import Layout


class Cursor(hpckpt.PythonState):
    def __init__(self):
        self.position = 0

    def serialize(self):
        return json.dumps({"position": self.position})

    def deserialize(self, s):
        self.position = json.loads(s)["position"]


mesh = hpckpt.create_mesh([("x", 2), ("y", MPI.COMM_WORLD.size // 2)])
net = hpckpt.Module()
net.l1 = hpckpt.Module()
net.l1.kernel = hpckpt.Variable(
    np.arange(12, dtype=np.float32).reshape(3, 4), Layout(["x", "y"], mesh)
)
net.l1.bias = hpckpt.Variable(np.zeros(4, np.float32), Layout(["y"], mesh))
opt = hpckpt.optimizers.Adam(0.1)
opt.apply_gradients([(np.ones_like(net.l1.kernel.local), net.l1.kernel)])
cursor = Cursor()
cursor.position = 3
ckpt = hpckpt.Checkpoint(net=net, optimizer=opt, data=cursor)
manager = hpckpt.CheckpointManager(ckpt, "fmt", max_to_keep=2)
for _ in range(3):
    path = manager.save()
if MPI.COMM_WORLD.rank == 0:
    print(path, manager.checkpoints)
