"""Names of the competitors and what they measure (no heavy imports: used by ``--help``)."""

from __future__ import annotations

__all__ = ["DESCRIPTIONS", "RAW"]

RAW = ("mpiio", "posix")
"""The raw limits that the bandwidth suite's ratios are taken against."""

DESCRIPTIONS = {
    "hpckpt": "Checkpoint.write / Checkpoint.read (default options)",
    "hpckpt-nocrc": "restore only: Checkpoint.read with verify_checksums=False",
    "hpckpt-indep": "hpckpt with collective=False (independent MPI-IO at the same offsets)",
    "hpckpt-mpiio": "hpckpt with io='mpiio' (every piece through two-phase collective MPI-IO)",
    "hpckpt-posix": "hpckpt with io='posix' (per-rank pwrite/preadv; = collective=False)",
    "hpckpt-hdf5": "hpckpt with io='hdf5' (parallel HDF5: collective H5Dwrite/H5Dread)",
    "hpckpt-hdf5-2phase": "io='hdf5', direct_io_threshold=None (two-phase MPI-IO under HDF5)",
    "hpckpt-hdf5-nocrc": "io='hdf5', verify_checksums=False (restores unverified, like IOR)",
    "hpckpt-gzip": "hpckpt with compression='gzip:1' (parallel HDF5 filtered IO)",
    "hpckpt-shuffle-gzip": "hpckpt with compression='shuffle+gzip:1'",
    "hpckpt-shuffle-gzip4": "hpckpt with compression='shuffle+gzip:4'",
    "mpiio": "raw collective MPI.File.Write_at_all / Read_at_all, one shared file",
    "posix": "raw per-rank os.pwrite + fsync / os.preadv, one shared file",
    "h5py": "plain h5py driver='mpio', collective dataset IO",
    "npy": "np.save / np.load, one file per rank and tensor",
    "npz": "np.savez / np.load, one file per rank",
    "torch-dcp": "torch.distributed.checkpoint save/load of DTensors (gloo; only if torch imports)",
}


def describe() -> str:
    """One line per competitor, for ``--help``."""
    return "\n".join(f"  {k:13s} {v}" for k, v in DESCRIPTIONS.items())
