"""Meshes and layouts: coordinates, block distribution, empty shards, replicas.

    mpirun -n 4 python -m mpi4py docs/examples/guide_mesh_layout.py
"""

from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout

comm = MPI.COMM_WORLD


def per_rank(label, value):
    """Gather one value per rank and print them on rank 0 (collective)."""
    values = comm.gather(value)
    if comm.rank == 0:
        print(f"{label:36s}", "  ".join(f"r{r}:{v}" for r, v in enumerate(values)))


mesh = hpckpt.create_mesh([("x", 2), ("y", 2)])  # or hpckpt.Mesh(("x", "y"), (2, 2))
if comm.rank == 0:
    print(mesh, mesh.dim_names, mesh.shape, mesh.size, mesh.dim_size("y"))
per_rank("mesh.rank, mesh.coords", (mesh.rank, mesh.coords))
per_rank("mesh.coord('y')", mesh.coord("y"))

# A (5, 6) tensor: rows split over "x" (blocks 3 and 2), columns over "y" (3 and 3).
layout = Layout(["x", "y"], mesh)
per_rank("Layout(['x','y']).local_shape", layout.local_shape((5, 6)))
per_rank("local_slices", [(s.start, s.stop) for s in layout.local_slices((5, 6))])

# Rows over "x" only: ranks with the same x coordinate hold the same shard (replicas).
rows = Layout(["x", UNSHARDED], mesh)
per_rank("Layout(['x',UNSHARDED]).local_shape", rows.local_shape((5, 6)))
per_rank("replica_position (index, count)", rows.replica_position())

# The helpers.
print_layouts = [Layout.replicated(mesh, rank=2), Layout.batch_sharded(mesh, "y", rank=3)]
if comm.rank == 0:
    for lay in print_layouts:
        print(lay, lay.sharding_specs, lay.rank)

# Uneven and empty shards: a (3,) tensor over a 1-D mesh of 4 ranks.
line = hpckpt.create_mesh()  # 1-D mesh ("x", comm.size)
per_rank("(3,) over 4 ranks: local_shape", Layout(["x"], line).local_shape((3,)))
per_rank("(10,) over 4 ranks: local_shape", Layout(["x"], line).local_shape((10,)))

# Bad specifications raise ValueError naming the offending value.
for make in (
    lambda: hpckpt.create_mesh([("x", 3)]),
    lambda: hpckpt.create_mesh([("x", 2), ("x", 2)]),
    lambda: Layout(["x", "x"], mesh),
    lambda: Layout(["z", UNSHARDED], mesh),
):
    try:
        make()
    except ValueError as e:
        if comm.rank == 0:
            print("ValueError:", e)
