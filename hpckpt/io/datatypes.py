"""MPI datatypes that send parts of arrays where they lie (no packing, no pickling).

A *part* is a box (global coordinates) of an array whose first element sits at a
global ``origin``; :func:`message_spec` describes several parts, possibly of
several arrays, as one MPI message (a struct of subarrays at absolute addresses),
so that one send or receive moves them straight between the arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from mpi4py import MPI

from .slicing import Box
from .strided import strided_type

__all__ = [
    "ALONE_BYTES",
    "byte_ranges_spec",
    "contiguous_part",
    "message_spec",
    "message_specs",
    "part_datatype",
]


def part_datatype(
    array: np.ndarray, origin: Sequence[int], part: Box, cache: list
) -> tuple[int, MPI.Datatype]:
    """``(address, datatype)`` of ``part`` (global coordinates) of ``array`` (whose first
    element is at global ``origin``); datatypes to free are appended to ``cache``."""
    isz = array.dtype.itemsize
    if not array.ndim:
        return MPI.Get_address(array), MPI.BYTE.Create_contiguous(isz)
    if not array.flags.c_contiguous:  # the caller's strided array: the part's own strides
        sl = tuple(
            slice(a - o, a - o + n) for a, o, n in zip(part[0], origin, part[1], strict=True)
        )
        addr, t = strided_type(array[sl], cache)
        return addr, t.Dup()
    elem = MPI.BYTE.Create_contiguous(isz)
    cache.append(elem)
    rel = [a - o for a, o in zip(part[0], origin, strict=True)]
    sub = elem.Create_subarray(list(array.shape), list(part[1]), rel)
    return MPI.Get_address(array), sub


def contiguous_part(array: np.ndarray, origin: Sequence[int], part: Box) -> np.ndarray | None:
    """The bytes of ``part`` of ``array`` as a flat view, if they are contiguous in memory."""
    if (
        array.flags.c_contiguous
        and tuple(part[1]) == array.shape
        and tuple(part[0]) == tuple(origin)
    ):  # the whole array (a replicated tensor, a whole saved slice): no slicing
        return array.reshape(-1).view(np.uint8)
    rel = tuple(slice(a - o, a - o + n) for a, o, n in zip(part[0], origin, part[1], strict=True))
    view = array[rel] if rel else array
    if not view.flags.c_contiguous:
        return None
    return view.reshape(-1).view(np.uint8)


ALONE_BYTES = 1 << 20  # a part at least this large travels as its own message


def message_specs(parts: list[tuple[np.ndarray, Sequence[int], Box]], cache: list) -> list:
    """The MPI buffer specs of the messages that move ``parts`` (in this order) to or
    from one peer: every part of at least ``ALONE_BYTES`` alone (a plain byte buffer when
    it is contiguous here, so that MPI can move it in one copy), the smaller ones
    together in one struct message.

    Both ends of a transfer must pass the same parts (the same boxes in the same order):
    the split depends only on the parts' sizes, so both build the same messages.
    Every datatype made is appended to ``cache``: free them after the transfer.
    """
    alone: list[tuple[np.ndarray, Sequence[int], Box]] = []
    small: list[tuple[np.ndarray, Sequence[int], Box]] = []
    for p in parts:
        nbytes = p[0].dtype.itemsize * math.prod(p[2][1])
        (alone if nbytes >= ALONE_BYTES else small).append(p)
    out = [message_spec([p], cache) for p in alone]
    if small:
        out.append(message_spec(small, cache))
    return out


def message_spec(parts: list[tuple[np.ndarray, Sequence[int], Box]], cache: list) -> list:
    """One MPI buffer spec for several parts: a plain byte buffer when there is one part
    and it is contiguous (MPI can then move it in one copy, e.g. by CMA between processes
    of a node), else a struct of subarrays at absolute addresses.

    Every datatype made is appended to ``cache``: free them after the transfer.
    """
    lengths, addrs, types = [], [], []
    for array, origin, part in parts:
        flat = contiguous_part(array, origin, part)
        if flat is not None and len(parts) == 1:
            return [flat, MPI.BYTE]
        if flat is not None:  # a block of bytes: no datatype of its own
            lengths.append(flat.nbytes)
            addrs.append(MPI.Get_address(flat))
            types.append(MPI.BYTE)
            continue
        a, t = part_datatype(array, origin, part, cache)
        cache.append(t)
        lengths.append(1)
        addrs.append(a)
        types.append(t)
    msg = MPI.Datatype.Create_struct(lengths, addrs, types).Commit()
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
