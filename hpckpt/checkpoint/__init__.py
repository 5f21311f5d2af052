"""Checkpoint, DTensorCheckpoint and the load status of a restore.

* :mod:`.api` — the public classes;
* :mod:`.core` — the write path and :class:`CheckpointCore`, the internal
  interface the manager uses (:func:`core_of`);
* :mod:`.save_plan` — from the live graph to each rank's pieces;
* :mod:`.restore`, :mod:`.status` — the restore matcher and the load statuses;
* :mod:`.state` — state-file updates after a commit;
* :mod:`.async_writer` — background saves.
"""

from .api import Checkpoint, DTensorCheckpoint, restore_from
from .core import CheckpointCore, core_of
from .state import update_state_file
from .status import CheckpointLoadStatus, InitializationOnlyStatus

__all__ = [
    "Checkpoint",
    "CheckpointCore",
    "CheckpointLoadStatus",
    "DTensorCheckpoint",
    "InitializationOnlyStatus",
    "core_of",
    "restore_from",
    "update_state_file",
]
