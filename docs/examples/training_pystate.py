"""PythonState: a data iterator's position and a random generator's state.

    mpirun -n 4 python -m mpi4py docs/examples/training_pystate.py
"""

import io
import json

import numpy as np
from mpi4py import MPI
from training_model import ToyIterator, say

import hpckpt


class NumpyRNG(hpckpt.PythonState):
    """A numpy Generator whose exact state is checkpointed (as JSON, never pickled)."""

    def __init__(self, seed):
        self.gen = np.random.Generator(np.random.PCG64(seed))

    def serialize(self):
        return json.dumps(self.gen.bit_generator.state)

    def deserialize(self, string_value):
        self.gen.bit_generator.state = json.loads(string_value)


rng, iterator = NumpyRNG(seed=1234), ToyIterator()
ckpt = hpckpt.Checkpoint(rng=rng, iterator=iterator)
next(iterator), rng.gen.random()  # advance both
path = ckpt.save("./pystate/ckpt")

draws = rng.gen.random(3)
batch = next(iterator)["x"].ravel()
say("after save:    draws", draws, " batch x", batch)

# A fresh program: new objects, restored from the checkpoint.
rng2, iterator2 = NumpyRNG(seed=0), ToyIterator()
hpckpt.Checkpoint(rng=rng2, iterator=iterator2).restore(path).assert_consumed()
say("after restore: draws", rng2.gen.random(3), " batch x", next(iterator2)["x"].ravel())

# The saved string is rank 0's; every rank deserializes it on restore.
reader = hpckpt.load_checkpoint(path)
say("stored iterator state:", reader.get_tensor("iterator/.ATTRIBUTES/py_state").tobytes().decode())

# Rank-dependent state is not saved per rank: after restore every rank has rank 0's.
per_rank = NumpyRNG(seed=MPI.COMM_WORLD.rank)
p = hpckpt.Checkpoint(rng=per_rank).write("./pystate/per_rank")
hpckpt.Checkpoint(rng=per_rank).read(p)
say("per-rank generators after restore:", MPI.COMM_WORLD.gather(round(per_rank.gen.random(), 4)))


class NumpyArray(hpckpt.PythonState):
    """A numpy array saved as the bytes of np.save (no pickle): serialize may return bytes."""

    def __init__(self, array):
        self.array = array

    def serialize(self):
        buf = io.BytesIO()
        np.save(buf, self.array, allow_pickle=False)
        return buf.getvalue()

    def deserialize(self, data):  # gets bytes back, as saved
        self.array = np.load(io.BytesIO(data), allow_pickle=False)


state = NumpyArray(np.arange(6.0).reshape(2, 3))
p = hpckpt.Checkpoint(state=state).save("./pystate/array")
state.array = np.zeros(1)
hpckpt.Checkpoint(state=state).restore(p)
say("array restored from bytes:", state.array.tolist())


class Broken(hpckpt.PythonState):
    def serialize(self):
        return {"not": "a string"}

    def deserialize(self, string_value):
        pass


try:  # the same error on every rank: raised as it is, on every rank
    hpckpt.Checkpoint(b=Broken()).write("./pystate/broken")
except TypeError as e:
    say("TypeError:", e)
