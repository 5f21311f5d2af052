"""IO modes and compression: every mode writes the same format and reads every checkpoint;
compressed checkpoints restore on any layout and are plain HDF5 for other tools.

    mpirun -n 4 python -m mpi4py docs/examples/guide_io_modes.py
"""

import json
import os

import h5py
import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout

comm = MPI.COMM_WORLD
mesh = hpckpt.create_mesh()  # 1-D mesh "x" over all ranks
x = np.linspace(0.0, 1.0, 512)
field = np.exp(-((x[:, None] - 0.3) ** 2 + (x[None, :] - 0.6) ** 2) / 0.02)  # smooth, 2 MiB
noise = np.random.default_rng(0).random((512, 512))  # random floats, 2 MiB
u = hpckpt.Variable(field, Layout(["x", UNSHARDED], mesh))
r = hpckpt.Variable(noise, Layout(["x", UNSHARDED], mesh))
ckpt = hpckpt.Checkpoint(u=u, r=r)

# 1. Every io mode writes the same format; any mode reads any checkpoint.
for io in ("auto", "mpiio", "posix", "hdf5"):
    path = ckpt.write(f"./io/{io}", options=hpckpt.CheckpointOptions(io=io))
    back = hpckpt.Variable(np.zeros_like(field), Layout([UNSHARDED, "x"], mesh))  # other layout
    hdf5 = hpckpt.CheckpointOptions(io="hdf5")
    hpckpt.Checkpoint(u=back).read(path, options=hdf5).expect_partial()
    same = np.array_equal(back.numpy(), field)
    if comm.rank == 0:
        print(f"io={io:6s} written; read back with io='hdf5' on another layout: {same}")

# 2. Compression: chunked datasets with HDF5's shuffle and deflate filters.
opts = hpckpt.CheckpointOptions(compression="shuffle+gzip:4")
path = ckpt.write("./io/compressed", options=opts)
if comm.rank == 0:
    with open(path + ".index.json") as f:
        doc = json.load(f)
    data = os.path.join(os.path.dirname(path), doc["data_file"]["name"])
    with h5py.File(data, "r") as f:  # plain h5py: no hpckpt needed to read it
        for key, t in doc["tensors"].items():
            if "filters" not in t:
                continue
            ds = f[t["dataset"]]
            ratio = ds.id.get_storage_size() / t["nbytes"]
            name = key.split("/")[0]
            print(
                f"{name}: chunks {ds.chunks}, {ds.compression} + shuffle={ds.shuffle}, "
                f"stored {ratio:.0%} of {t['nbytes'] >> 10} KiB"
            )
# restore on another layout, with any io mode: checksums cover the uncompressed values
back = hpckpt.Variable(np.zeros_like(field), Layout.replicated(mesh, 2))
hpckpt.Checkpoint(u=back).read(path, options=hpckpt.CheckpointOptions(io="posix")).expect_partial()
ok = comm.allreduce(bool(np.array_equal(back.local, field)), op=MPI.LAND)
if comm.rank == 0:
    print("compressed checkpoint restored bit-identically on every rank:", ok)
