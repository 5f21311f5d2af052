"""Shared pieces of the ``hpckpt`` command line: exit codes, path resolution, formatting.

Nothing here imports h5py: the command line reads checkpoints through
:mod:`hpckpt.reader`, :mod:`hpckpt.io` and :mod:`hpckpt.statefile`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from .. import io
from ..errors import CorruptCheckpointError, NotFoundError
from ..graph import SavedGraph, parse_graph
from ..io.index import CheckpointIndex, TensorEntry, slice_byte_range
from ..io.paths import parse_name, step_of
from ..reader import resolve_checkpoint

__all__ = [
    "EXIT_DAMAGED",
    "EXIT_DIFFERENT",
    "EXIT_IO",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "CliError",
    "Loaded",
    "dump_json",
    "emit",
    "fmt_bytes",
    "fmt_layout",
    "fmt_mesh",
    "fmt_shape",
    "fmt_time",
    "iso_time",
    "json_float",
    "load",
    "printable",
    "resolve",
    "slice_byte_range",
    "step_of",
    "table",
    "tensor_json",
]

EXIT_OK = 0
"""Success (for ``verify``: every tensor is intact)."""
EXIT_DAMAGED = 1
"""A checkpoint (or the state file) is damaged: checksum mismatch, truncated or hostile file."""
EXIT_NOT_FOUND = 2
"""A path does not exist, holds no checkpoint, or the command line is wrong."""
EXIT_DIFFERENT = 3
"""``diff --exit-code`` only: the two checkpoints differ."""
EXIT_IO = 4
"""Any other error: permission denied, disk full when writing, unexpected failure."""


class CliError(Exception):
    """An error the command line reports as one line on stderr.

    Attributes:
        exit_code: The process's exit code.
        kind: A short machine-readable category (``not_found``, ``damaged``, ``usage``, ``io``).
    """

    def __init__(self, message: str, exit_code: int, kind: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.kind = kind


def resolve(path: str) -> str:
    """The checkpoint prefix for a command-line PATH.

    PATH may be a checkpoint prefix (``runs/ckpt-3``), its index
    (``runs/ckpt-3.index.json``), its data file (``runs/ckpt-3.data-<token>.h5``) or a
    directory (its latest checkpoint, from the state file).

    Raises:
        NotFoundError: Nothing to load there.
        CorruptCheckpointError: The directory's state file is damaged.
        ValueError: PATH is empty or contains NUL.
    """
    if not path:
        raise ValueError("the checkpoint path is empty")
    if os.path.isdir(path):
        try:
            return resolve_checkpoint(path)
        except NotFoundError:
            committed = sorted(
                info.checkpoint
                for info in map(parse_name, _listdir(path))
                if info.kind == "index" and info.checkpoint
            )
            if committed:
                shown = ", ".join(committed[:3]) + (", ..." if len(committed) > 3 else "")
                raise NotFoundError(
                    f"no state file naming a checkpoint in directory {path!r}; it holds "
                    f"{len(committed)} committed checkpoint(s) ({shown}): pass one as "
                    f"{os.path.join(path, committed[-1])!r}"
                ) from None
            raise
    info = parse_name(os.path.basename(path))
    if info.kind == "data" and info.checkpoint and not io.checkpoint_exists(path):
        return os.path.join(os.path.dirname(path), info.checkpoint)
    return io.normalize_prefix(path)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


@dataclass
class Loaded:
    """A checkpoint opened for the command line.

    Attributes:
        prefix: The checkpoint path.
        index: The validated index (the data file's structure is validated too).
        graph: The validated object graph, or ``None`` if the index has none.
        opened: That version of the checkpoint, its data file open (reads of it are
            not disturbed if ``write(P)`` replaces the checkpoint meanwhile).
    """

    prefix: str
    index: CheckpointIndex
    graph: SavedGraph | None
    opened: io.OpenCheckpoint

    @property
    def data_path(self) -> str:
        """The path of the data file."""
        return io.data_file_path(self.prefix, self.index.data_file)

    def read(
        self,
        entry: TensorEntry,
        *,
        verify: bool = True,
        on_bytes: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """One whole tensor of the version opened (checksums verified), in its stored
        dtype; ``on_bytes(n)`` is told of each chunk read (a progress bar)."""
        return self.opened.read(entry, verify=verify, on_bytes=on_bytes)


def load(path: str, *, graph: bool = True) -> Loaded:
    """Resolve PATH, then read and validate its index, data file structure and graph.

    Raises:
        NotFoundError: No checkpoint there.
        CorruptCheckpointError: The checkpoint is damaged or hostile (a committed
            index whose data file is missing counts as damaged).
    """
    prefix = resolve(path)
    try:
        opened = io.open_checkpoint(prefix)
    except NotFoundError as e:
        if io.checkpoint_exists(prefix):  # committed, but its data file is gone
            raise CorruptCheckpointError(str(e)) from None
        raise
    index = opened.index
    g = None
    if graph and index.graph is not None:
        try:
            g = parse_graph(index.graph, set(index.tensors))
        except CorruptCheckpointError as e:
            raise CorruptCheckpointError(f"{io.index_path(prefix)}: {e}") from None
    return Loaded(prefix, index, g, opened)


def json_float(x: float) -> float | str:
    """``x`` as a JSON number, or ``"nan"``/``"inf"``/``"-inf"`` (JSON has no NaN or Inf)."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def dump_json(doc: Any, stream: TextIO | None = None) -> None:
    """Write one JSON document (strict: no NaN) and a newline to ``stream`` (stdout)."""
    out = stream or sys.stdout
    out.write(json.dumps(doc, indent=2, allow_nan=False))
    out.write("\n")


def fmt_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    if n < 1024:
        return f"{n} B"
    x = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        x /= 1024.0
        if x < 1024.0 or unit == "PiB":
            break
    return f"{x:.1f} {unit}"


def fmt_time(t: float | None) -> str:
    """Seconds since the epoch as local ``YYYY-MM-DD HH:MM:SS`` (``-`` if unknown)."""
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def iso_time(t: float | None) -> str | None:
    """Seconds since the epoch as an ISO 8601 UTC string."""
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def fmt_shape(shape: tuple[int, ...] | list[int]) -> str:
    """``(3, 4)`` -> ``"[3, 4]"``; a scalar is ``"[]"``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def fmt_mesh(names: tuple[str, ...] | list[str], shape: tuple[int, ...] | list[int]) -> str:
    """``("x", "y"), (2, 2)`` -> ``"x=2,y=2"``."""
    return ",".join(f"{n}={s}" for n, s in zip(names, shape, strict=True))


def fmt_layout(specs: tuple[str, ...] | list[str]) -> str:
    """``("x", "unsharded")`` -> ``"[x, unsharded]"``."""
    return "[" + ", ".join(specs) + "]"


def tensor_json(e: TensorEntry) -> dict[str, Any]:
    """The JSON description of one tensor: shape, dtype, layout and mesh at save, bytes."""
    return {
        "key": e.key,
        "dataset": e.dataset,
        "dtype": e.logical_dtype or np.dtype(e.dtype).name,
        "dtype_str": e.dtype.str,
        "stored_dtype": np.dtype(e.dtype).name,
        "shape": list(e.shape),
        "sharding_specs": list(e.sharding_specs),
        "mesh": {"dim_names": list(e.mesh_dim_names), "shape": list(e.mesh_shape)},
        "per_rank_boxes": e.layout is None,
        "nbytes": e.nbytes,
        "offset": e.offset,
        "slices": len(e.slices),
        "compression": e.filters.spec if e.filters is not None else None,
        "chunks": list(e.chunks) if e.chunks is not None else None,
    }


def table(headers: list[str], rows: list[list[str]], right: set[int] | None = None) -> list[str]:
    """Format rows as aligned text columns (columns in ``right`` are right-aligned)."""
    right = right or set()
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r, strict=True)]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(headers)] + [line(r) for r in rows]


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b`` ...): names read from a
    checkpoint cannot move the cursor or recolour the terminal."""
    return text.translate(_CONTROL)


def emit(lines: list[str]) -> None:
    """Print the lines of a human-readable report, control characters escaped."""
    sys.stdout.write("".join(printable(line) + "\n" for line in lines))
