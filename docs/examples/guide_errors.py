"""Errors: every rank raises the same exception, naming each failing rank.

    mpirun -n 4 python -m mpi4py docs/examples/guide_errors.py
"""

import json
import os

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import Layout

comm = MPI.COMM_WORLD
mesh = hpckpt.create_mesh()


def report(label, exc):
    """Show what each rank caught (collective)."""
    seen = comm.gather(f"{type(exc).__name__}")
    if comm.rank == 0:
        print(f"{label}: every rank raised {sorted(set(seen))}\n  {exc}")
        for f in getattr(exc, "failures", ()):
            print(f"  failure: rank={f.rank} type={f.type}")


v = hpckpt.Variable(np.arange(12.0), Layout(["x"], mesh))

# 1. A missing checkpoint: NotFoundError (a FileNotFoundError) on every rank.
try:
    hpckpt.Checkpoint(v=v).restore("./errors/nothing-here-1")
except FileNotFoundError as e:
    report("missing checkpoint", e)


# 2. A failure on one rank only: every rank raises CheckpointError naming it.
class Flaky(hpckpt.PythonState):
    def serialize(self):
        if comm.rank == 2:
            raise RuntimeError("disk quota exceeded (simulated)")
        return "{}"

    def deserialize(self, s):
        pass


try:
    hpckpt.Checkpoint(v=v, state=Flaky()).write("./errors/flaky")
except hpckpt.CheckpointError as e:
    report("failure on rank 2", e)

# 3. A restore into a variable of another shape.
path = hpckpt.Checkpoint(v=v).write("./errors/good")
try:
    hpckpt.Checkpoint(v=hpckpt.Variable(np.zeros(5), Layout(["x"], mesh))).read(path)
except hpckpt.CheckpointError as e:
    report("shape mismatch", e)

# 4. A damaged data file: CorruptCheckpointError (a CheckpointError).
if comm.rank == 0:
    with open(path + ".index.json") as f:
        index = json.load(f)
    entry = index["tensors"]["v/.ATTRIBUTES/VARIABLE_VALUE"]
    with open(os.path.join("errors", index["data_file"]["name"]), "r+b") as f:
        f.seek(entry["offset"] + 8 * 10)  # inside element 10
        f.write(b"\xff")
comm.Barrier()
try:
    hpckpt.Checkpoint(v=v).read(path)
except hpckpt.CorruptCheckpointError as e:
    report("flipped byte", e)

# 5. The same bad argument on every rank: that exception itself, on every rank.
#    Here: a variable on a mesh of 2 ranks in a checkpoint over all 4.
sub = comm.Split(comm.rank % 2, comm.rank)
w = hpckpt.Variable(np.zeros(4), Layout(["x"], hpckpt.create_mesh(comm=sub)))
try:
    hpckpt.Checkpoint(w=w).write("./errors/bad")
except ValueError as e:
    report("variable on a smaller mesh", e)

# The job is still in step: every rank can go on checkpointing.
ok = hpckpt.Checkpoint(v=v).write("./errors/after")
if comm.rank == 0:
    print("still working:", ok)
