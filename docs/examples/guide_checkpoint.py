"""Checkpoint write/read and save/restore, another layout on restore,
DTensorCheckpoint on a sub-communicator, CheckpointOptions.

    mpirun -n 4 python -m mpi4py docs/examples/guide_checkpoint.py   (an even number of ranks)
"""

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout

comm = MPI.COMM_WORLD


def say(*args):
    if comm.rank == 0:
        print(*args, flush=True)


mesh = hpckpt.create_mesh([("x", 2), ("y", comm.size // 2)])
model = hpckpt.Module()
model.w = hpckpt.Variable(np.arange(24.0).reshape(6, 4), Layout(["x", "y"], mesh))
model.b = hpckpt.Variable(np.arange(4, dtype=np.float32), Layout(["y"], mesh))
ckpt = hpckpt.Checkpoint(model=model)

# write()/read(): exactly the path given; no counter, no state file.
path = ckpt.write("./guide/weights")
say("write ->", path)
model.w.assign(np.zeros((6, 4)))
ckpt.read(path).assert_consumed()
say("read back, sum of w =", model.w.numpy().sum())

# save()/restore(): numbered paths, save_counter, the state file "checkpoint".
p1 = ckpt.save("./guide/ckpt")
p2 = ckpt.save("./guide/ckpt")
say("save ->", p1, p2, " save_counter =", int(ckpt.save_counter.local))
say("latest_checkpoint:", hpckpt.latest_checkpoint("./guide"))

# Restore into other layouts and another mesh: the normal case, no option needed.
line = hpckpt.create_mesh([("r", comm.size)])
other = hpckpt.Module()
other.w = hpckpt.Variable(np.zeros((6, 4)), Layout([UNSHARDED, "r"], line))  # columns now
other.b = hpckpt.Variable(np.zeros(4, np.float32))  # replicated now
status = hpckpt.Checkpoint(model=other).restore(p2)
status.assert_consumed()
ok = np.array_equal(other.w.numpy(), np.arange(24.0).reshape(6, 4))
say("restored on another layout:", ok, "| w shard on rank 0:", other.w.local.shape)

# DTensorCheckpoint: collective over its mesh's communicator only. Here each half
# of the job has its own mesh and writes its own checkpoint independently.
color = comm.rank % 2
sub = comm.Split(color, comm.rank)
half = hpckpt.create_mesh([("x", sub.size)], comm=sub)
v = hpckpt.Variable(np.full(5, float(color)), Layout(["x"], half))
dt = hpckpt.DTensorCheckpoint(half, v=v)
written = dt.save(f"./guide/group{color}/ckpt")
names = comm.allgather((color, written))
say("DTensorCheckpoint saves:", sorted(set(names)))

# CheckpointOptions: per-call IO options.
opts = hpckpt.CheckpointOptions(
    collective=True,  # collective MPI-IO, big contiguous runs by pwrite/preadv; False: no MPI-IO
    mpi_info={"romio_cb_write": "enable"},  # MPI-IO hints for MPI.File.Open
    verify_checksums=True,  # check every slice read against its CRC-32C
    timeout=60.0,  # seconds to wait for other ranks at each agreement step
    alignment=1 << 20,  # datasets >= alignment_threshold start at multiples of this
    alignment_threshold=1 << 20,
)
ckpt.write("./guide/with_options", options=opts)
ckpt.read("./guide/with_options", options=opts).assert_consumed()
say("options:", opts)
ckpt.sync()  # waits for a running asynchronous save (none here): collective
