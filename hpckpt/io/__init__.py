"""The storage layer: the only code that knows file names, formats and h5py.

Modules:

* :mod:`.paths` — file names and the rules built on them (leftovers, relative paths);
* :mod:`.index`, :mod:`.statefile` — the index and the state file: (de)serialization
  and validation (pure);
* :mod:`.checksum` — slice checksums;
* :mod:`.fsutil` — bounded reads, atomic replace, fsync, background removal;
* :mod:`.hdf5` — creating and validating the HDF5 data file;
* :mod:`.mpiio`, :mod:`.transfer` — moving pieces with MPI-IO or ``pwrite``/``preadv``;
* :mod:`.phdf5` — parallel HDF5: the data file created, written and read collectively
  (``io="hdf5"``, compression), with :mod:`.h5capi` (HDF5 calls h5py does not wrap),
  :mod:`.h5select` (strided arrays as HDF5 memory selections), :mod:`.space` (disk
  space reserved for a collectively written file),
  :mod:`.filters` (compression pipelines, chunk shapes) and :mod:`.striping` (the file
  system's stripe or block size, striping hints);
* :mod:`.verify` — checksum verification of what a read covers;
* :mod:`.write`, :mod:`.read` — the collective write (commit protocol) and read paths;
  :mod:`.save_tensor` (what a save writes per tensor) and :mod:`.records` (checksum
  records and index entries);
* :mod:`.load` — single-process loading (reader, command line);
* :mod:`.snapshot` — one committed version of a checkpoint while ``write(P)`` may
  replace it (retries, a data file held open);
* :mod:`.cleanup`, :mod:`.lock` — removing old files, the directory's writer lease;
* the local tier of multi-level checkpointing: :mod:`.local_index` (its index),
  :mod:`.local_tier` (writing, partner copies, retention), :mod:`.local_scan`
  (finding complete local checkpoints), :mod:`.local_read` (restoring, with
  fallback to partner copies).

The storage interface the layers above use is :class:`Storage` (one shared HDF5
file per checkpoint: :data:`SHARED_FILE`). Call order, for every implementation:

* collective (every rank of the communicator, in the same order):
  :meth:`Storage.write`, :meth:`Storage.read_index`, :meth:`Storage.read`;
* one process (no MPI; rank 0 inside a job): :func:`open_checkpoint`, :func:`load_index`,
  :func:`read_tensor_serial`, the state file (:func:`read_state`,
  :func:`write_state`, :func:`state_from_paths`), :func:`delete_checkpoint_files`,
  :func:`remove_checkpoint_files`, :func:`remove_orphans`,
  :class:`DirectoryLease`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from mpi4py import MPI

from .._dist import Deadline
from .cleanup import delete_checkpoint_files, remove_checkpoint_files, remove_orphans
from .filters import Compression, parse_compression
from .fsutil import wait_removals
from .index import CheckpointIndex, SliceEntry, TensorEntry
from .load import (
    as_logical,
    check_data_file,
    load_index,
    read_index_file,
    read_tensor_serial,
    verify_tensor,
)
from .local_index import REDUNDANCIES, LocalIndex, parse_local_index
from .local_read import LocalTierStorage, open_local
from .local_scan import LocalCandidate, scan_local
from .local_tier import LocalSave, mapped_copies, remove_local, write_local
from .lock import DirectoryLease
from .options import IO_MODES, IOOptions
from .paths import (
    NODE_FIELD,
    checkpoint_exists,
    data_file_path,
    index_path,
    local_directory,
    local_prefix,
    normalize_prefix,
    relative_to,
)
from .read import ReadRequest, read_index, read_tensors
from .snapshot import RETRIES as READ_RETRIES
from .snapshot import OpenCheckpoint, index_identity, open_checkpoint, retry_if_changed
from .statefile import (
    CheckpointState,
    latest_checkpoint,
    read_state,
    resolve_latest,
    state_from_paths,
    write_state,
)
from .write import SaveTensor, derived_slicing, tiling_problem, use_rows, write_checkpoint

__all__ = [
    "IO_MODES",
    "NODE_FIELD",
    "REDUNDANCIES",
    "SHARED_FILE",
    "CheckpointIndex",
    "CheckpointState",
    "Compression",
    "DirectoryLease",
    "IOOptions",
    "LocalCandidate",
    "LocalIndex",
    "LocalSave",
    "LocalTierStorage",
    "OpenCheckpoint",
    "READ_RETRIES",
    "ReadRequest",
    "SaveTensor",
    "SharedFileStorage",
    "as_logical",
    "SliceEntry",
    "Storage",
    "TensorEntry",
    "check_data_file",
    "checkpoint_exists",
    "data_file_path",
    "derived_slicing",
    "use_rows",
    "delete_checkpoint_files",
    "index_identity",
    "index_path",
    "latest_checkpoint",
    "load_index",
    "local_directory",
    "local_prefix",
    "mapped_copies",
    "normalize_prefix",
    "parse_compression",
    "open_checkpoint",
    "open_local",
    "parse_local_index",
    "read_index_file",
    "read_state",
    "read_tensor_serial",
    "relative_to",
    "remove_checkpoint_files",
    "remove_local",
    "remove_orphans",
    "resolve_latest",
    "retry_if_changed",
    "scan_local",
    "state_from_paths",
    "tiling_problem",
    "verify_tensor",
    "wait_removals",
    "write_local",
    "write_state",
]


class Storage(Protocol):
    """How checkpoints are written to and read from storage.

    Every method is collective over ``comm``: all ranks call it, in the same order,
    and it returns on every rank or raises the same error on every rank.
    """

    def write(
        self,
        comm: MPI.Comm,
        prefix: str,
        tensors: Sequence[SaveTensor],
        *,
        graph: dict[str, Any] | None,
        options: IOOptions,
        deadline: Deadline,
    ) -> int:
        """Write and commit checkpoint ``prefix``; returns the bytes written.

        Collective: call on all ranks.
        """
        ...

    def read_index(
        self, comm: MPI.Comm, prefix: str, deadline: Deadline, *, through_hdf5: bool = False
    ) -> CheckpointIndex:
        """Read and validate the index of ``prefix`` on every rank (``through_hdf5``: the
        restore will read datasets through HDF5, whose structure is then checked in full).

        Collective: call on all ranks.
        """
        ...

    def read(
        self,
        comm: MPI.Comm,
        prefix: str,
        index: CheckpointIndex,
        requests: Sequence[ReadRequest],
        *,
        options: IOOptions,
        deadline: Deadline,
    ) -> list[np.ndarray]:
        """Read each rank's requests (each rank its own), verify them, agree.

        Collective: call on all ranks.
        """
        ...


class SharedFileStorage:
    """One shared HDF5 file per checkpoint plus its JSON index (the standard format)."""

    def write(
        self,
        comm: MPI.Comm,
        prefix: str,
        tensors: Sequence[SaveTensor],
        *,
        graph: dict[str, Any] | None,
        options: IOOptions,
        deadline: Deadline,
    ) -> int:
        """See :meth:`Storage.write`.

        Collective: call on all ranks.
        """
        return write_checkpoint(
            comm, prefix, tensors, graph=graph, options=options, deadline=deadline
        )

    def read_index(
        self, comm: MPI.Comm, prefix: str, deadline: Deadline, *, through_hdf5: bool = False
    ) -> CheckpointIndex:
        """See :meth:`Storage.read_index`.

        Collective: call on all ranks.
        """
        return read_index(comm, prefix, deadline, through_hdf5=through_hdf5)

    def read(
        self,
        comm: MPI.Comm,
        prefix: str,
        index: CheckpointIndex,
        requests: Sequence[ReadRequest],
        *,
        options: IOOptions,
        deadline: Deadline,
    ) -> list[np.ndarray]:
        """See :meth:`Storage.read`.

        Collective: call on all ranks.
        """
        return read_tensors(comm, prefix, index, requests, options=options, deadline=deadline)


SHARED_FILE: Storage = SharedFileStorage()
