"""Which dtypes a Variable may hold, and how they are stored.

numpy's bool and numeric dtypes are stored as they are. The low-precision float
types of the ``ml_dtypes`` package (``bfloat16``, the ``float8_*`` variants, ...)
are stored as unsigned integers of the same width, with the dtype's name recorded
(the index's ``logical_dtype``, the dataset's ``hpckpt_dtype`` attribute): any HDF5
tool reads the bits, hpckpt hands back the logical dtype.

``ml_dtypes`` is imported only when such a dtype is read back by name (a
program that uses these dtypes has imported it already). Pure logic: no MPI, no
files.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

__all__ = [
    "LOGICAL_DTYPES",
    "check_dtype",
    "from_logical",
    "logical_name",
    "storage_dtype",
]

_KINDS = "biufc"

LOGICAL_DTYPES = frozenset(
    {
        "bfloat16",
        "float8_e3m4",
        "float8_e4m3",
        "float8_e4m3b11fnuz",
        "float8_e4m3fn",
        "float8_e4m3fnuz",
        "float8_e5m2",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
    }
)
"""The ``ml_dtypes`` float types hpckpt stores (by name)."""


@functools.lru_cache(maxsize=256)  # called per tensor; a program has few dtypes
def logical_name(dtype: np.dtype) -> str | None:
    """The name of an ``ml_dtypes`` float dtype hpckpt stores, else ``None``."""
    t = dtype.type
    if getattr(t, "__module__", "").split(".")[0] == "ml_dtypes" and dtype.name in LOGICAL_DTYPES:
        return str(dtype.name)
    return None


def storage_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of the stored bytes: ``dtype`` itself, or the unsigned integer of its
    width for an ``ml_dtypes`` float."""
    if logical_name(dtype) is not None:
        return np.dtype(f"<u{dtype.itemsize}")
    return dtype


def from_logical(name: str, stored: np.dtype) -> np.dtype:
    """The dtype named ``name`` (an ``ml_dtypes`` float) for bytes stored as ``stored``.

    Raises:
        ValueError: ``name`` is not a supported dtype, or its width differs from
            ``stored``'s.
        ImportError: ``ml_dtypes`` is not installed (the message says how to install it).
    """
    if name not in LOGICAL_DTYPES:
        raise ValueError(
            f"logical dtype {name!r} is not supported (known: {sorted(LOGICAL_DTYPES)})"
        )
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError(
            f"the checkpoint holds {name} values: reading them needs the ml_dtypes package "
            "(pip install ml_dtypes)"
        ) from None
    dt = np.dtype(getattr(ml_dtypes, name))
    if dt.itemsize != stored.itemsize or stored.kind != "u":
        raise ValueError(
            f"logical dtype {name!r} ({dt.itemsize} bytes) cannot be stored as {stored}"
        )
    return dt


def check_dtype(dtype: Any) -> np.dtype:
    """Return ``dtype`` as a native-byte-order numpy dtype, or raise ``TypeError``.

    Supported: bool, every numeric numpy dtype (signed and unsigned integers,
    floats, complex), and the ``ml_dtypes`` floats of :data:`LOGICAL_DTYPES`.
    """
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{dtype!r} is not a numpy dtype") from None
    if logical_name(dt) is not None:
        return dt
    if dt.kind not in _KINDS or dt.fields is not None or dt.subdtype is not None:
        raise TypeError(
            f"dtype {dt!r} is not supported: use bool, a numeric numpy dtype, or an "
            f"ml_dtypes float ({', '.join(sorted(LOGICAL_DTYPES))})"
        )
    return dt.newbyteorder("=")
