"""Memory selections for HDF5 transfers of strided arrays, without copying them.

h5py's low-level ``DatasetID.write``/``read`` take a C-contiguous array and a memory
dataspace. A Variable may alias a strided view of the caller's array (the interior
``u[1:-1, 1:-1]`` of a field with ghost cells; see :mod:`.strided`): such a view is a
box of a C-contiguous array of some larger shape over the same memory. :func:`memory`
finds that array and selects the box in its dataspace, so that HDF5 gathers (on write)
or scatters (on read) the strided elements itself. Arrays that are no such box (negative
or overlapping strides, a view of a non-contiguous base) get ``None``: the caller copies.
"""

from __future__ import annotations

import h5py
import numpy as np

__all__ = ["memory"]


def _root(a: np.ndarray) -> np.ndarray:
    base = a
    while isinstance(base.base, np.ndarray):
        base = base.base
    return base


def memory(a: np.ndarray) -> tuple[np.ndarray, h5py.h5s.SpaceID] | None:
    """``(C-contiguous array, memory dataspace with a selection)`` covering ``a``'s
    elements in C order, or ``None`` when ``a`` is not a box of a C-contiguous array."""
    if a.flags.c_contiguous:
        return a, h5py.h5s.create_simple(a.shape) if a.ndim else h5py.h5s.create(h5py.h5s.SCALAR)
    isz = a.dtype.itemsize
    root = _root(a)
    if not root.flags.c_contiguous or a.ndim == 0 or any(n == 0 for n in a.shape):
        return None
    # the container's extents from the strides: stride[d] = prod(extent[d+1:]) * itemsize
    dims = [d for d in range(a.ndim) if a.shape[d] > 1] or [a.ndim - 1]
    strides = [a.strides[d] for d in dims]
    if any(s <= 0 or s % isz for s in strides):
        return None
    elems = [s // isz for s in strides]
    if elems[-1] != 1:
        dims.append(a.ndim)  # a trailing element step: one more container dimension
        elems.append(1)
    extent = [0] * len(elems)
    extent[-1] = 1
    for k in range(len(elems) - 1, 0, -1):
        if elems[k - 1] <= elems[k] or elems[k - 1] % elems[k]:  # C order, no overlap
            return None
        extent[k] = elems[k - 1] // elems[k]
    total = root.nbytes // isz
    offset, rem = divmod(
        a.__array_interface__["data"][0] - root.__array_interface__["data"][0], isz
    )
    if rem or offset < 0:
        return None
    extent[0] = total // elems[0]
    start = []
    left = offset
    for e in elems:
        q, left = divmod(left, e)
        start.append(q)
    count = [a.shape[d] if d < a.ndim else 1 for d in dims]
    if any(s + c > x for s, c, x in zip(start, count, extent, strict=True)):
        return None
    if extent[0] * elems[0] > total:
        return None
    container = np.ndarray(tuple(extent), dtype=a.dtype, buffer=_buffer(root), offset=0)
    space = h5py.h5s.create_simple(tuple(extent))
    space.select_hyperslab(tuple(start), tuple(count))
    return container, space


def _buffer(root: np.ndarray) -> memoryview:
    return root.reshape(-1).view(np.uint8).data
