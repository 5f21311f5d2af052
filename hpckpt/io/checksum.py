"""Slice checksums: CRC-32C (the default, hardware-accelerated) and zlib's CRC-32.

CRC-32C (Castagnoli, as TensorFlow's checkpoints use) comes from hpckpt's own C
extension ``_crc32c`` where the CPU has AVX-512 VPCLMULQDQ (78 GiB/s on one core
here for a buffer in the L2 cache), else from the ``crc32c`` package (SSE 4.2 /
ARMv8 CRC instructions, 29 GiB/s on the same buffer); both give the same values
and release the GIL on large buffers. zlib's CRC-32 (2.7 GiB/s), which earlier
indexes name, is still read. Pure logic: no MPI, no HDF5.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import crc32c as _crc32c
import numpy as np

__all__ = ["ACCELERATED", "ALGORITHMS", "DEFAULT_ALGORITHM", "checksum", "checksum_function"]

DEFAULT_ALGORITHM = "crc32c"


def _fast_crc32c() -> Callable[..., int] | None:
    """hpckpt's AVX-512 CRC-32C, or None (not built here, or the CPU lacks it)."""
    try:
        from . import _crc32c as fast
    except ImportError:
        return None
    return fast.crc32c if fast.vectorized() else None


#: The vectorized CRC-32C in use, or ``None`` where the ``crc32c`` package serves.
ACCELERATED: Callable[..., int] | None = _fast_crc32c()

ALGORITHMS: dict[str, Callable[..., int]] = {
    "crc32c": ACCELERATED or _crc32c.crc32c,
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
