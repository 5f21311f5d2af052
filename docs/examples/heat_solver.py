"""A 2-D heat solver as an existing MPI code has it, checkpointed with hpckpt (docs/porting.md).

What the code had before hpckpt, and keeps:

* its process grid: ``MPI.Compute_dims`` + ``Create_cart``;
* its own block boundaries: the remainder of each dimension goes to the last rank;
* fields with one layer of ghost cells, ``u`` and ``unew``, swapped every step;
* halo exchange with ``Sendrecv`` along both grid dimensions;
* a per-rank random number generator (here it picks the probe point each rank prints).

What hpckpt adds: a Layout with the code's own splits, a Variable that *is* the
interior of the current field (no copy), re-pointed after every swap, a RankState for
the RNG, and a CheckpointManager. A restart may use another number of ranks (another
grid): the field restores bit for bit, the halos are exchanged once after the restore.

usage: mpirun -n 4 python -m mpi4py heat_solver.py DIR --steps 40 [--stop-at 20]
Prints ``FIELD-CRC <hex>`` of the global field at the end (the same for any run that
reaches the same step, whatever the grid and restarts).
"""

from __future__ import annotations

import argparse
import json
import zlib

import numpy as np
from mpi4py import MPI

import hpckpt

NX, NY = 61, 47  # global interior points
ALPHA = 0.1


def remainder_on_last(n: int, parts: int) -> list[int]:
    """The code's own ownership rule: equal blocks, the remainder on the last rank."""
    q = n // parts
    return [i * q for i in range(parts)] + [n]


def initial(x0: int, y0: int, nx: int, ny: int) -> np.ndarray:
    """The initial temperature of the interior points [x0, x0+nx) x [y0, y0+ny)."""
    x = np.arange(x0, x0 + nx)[:, None]
    y = np.arange(y0, y0 + ny)[None, :]
    return np.exp(-((x - NX / 3) ** 2 + (y - NY / 2) ** 2) / 50.0)


def exchange_halos(cart: MPI.Cartcomm, u: np.ndarray) -> None:
    """Fill the ghost cells of ``u`` from the neighbours (zero at the domain's edge)."""
    for dim in (0, 1):
        lo, hi = cart.Shift(dim, 1)
        inner = [slice(1, -1), slice(1, -1)]
        for send, recv, src, dst in ((1, -1, hi, lo), (-2, 0, lo, hi)):
            s = list(inner)
            r = list(inner)
            s[dim], r[dim] = send, recv
            buf = np.ascontiguousarray(u[tuple(s)])
            got = np.empty_like(buf)
            cart.Sendrecv(buf, dest=dst, recvbuf=got, source=src)
            if src != MPI.PROC_NULL:
                u[tuple(r)] = got


class ProbeRng(hpckpt.RankState):
    """Each rank's numpy Generator (the RNG recipe: its bit_generator state as JSON)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def serialize(self) -> str:
        return json.dumps(self.rng.bit_generator.state)

    def deserialize(self, s: str | bytes) -> None:
        self.rng.bit_generator.state = json.loads(s)

    def reshard(self, saved: list) -> str:
        # another number of ranks: continue the stream of a saved rank, reseeded per rank
        state = json.loads(saved[MPI.COMM_WORLD.rank % len(saved)])
        rng = np.random.default_rng(MPI.COMM_WORLD.rank)
        rng.bit_generator.state = state
        rng.bit_generator.advance(1000 * MPI.COMM_WORLD.rank)
        return json.dumps(rng.bit_generator.state)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--stop-at", type=int, default=None, help="checkpoint and stop here")
    ap.add_argument("--every", type=int, default=10, help="checkpoint every N steps")
    args = ap.parse_args()

    world = MPI.COMM_WORLD
    dims = MPI.Compute_dims(world.size, 2)
    cart = world.Create_cart(dims, periods=[False, False])
    cx, cy = cart.Get_coords(cart.rank)
    bx, by = remainder_on_last(NX, dims[0]), remainder_on_last(NY, dims[1])
    x0, y0 = bx[cx], by[cy]
    nx, ny = bx[cx + 1] - x0, by[cy + 1] - y0

    # the code's own arrays: two fields with ghost cells
    u = np.zeros((nx + 2, ny + 2))
    unew = np.zeros_like(u)
    u[1:-1, 1:-1] = initial(x0, y0, nx, ny)

    # hpckpt: the code's grid (its Cartcomm), its boundaries, its arrays
    mesh = hpckpt.create_mesh([("x", dims[0]), ("y", dims[1])], comm=cart)
    layout = hpckpt.Layout(["x", "y"], mesh, splits={"x": bx, "y": by})
    field = hpckpt.Variable.from_local(u[1:-1, 1:-1], layout, (NX, NY), copy=False)
    step = hpckpt.Variable(np.int64(0), hpckpt.Layout([], mesh))
    rng = ProbeRng(seed=world.rank)
    ckpt = hpckpt.DTensorCheckpoint(mesh, field=field, step=step, rng=rng)
    manager = hpckpt.CheckpointManager(ckpt, args.dir, max_to_keep=2)

    restored = manager.restore_or_initialize()
    if restored:  # the restore wrote into u's interior: refresh the ghost cells
        exchange_halos(cart, u)
        if world.rank == 0:
            print(f"restored {restored} at step {int(step.local)} on a {dims} grid")

    while int(step.local) < args.steps:
        exchange_halos(cart, u)
        c = u[1:-1, 1:-1]
        unew[1:-1, 1:-1] = c + ALPHA * (
            u[:-2, 1:-1] + u[2:, 1:-1] + u[1:-1, :-2] + u[1:-1, 2:] - 4 * c
        )
        u, unew = unew, u
        field.local = u[1:-1, 1:-1]  # the Variable follows the swap (no copy)
        step.local[...] = int(step.local) + 1
        n = int(step.local)
        i, j = rng.rng.integers(0, max(nx, 1)), rng.rng.integers(0, max(ny, 1))
        if n % args.every == 0 and nx and ny:
            print(f"step {n} rank {world.rank}: u[{x0 + i}, {y0 + j}] = {u[1 + i, 1 + j]:.6f}")
        if n % args.every == 0 or n == args.stop_at:
            manager.save(checkpoint_number=n)
        if n == args.stop_at:
            return

    full = field.numpy()  # gathered (collective)
    if world.rank == 0:
        print(f"FIELD-CRC {zlib.crc32(full.tobytes()):08x} after {int(step.local)} steps")


if __name__ == "__main__":
    main()
