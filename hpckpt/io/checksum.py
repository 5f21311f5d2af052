"""Slice checksums: CRC-32C (the default, hardware-accelerated) and zlib's CRC-32.

CRC-32C (Castagnoli, as TensorFlow's checkpoints use) runs at 10-12 GiB/s per core
here through the ``crc32c`` package (SSE 4.2 / ARMv8 CRC instructions, releasing
the GIL on large buffers), against 2.7 GiB/s for zlib's CRC-32, which earlier
indexes name and which is still read. Pure logic: no MPI, no HDF5.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import crc32c as _crc32c
import numpy as np

__all__ = ["ALGORITHMS", "DEFAULT_ALGORITHM", "checksum", "checksum_function"]

DEFAULT_ALGORITHM = "crc32c"

ALGORITHMS: dict[str, Callable[..., int]] = {
    "crc32c": _crc32c.crc32c,
    "crc32": zlib.crc32,
}


def checksum_function(algorithm: str) -> Callable[..., int]:
    """The function ``f(buffer, value=0) -> int`` of a checksum algorithm.

    Raises:
        ValueError: The algorithm is unknown.
    """
    try:
        return ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(
            f"unknown checksum algorithm {algorithm!r} (known: {sorted(ALGORITHMS)})"
        ) from None


def checksum(a: np.ndarray, algorithm: str = DEFAULT_ALGORITHM) -> int:
    """The checksum of an array's C-order bytes (0 for an empty array).

    A strided array is checksummed in bounded chunks, never copied whole.
    """
    if not a.size:
        return 0
    fn = checksum_function(algorithm)
    if not a.flags.c_contiguous:
        from .strided import crc_of

        return int(crc_of(a, fn))
    return int(fn(a.reshape(-1).view(np.uint8)))
