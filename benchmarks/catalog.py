"""Names of the competitors and what they measure (no heavy imports: used by ``--help``)."""

from __future__ import annotations

__all__ = ["DESCRIPTIONS", "RAW"]

RAW = ("mpiio", "posix")
"""The raw limits that the bandwidth suite's ratios are taken against."""

DESCRIPTIONS = {
    "hpckpt": "Checkpoint.write / Checkpoint.read (default options)",
    "hpckpt-nocrc": "restore only: Checkpoint.read with verify_checksums=False",
    "hpckpt-indep": "hpckpt with collective=False (independent MPI-IO at the same offsets)",
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
