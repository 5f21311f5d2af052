"""Small sharded models shared by the tests."""

from __future__ import annotations

import collections
import json

import numpy as np

import hpckpt
from hpckpt import UNSHARDED, Layout


class Dense(hpckpt.Module):
    """A dense layer whose kernel columns and bias are sharded over mesh dim ``dim``."""

    def __init__(self, n_in, n_out, mesh, dim, seed):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.kernel = hpckpt.Variable(
            rng.standard_normal((n_in, n_out)).astype(np.float32) * 0.3,
            Layout([UNSHARDED, dim], mesh),
        )
        self.bias = hpckpt.Variable(np.zeros(n_out, dtype=np.float32), Layout([dim], mesh))


class MLP(hpckpt.Module):
    """A two-layer MLP. Storage is sharded; compute gathers full weights so that
    every rank computes bit-identical results whatever the mesh and layout."""

    def __init__(self, mesh, dim="x", sizes=(4, 6, 3), seed=0):
        super().__init__()
        self.l1 = Dense(sizes[0], sizes[1], mesh, dim, seed)
        self.l2 = Dense(sizes[1], sizes[2], mesh, dim, seed + 1)

    @property
    def variables(self):
        return [self.l1.kernel, self.l1.bias, self.l2.kernel, self.l2.bias]

    def grads(self, x, y):
        """Local-shard gradients of the mean squared error."""
        w1, b1, w2, b2 = (v.numpy() for v in self.variables)
        h = np.maximum(x @ w1 + b1, 0)
        out = h @ w2 + b2
        d = (2.0 / out.size) * (out - y)
        gw2, gb2 = h.T @ d, d.sum(0)
        dh = (d @ w2.T) * (h > 0)
        gw1, gb1 = x.T @ dh, dh.sum(0)
        full = [gw1, gb1, gw2, gb2]
        return [
            (g[v.layout.local_slices(v.shape)].astype(v.dtype), v)
            for g, v in zip(full, self.variables, strict=False)
        ]


class DataIter(hpckpt.PythonState):
    """A deterministic data iterator whose position is saved as Python state."""

    def __init__(self, seed=7, batch=8):
        self.seed, self.batch, self.position = seed, batch, 0

    def next(self):
        rng = np.random.default_rng([self.seed, self.position])
        self.position += 1
        x = rng.standard_normal((self.batch, 4)).astype(np.float32)
        y = np.stack([x.sum(1), x[:, 0] - x[:, 1], x.prod(1)], 1).astype(np.float32)
        return x, y

    def serialize(self):
        return json.dumps({"seed": self.seed, "batch": self.batch, "position": self.position})

    def deserialize(self, s):
        d = json.loads(s)
        self.seed, self.batch, self.position = d["seed"], d["batch"], d["position"]


Pair = collections.namedtuple("Pair", ["first", "second"])
