"""Any decomposition, no copies (issue 13) across rank counts: see test_adopt_rankcount.py.

usage: adopt.py save DIR       every kind of variable, saved by this job's ranks
       adopt.py restore DIR    restore each saved kind into each kind (3 x 3 pairs), the
                               RankStates (own value, or reshard on another rank count)
                               and the ml_dtypes floats; prints ADOPT-OK N or ADOPT-FAIL

The three kinds hold the same (13, 7) global value, each in a ghosted array (a view
``g[1:-1, 1:-1]`` is the Variable's local array, ``copy=False``):

* ``blocks``: the default block rule on a ``Compute_dims`` grid;
* ``splits``: the same grid with the remainder on the last rank along x, and an
  empty first block along y;
* ``boxes``: per-rank boxes (``offset=``), load-balanced, with two replicas on 4 ranks.
"""

import json
import sys

import ml_dtypes
import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import Layout

SHAPE = (13, 7)
GHOST = -7.0
LOW = {
    "bf16": ml_dtypes.bfloat16,
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
}


def value():
    return (np.arange(91, dtype=np.float64).reshape(SHAPE) * 1.5 - 20).astype(np.float64)


def low_value(dt):
    return (np.linspace(-3, 3, 91).reshape(SHAPE)).astype(dt)


def grid(size):
    dims = MPI.Compute_dims(size, 2)
    cart = MPI.COMM_WORLD.Create_cart(dims)
    return hpckpt.create_mesh([("x", dims[0]), ("y", dims[1])], comm=cart)


def remainder_last(n, k):
    q = n // k
    return [i * q for i in range(k)] + [n]


def empty_first(n, k):
    if k == 1:
        return [0, n]
    return [0, *remainder_last(n, k - 1)]


def boxes(size):
    """(start, shape) of every rank's box: uneven, non-Cartesian; replicas on 4 ranks."""
    if size == 1:
        return [((0, 0), SHAPE)]
    if size == 2:
        return [((0, 0), (5, 7)), ((5, 0), (8, 7))]
    if size == 3:
        return [((0, 0), (5, 7)), ((5, 0), (8, 3)), ((5, 3), (8, 4))]
    return [((0, 0), (5, 7)), ((0, 0), (5, 7)), ((5, 0), (8, 3)), ((5, 3), (8, 4))]


def ghosted(shape, dtype, fill):
    g = np.full((shape[0] + 2, shape[1] + 2), fill, dtype=dtype)
    return g, g[1:-1, 1:-1]


def make(kind, mesh, dtype=np.float64, fill=GHOST, src=None):
    """(ghosted array, Variable aliasing its interior) of one kind."""
    rank, size = MPI.COMM_WORLD.rank, MPI.COMM_WORLD.size
    if kind == "boxes":
        start, shape = boxes(size)[rank]
        g, inner = ghosted(shape, dtype, fill)
        if src is not None:
            inner[...] = src[start[0] : start[0] + shape[0], start[1] : start[1] + shape[1]]
        return g, hpckpt.Variable.from_local(inner, global_shape=SHAPE, offset=start, copy=False)
    if kind == "blocks":
        lay = Layout(["x", "y"], mesh)
    else:
        lay = Layout(
            ["x", "y"],
            mesh,
            splits={
                "x": remainder_last(SHAPE[0], mesh.dim_size("x")),
                "y": empty_first(SHAPE[1], mesh.dim_size("y")),
            },
        )
    sl = lay.local_slices(SHAPE)
    g, inner = ghosted(lay.local_shape(SHAPE), dtype, fill)
    if src is not None:
        inner[...] = src[sl]
    return g, hpckpt.Variable.from_local(inner, lay, SHAPE, copy=False)


class Rng(hpckpt.RankState):
    """A per-rank numpy Generator: the documented RNG recipe."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def serialize(self):
        return json.dumps(self.rng.bit_generator.state)

    def deserialize(self, s):
        self.rng.bit_generator.state = json.loads(s)


class SharedRng(Rng):
    """On another rank count, rank r continues saved rank r % n's stream."""

    def reshard(self, saved):
        return saved[MPI.COMM_WORLD.rank % len(saved)]


