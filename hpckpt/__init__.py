"""hpckpt: TensorFlow-style object-based checkpointing for MPI jobs on parallel HDF5.

Ranks form a Cartesian mesh, every tensor has a layout over it, each rank writes
its slice of every tensor into one shared HDF5 file with collective MPI-IO, and
rank 0 commits the object-graph index and the checkpoint state file.
"""

from . import optimizers
from ._version import __version__
from .checkpoint import Checkpoint, CheckpointLoadStatus, DTensorCheckpoint
from .errors import CheckpointError, CorruptCheckpointError, NotFoundError
from .graph import Module, PythonState, Trackable
from .io import latest_checkpoint
from .layout import UNSHARDED, Layout
from .manager import CheckpointManager
from .mesh import Mesh, create_mesh
from .options import CheckpointOptions
from .reader import CheckpointReader, list_variables, load_checkpoint
from .variable import Variable

__all__ = [
    "UNSHARDED",
    "Checkpoint",
    "CheckpointError",
    "CheckpointLoadStatus",
    "CheckpointManager",
    "CheckpointOptions",
    "CheckpointReader",
    "CorruptCheckpointError",
    "DTensorCheckpoint",
    "Layout",
    "Mesh",
    "Module",
    "NotFoundError",
    "PythonState",
    "Trackable",
    "Variable",
    "__version__",
    "create_mesh",
    "latest_checkpoint",
    "list_variables",
    "load_checkpoint",
    "optimizers",
]
