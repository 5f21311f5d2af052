"""Variables: a global value, each rank's shard, gathering, assignment, dtypes.

    mpirun -n 4 python -m mpi4py docs/examples/guide_variables.py
"""

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout

comm = MPI.COMM_WORLD
mesh = hpckpt.create_mesh([("x", 2), ("y", 2)])


def per_rank(label, value):
    values = comm.gather(value)
    if comm.rank == 0:
        print(f"{label:24s}", "  ".join(f"r{r}:{v}" for r, v in enumerate(values)))


# From a global value: every rank passes the same array, each keeps its block.
w = hpckpt.Variable(np.arange(20.0).reshape(4, 5), Layout(["x", "y"], mesh), name="w")
if comm.rank == 0:
    print(w, w.shape, w.dtype, w.layout.sharding_specs)
per_rank("w.local", w.local.tolist())

# The local shard is a writable numpy array: update it in place.
w.local[...] *= 10

# numpy() gathers the global array: COLLECTIVE, call it on every rank.
full = w.numpy()
if comm.rank == 0:
    print("w.numpy():\n", full)

# From each rank's own shard (no rank ever holds the global array).
layout = Layout(["x", UNSHARDED], mesh)
shape = (5, 2)
# Ranks 0/1 and 2/3 are replicas here (same "x" coordinate): give them equal values.
local = np.full(layout.local_shape(shape), 10 * mesh.coord("x"), dtype=np.int32)
u = hpckpt.Variable.from_local(local, layout, shape, name="u")
per_rank("u.local", u.local.tolist())
g = u.numpy()
if comm.rank == 0:
    print("u.numpy():", g.tolist())

# assign(global value) and assign_local(shard).
w.assign(np.ones((4, 5)))
w.assign_local(np.full(w.local.shape, float(comm.rank)))
g = w.numpy()
if comm.rank == 0:
    print("after assign_local:\n", g)

# layout=None: replicated on a default 1-D mesh over COMM_WORLD.
step = hpckpt.Variable(np.int64(0))
per_rank("replicated scalar", (step.layout.sharding_specs, step.local.shape))

# dtypes: bool and every numeric numpy dtype; `dtype=` casts the initial value.
for dt in (np.bool_, np.int8, np.uint16, np.int64, np.float16, np.float32, np.complex128):
    v = hpckpt.Variable(np.zeros(3), dtype=dt)
    if comm.rank == 0:
        print(v.dtype, end=" ")
if comm.rank == 0:
    print()
for bad in (np.array(["a", "b"]), np.array([None]), np.zeros(2, dtype=[("a", "f4")])):
    try:
        hpckpt.Variable(bad)
    except TypeError as e:
        if comm.rank == 0:
            print("TypeError:", e)
try:
    w.assign(np.zeros(3))
except ValueError as e:
    if comm.rank == 0:
        print("ValueError:", e)
