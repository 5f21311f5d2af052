"""What the command line shows of values: scalars, Python-state text, per-rank states.

Every byte shown was read and checksum-verified. Texts are truncated; the
human-readable output escapes control characters (``common.emit``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import io
from ..graph import PYSTATE_SUFFIX, RANKSTATE_SUFFIX
from ..io.index import TensorEntry
from .common import Loaded, json_float

__all__ = [
    "MAX_STATE_BYTES",
    "PREVIEW_CHARS",
    "StateValue",
    "dtype_name",
    "kind_of",
    "preview",
    "read_state",
    "read_scalar",
]

PREVIEW_CHARS = 120
"""Characters of a Python state's text shown (the rest is cut, its size said)."""
MAX_STATE_BYTES = 16 << 20
"""Python states larger than this are not read for display."""


def dtype_name(e: TensorEntry) -> str:
    """The dtype a user sees: the logical one (``bfloat16``) or the numpy name."""
    return e.logical_dtype or np.dtype(e.dtype).name


def kind_of(loaded: Loaded, key: str) -> tuple[str, bool]:
    """``(kind, binary)`` of a tensor: ``variable``, ``python_state`` or ``rank_state``."""
    g = loaded.graph
    if g is not None:
        for n in g.nodes:
            if n.key == key:
                return n.kind, n.binary
    if key.endswith(PYSTATE_SUFFIX):
        return "python_state", False
    if key.endswith(RANKSTATE_SUFFIX):
        return "rank_state", False
    return "variable", False


def preview(raw: bytes, binary: bool, limit: int = PREVIEW_CHARS) -> str:
    """A Python state's value as text: decoded (or ``b'...'`` for bytes), truncated."""
    text = repr(raw[:limit]) if binary else raw.decode("utf-8", errors="backslashreplace")
    if binary and len(raw) > limit:
        return f"{text}... ({len(raw)} bytes)"
    if not binary and len(text) > limit:
        return f"{text[:limit]}... ({len(raw)} bytes)"
    return text


def read_scalar(loaded: Loaded, e: TensorEntry) -> Any:
    """The value of a scalar tensor as JSON (numbers, bools; NaN/Inf as strings)."""
    a = io.as_logical(e, loaded.read(e))
    if e.logical_dtype is not None:
        return json_float(float(a.astype(np.float64)))
    x = a.item()
    if isinstance(x, complex):
        return str(x)
    if isinstance(x, float):
        return json_float(x)
    return x


@dataclass
class StateValue:
    """A Python state's (or per-rank state's) saved bytes."""

    raw: bytes | None  # None: too large to show
    ranks: list[bytes] | None = None  # a per-rank state: each saved rank's bytes

    def texts(self, binary: bool, limit: int = PREVIEW_CHARS) -> list[str] | str | None:
        if self.raw is None:
            return None
        if self.ranks is not None:
            return [preview(r, binary, limit) for r in self.ranks]
        return preview(self.raw, binary, limit)


def read_state(loaded: Loaded, e: TensorEntry, kind: str) -> StateValue:
    """The saved bytes of a Python state or per-rank state (``raw`` None if too large)."""
    if e.nbytes > MAX_STATE_BYTES or e.dtype != np.uint8 or len(e.shape) != 1:
        return StateValue(None)
    raw = loaded.read(e).tobytes()
    if kind != "rank_state":
        return StateValue(raw)
    head = 8 * (loaded.index.nprocs + 1)
    offsets = np.frombuffer(raw[:head], dtype="<i8").astype(np.int64)
    if len(offsets) < 2 or offsets[0] != head or offsets[-1] != len(raw):
        return StateValue(raw, [])
    bounds = offsets.tolist()
    return StateValue(raw, [raw[a:b] for a, b in itertools.pairwise(bounds)])


def is_scalar(e: TensorEntry) -> bool:
    """Whether a tensor is a scalar (shape ``[]``)."""
    return not e.shape and math.prod(e.shape) == 1
