"""hpckpt: TensorFlow-style object-based checkpointing for MPI jobs on parallel HDF5.

Ranks form a Cartesian mesh, every tensor has a layout over it, each rank writes
its slice of every tensor into one shared HDF5 file with collective MPI-IO, and
rank 0 commits the object-graph index and the checkpoint state file.
"""

from . import optimizers
from ._version import __version__
from .checkpoint import Checkpoint, CheckpointLoadStatus, DTensorCheckpoint
from .errors import (
    CheckpointError,
    CheckpointValueError,
    CorruptCheckpointError,
    InvalidStateFileError,
    KeyNotFoundError,
    NotFoundError,
    WriteCallbackError,
)
from .graph import Module, PythonState, Trackable
from .io import latest_checkpoint
from .layout import UNSHARDED, Layout
from .management import (
    CheckpointStateInfo,
    checkpoint_exists,
    checkpoints_iterator,
    get_checkpoint_state,
    remove_checkpoint,
    update_checkpoint_state,
    wait_for_new_checkpoint,
)
from .manager import CheckpointManager, RestoredPath
from .mesh import Mesh, create_mesh
from .options import CheckpointOptions
from .reader import CheckpointReader, list_variables, load_checkpoint, load_variable
from .variable import Variable
from .view import CheckpointView

__all__ = [
    "UNSHARDED",
    "Checkpoint",
    "CheckpointError",
    "CheckpointLoadStatus",
    "CheckpointManager",
    "CheckpointOptions",
    "CheckpointReader",
    "CheckpointStateInfo",
    "CheckpointValueError",
    "CheckpointView",
    "CorruptCheckpointError",
    "DTensorCheckpoint",
    "InvalidStateFileError",
    "KeyNotFoundError",
    "Layout",
    "Mesh",
    "Module",
    "NotFoundError",
    "PythonState",
    "RestoredPath",
    "Trackable",
    "Variable",
    "WriteCallbackError",
    "__version__",
    "checkpoint_exists",
    "checkpoints_iterator",
    "create_mesh",
    "get_checkpoint_state",
    "latest_checkpoint",
    "list_variables",
    "load_checkpoint",
    "load_variable",
    "optimizers",
    "remove_checkpoint",
    "update_checkpoint_state",
    "wait_for_new_checkpoint",
]
