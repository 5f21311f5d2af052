"""The io layer: the only code that imports h5py.

It creates and validates the HDF5 data files, moves slices with collective
MPI-IO and implements the commit protocol.
"""

from ._mpiio import Piece, collective_io, open_file
from .protocol import (
    ReadRequest,
    SaveTensor,
    checkpoint_exists,
    data_file_path,
    index_path,
    load_index,
    load_index_bytes,
    normalize_prefix,
    own_data_files,
    read_index,
    read_tensor_serial,
    read_tensors,
    verify_tensor,
    write_checkpoint,
)

__all__ = [
    "Piece",
    "ReadRequest",
    "SaveTensor",
    "checkpoint_exists",
    "collective_io",
    "data_file_path",
    "index_path",
    "load_index",
    "load_index_bytes",
    "normalize_prefix",
    "open_file",
    "own_data_files",
    "read_index",
    "read_tensor_serial",
    "verify_tensor",
    "read_tensors",
    "write_checkpoint",
]
