"""Reading a checkpoint without the model and without an MPI launcher.

The counterparts of ``tf.train.load_checkpoint``, ``tf.train.list_variables`` and
``tf.train.load_variable``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import KeyNotFoundError, NotFoundError
from .io import (
    CheckpointIndex,
    TensorEntry,
    as_logical,
    latest_checkpoint,
    normalize_prefix,
    open_checkpoint,
)

__all__ = [
    "CheckpointReader",
    "TensorInfo",
    "list_variables",
    "load_checkpoint",
    "load_variable",
    "resolve_checkpoint",
]


def resolve_checkpoint(dir_or_path: str | os.PathLike) -> str:
    """A checkpoint prefix from a directory (its latest) or a checkpoint path.

    Raises:
        NotFoundError: Nothing to load there.
    """
    p = os.fspath(dir_or_path)
    if os.path.isdir(p):
        latest = latest_checkpoint(p)
        if latest is None:
            raise NotFoundError(f"no checkpoint in directory {p!r}")
        return latest
    return normalize_prefix(p)


@dataclass(frozen=True)
class TensorInfo:
    """What the index says of one tensor."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype
    sharding_specs: tuple[str, ...]
    mesh_dim_names: tuple[str, ...]
    mesh_shape: tuple[int, ...]
    nbytes: int
    dataset: str


class CheckpointReader:
    """Reads tensors of one checkpoint on a single process.

    The reader holds one committed version: its index, and its data file open. If
    ``write(prefix)`` replaces the checkpoint later, this reader keeps reading the
    version it opened.

    Args:
        prefix: The checkpoint path.

    Raises:
        NotFoundError: No checkpoint there.
        CorruptCheckpointError: The checkpoint is damaged or hostile.
        CheckpointChangedError: The checkpoint was replaced again and again while it
            was being opened.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._open = open_checkpoint(prefix)
        self._index: CheckpointIndex = self._open.index

    @property
    def prefix(self) -> str:
        """The checkpoint path."""
        return self._prefix

    @property
    def index(self) -> CheckpointIndex:
        """The validated index."""
        return self._index

    def _entry(self, key: str) -> TensorEntry:
        try:
            return self._index.tensors[key]
        except KeyError:
            raise KeyNotFoundError(
                f"tensor {key!r} is not in checkpoint {self._prefix!r}"
            ) from None

    def get_variable_to_shape_map(self) -> dict[str, list[int]]:
        """``{key: global shape}`` of every tensor."""
        return {k: list(t.shape) for k, t in self._index.tensors.items()}

    def get_variable_to_dtype_map(self) -> dict[str, np.dtype]:
        """``{key: numpy dtype}`` of every tensor (``ml_dtypes`` floats by their own dtype)."""
        return {k: _dtype_of(t) for k, t in self._index.tensors.items()}

    def has_tensor(self, key: str) -> bool:
        """Whether the checkpoint holds ``key``."""
        return key in self._index.tensors

    def get_tensor(self, key: str) -> np.ndarray:
        """The global array of ``key`` (checksums verified), of its saved dtype
        (``bfloat16`` and float8 tensors as ``ml_dtypes`` arrays).

        Raises:
            KeyNotFoundError: No such tensor (a ``NotFoundError`` and a ``KeyError``).
            CorruptCheckpointError: Its bytes fail their checksums.
        """
        e = self._entry(key)
        return as_logical(e, self._open.read(e, verify=True))

    def tensor_info(self, key: str) -> TensorInfo:
        """Shape, dtype, layout and mesh at save of ``key``."""
        e = self._entry(key)
        return TensorInfo(
            e.key,
            e.shape,
            _dtype_of(e),
            e.sharding_specs,
            e.mesh_dim_names,
            e.mesh_shape,
            e.nbytes,
            e.dataset,
        )

    def close(self) -> None:
        """Close the data file (it also closes when the reader is garbage-collected)."""
        self._open.close()

    def get_layout_map(self) -> dict[str, dict | None]:
        """``{key: {"sharding_specs": [...], "mesh": {...}}}``: each tensor's layout at save."""
        return {k: t.layout_dict() for k, t in self._index.tensors.items()}


def _dtype_of(e: TensorEntry) -> np.dtype:
    return as_logical(e, np.empty(0, dtype=e.dtype)).dtype


def load_checkpoint(dir_or_path: str | os.PathLike) -> CheckpointReader:
    """A :class:`CheckpointReader` for a checkpoint path or a directory's latest checkpoint."""
    return CheckpointReader(resolve_checkpoint(dir_or_path))


def list_variables(dir_or_path: str | os.PathLike) -> list[tuple[str, list[int]]]:
    """``[(key, shape), ...]`` of every tensor in a checkpoint, sorted by key."""
    reader = load_checkpoint(dir_or_path)
    return sorted(reader.get_variable_to_shape_map().items())


def load_variable(dir_or_path: str | os.PathLike, name: str) -> np.ndarray:
    """The global array of tensor ``name`` in a checkpoint (or a directory's latest one).

    ``name`` is a key such as ``net/l1/kernel/.ATTRIBUTES/VARIABLE_VALUE``; a trailing
    ``:0`` (TensorFlow's tensor names) is ignored. Checksums are verified.

    Raises:
        NotFoundError: No checkpoint there; ``KeyNotFoundError`` (also a ``KeyError``)
            when it has no tensor ``name``.
        CorruptCheckpointError: The checkpoint is damaged.
    """
    if name.endswith(":0"):
        name = name[:-2]
    return load_checkpoint(dir_or_path).get_tensor(name)
