"""Scratch memory of one restore, reused from round to round.

A restore reads every saved slice that its reader does not hold whole (a band of a
2-D mesh, a slice shared with other ranks) into scratch, checks it, keeps its part and
sends the others'. Rounds of tensors (``read.ROUND_BYTES`` of tensors that may need
scratch; those restored on their saved layout need none) run one after the other,
so the scratch of a round is free once the round's exchange is complete. A
:class:`ScratchPool` hands the next round the same memory instead of new arrays:
fresh memory is not free (the kernel zeroes every new page on its first touch, and on
a virtual machine whose freed pages go back to the host, each new page costs a host
fault too: here zeroing took ~40% of a 2-D restore right after a save).

Pure logic: numpy only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..variable import ALIGN_MIN_BYTES, PAGE_BYTES, aligned_empty

__all__ = ["ScratchPool"]


class ScratchPool:
    """Page-aligned scratch arrays carved from a few blocks, reused after :meth:`reset`.

    :meth:`take` hands out views of the pool's blocks (first fit, page-aligned); a
    view stays valid until the next :meth:`reset`, after which its memory is handed out
    again. Small arrays (below ``ALIGN_MIN_BYTES``) are plain new arrays. The blocks are
    freed with the pool.
    """

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self._used: list[int] = []

    @property
    def nbytes(self) -> int:
        """Bytes the pool's blocks hold."""
        return sum(b.nbytes for b in self._blocks)

    def take(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialized C-ordered array of ``shape`` and ``dtype``, valid until the
        next :meth:`reset`."""
        dt = np.dtype(dtype)
        nbytes = math.prod(shape) * dt.itemsize
        if nbytes < ALIGN_MIN_BYTES:
            return np.empty(shape, dtype=dt)
        need = -(-nbytes // PAGE_BYTES) * PAGE_BYTES
        for k, block in enumerate(self._blocks):
            if block.nbytes - self._used[k] >= need:
                start = self._used[k]
                self._used[k] += need
                return block[start : start + nbytes].view(dt).reshape(shape)
        block = aligned_empty((need,), np.uint8)
        self._blocks.append(block)
        self._used.append(need)
        return block[:nbytes].view(dt).reshape(shape)

    def reset(self) -> None:
        """Every array handed out so far is no longer used: its memory is free again."""
        self._used = [0] * len(self._blocks)
