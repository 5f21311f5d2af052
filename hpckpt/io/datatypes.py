"""MPI datatypes that send parts of arrays where they lie (no packing, no pickling).

A *part* is a box (global coordinates) of an array whose first element sits at a
global ``origin``; :func:`message_spec` describes several parts, possibly of
several arrays, as one MPI message (a struct of subarrays at absolute addresses),
so that one send or receive moves them straight between the arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from .slicing import Box

__all__ = ["byte_ranges_spec", "message_spec", "part_datatype"]


def part_datatype(
    array: np.ndarray, origin: Sequence[int], part: Box, cache: list
) -> tuple[int, MPI.Datatype]:
    """``(address, datatype)`` of ``part`` (global coordinates) of ``array`` (whose first
    element is at global ``origin``); datatypes to free are appended to ``cache``."""
    isz = array.dtype.itemsize
    if not array.ndim:
        return MPI.Get_address(array), MPI.BYTE.Create_contiguous(isz)
    elem = MPI.BYTE.Create_contiguous(isz)
    cache.append(elem)
    rel = [a - o for a, o in zip(part[0], origin, strict=True)]
    sub = elem.Create_subarray(list(array.shape), list(part[1]), rel)
    return MPI.Get_address(array), sub


def message_spec(parts: list[tuple[np.ndarray, Sequence[int], Box]], cache: list) -> list:
    """One MPI buffer spec (struct of subarrays at absolute addresses) for several parts.

    Every datatype made is appended to ``cache``: free them after the transfer.
    """
    addrs, types = [], []
    for array, origin, part in parts:
        a, t = part_datatype(array, origin, part, cache)
        cache.append(t)
        addrs.append(a)
        types.append(t)
    msg = MPI.Datatype.Create_struct([1] * len(types), addrs, types).Commit()
    cache.append(msg)
    return [MPI.BOTTOM, 1, msg]


def byte_ranges_spec(ranges: list[tuple[np.ndarray, int, int]], cache: list) -> list:
    """One MPI buffer spec for byte ranges ``[lo, hi)`` of C-contiguous arrays.

    Every datatype made is appended to ``cache``: free them after the transfer.
    """
    addrs = [MPI.Get_address(a) + lo for a, lo, _ in ranges]
    lengths = [hi - lo for _, lo, hi in ranges]
    msg = MPI.BYTE.Create_hindexed(lengths, addrs).Commit()
    cache.append(msg)
    return [MPI.BOTTOM, 1, msg]