def expected_draws(saved_rank):
    rng = np.random.default_rng(1000 + saved_rank)
    rng.random(3)  # advanced before the save
    return rng.random(4)


def save(d):
    rank = MPI.COMM_WORLD.rank
    mesh = grid(MPI.COMM_WORLD.size)
    keep, objs = [], {}
    for kind in ("blocks", "splits", "boxes"):
        g, v = make(kind, mesh, src=value())
        keep.append(g)
        objs[kind] = v
    for name, dt in LOW.items():
        g, v = make("splits", mesh, dtype=dt, fill=0, src=low_value(dt))
        keep.append(g)
        objs[name] = v
    rng = Rng(1000 + rank)
    rng.rng.random(3)
    objs["rng"] = rng
    hpckpt.CheckpointManager(hpckpt.Checkpoint(**objs), d, max_to_keep=1).save()


def check_kind(d, target, mesh, errors):
    """Restore every saved kind into variables of kind ``target``; check values and ghosts."""
    made = {k: make(target, mesh) for k in ("blocks", "splits", "boxes")}
    status = hpckpt.Checkpoint(**{k: v for k, (_, v) in made.items()}).restore(
        hpckpt.latest_checkpoint(d)
    )
    status.expect_partial()
    full = value()
    for saved, (g, v) in made.items():
        want = full[tuple(slice(a, a + n) for a, n in zip(v.offset, v.local.shape, strict=True))]
        if not np.array_equal(v.local, want):
            errors.append(f"{saved}->{target}: wrong values")
        if v.local.base is not g:
            errors.append(f"{saved}->{target}: the Variable no longer aliases its array")
        ring = np.ones(g.shape, bool)
        ring[1:-1, 1:-1] = False
        if not np.all(g[ring] == GHOST):
            errors.append(f"{saved}->{target}: ghost cells were written")


def restore(d, saved_size):
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    mesh = grid(size)
    errors = []
    for target in ("blocks", "splits", "boxes"):
        check_kind(d, target, mesh, errors)
    low = {k: make("boxes", mesh, dtype=dt, fill=0) for k, dt in LOW.items()}
    hpckpt.Checkpoint(**{k: v for k, (_, v) in low.items()}).restore(
        hpckpt.latest_checkpoint(d)
    ).expect_partial()
    for k, (_, v) in low.items():
        want = low_value(LOW[k])[
            tuple(slice(a, a + n) for a, n in zip(v.offset, v.local.shape, strict=True))
        ]
        if v.dtype != LOW[k] or not np.array_equal(v.local.view(np.uint8), want.view(np.uint8)):
            errors.append(f"{k}: not bit-identical")
    if size == saved_size:
        rng = Rng(0)
        hpckpt.Checkpoint(rng=rng).restore(hpckpt.latest_checkpoint(d)).expect_partial()
        if not np.array_equal(rng.rng.random(4), expected_draws(rank)):
            errors.append("RankState: not this rank's own stream")
    else:
        caught = None
        try:
            hpckpt.Checkpoint(rng=Rng(0)).restore(hpckpt.latest_checkpoint(d)).expect_partial()
        except hpckpt.CheckpointError as e:
            caught = str(e)
        if caught is None or "reshard" not in caught:
            errors.append(f"RankState: default reshard did not raise a clear error: {caught}")
        rng = SharedRng(0)
        hpckpt.Checkpoint(rng=rng).restore(hpckpt.latest_checkpoint(d)).expect_partial()
        if not np.array_equal(rng.rng.random(4), expected_draws(rank % saved_size)):
            errors.append("RankState: reshard did not give saved rank r % n's stream")
    every = comm.allgather(errors)
    if rank == 0:
        bad = [f"rank {r}: {e}" for r, es in enumerate(every) for e in es]
        print("ADOPT-FAIL" if bad else "ADOPT-OK", size, "; ".join(bad))


if __name__ == "__main__":
    mode, d = sys.argv[1], sys.argv[2]
    if mode == "save":
        save(d)
    else:
        restore(d, int(sys.argv[3]))
