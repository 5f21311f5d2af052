"""The model of docs/training-checkpoints.md: the TF guide's `Net`, in hpckpt form.

Imported by the other training_*.py examples. Run on its own, it shows Module
tracking: a Checkpoint of the net saves the variables its attributes reach.

    mpirun -n 4 python -m mpi4py docs/examples/training_model.py
"""

import json

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout


def say(*args):
    """print() on rank 0 only."""
    if MPI.COMM_WORLD.rank == 0:
        print(*args, flush=True)


class Dense(hpckpt.Module):
    """Like tf.keras.layers.Dense(units): creates its variables on the first call.

    The kernel's columns and the bias are sharded over mesh dimension "x"
    (5 units on 4 ranks: blocks of 2, 1, 1, 1).
    """

    def __init__(self, units, mesh):
        super().__init__()
        self.units = units  # an int: ignored by checkpoints
        self.mesh = mesh  # not trackable: ignored too

    def build(self, n_in):
        rng = np.random.default_rng(42)  # the same initial value on every rank
        limit = np.sqrt(6.0 / (n_in + self.units))
        kernel = rng.uniform(-limit, limit, (n_in, self.units)).astype(np.float32)
        self.kernel = hpckpt.Variable(kernel, Layout([UNSHARDED, "x"], self.mesh), name="kernel")
        self.bias = hpckpt.Variable(
            np.zeros(self.units, np.float32), Layout(["x"], self.mesh), name="bias"
        )

    def __call__(self, x):
        if not hasattr(self, "kernel"):
            self.build(x.shape[1])  # collective: every rank calls the layer
        # Gather the sharded parameters to compute (collective).
        return x @ self.kernel.numpy() + self.bias.numpy()


class Net(hpckpt.Module):
    """A simple linear model."""

    def __init__(self, mesh):
        super().__init__()
        self.l1 = Dense(5, mesh)

    def __call__(self, x):
        return self.l1(x)

    @property
    def trainable_variables(self):
        return [self.l1.kernel, self.l1.bias]


class ToyIterator(hpckpt.PythonState):
    """tf.data's range(10) -> (x, 5x + range(5)), repeated, in batches of 2.

    Its position is Python state: saved as a string with the checkpoint.
    """

    def __init__(self):
        self.inputs = np.arange(10, dtype=np.float32)[:, None]
        self.labels = self.inputs * 5 + np.arange(5, dtype=np.float32)[None, :]
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self):
        i = (2 * self.position) % 10
        self.position += 1
        return {"x": self.inputs[i : i + 2], "y": self.labels[i : i + 2]}

    def serialize(self):
        return json.dumps({"position": self.position})

    def deserialize(self, string_value):
        self.position = json.loads(string_value)["position"]


def train_step(net, example, optimizer):
    """Trains `net` on `example` using `optimizer` (mean absolute error)."""
    output = net(example["x"])
    diff = output - example["y"]
    loss = np.mean(np.abs(diff))
    d = np.sign(diff) / diff.size  # d loss / d output
    grads = [example["x"].T @ d, d.sum(0)]  # global gradients of kernel and bias
    variables = net.trainable_variables
    # The optimizer takes each rank's shard of the gradient.
    optimizer.apply_gradients(
        (g[v.layout.local_slices(v.shape)], v) for g, v in zip(grads, variables, strict=True)
    )
    return loss


if __name__ == "__main__":
    mesh = hpckpt.create_mesh([("x", MPI.COMM_WORLD.size)])
    net = Net(mesh)
    net(np.ones((1, 1), np.float32))  # the first call creates the variables
    path = hpckpt.Checkpoint(net=net).write("easy_checkpoint")
    say("wrote", path)
    for key, shape in hpckpt.list_variables(path):
        say(f"  {key:45s} {shape}")
    shards = MPI.COMM_WORLD.gather(net.l1.kernel.local.shape)
    say("kernel shard shape on each rank:", shards)
