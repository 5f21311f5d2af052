"""Small helpers without MPI: sizes, statistics, durable and cache-dropping file steps."""

from __future__ import annotations

import contextlib
import os
import re
import statistics
from collections.abc import Iterable, Sequence

__all__ = [
    "GIB",
    "align_up",
    "drop_cache",
    "format_size",
    "fsync_dir",
    "fsync_path",
    "median",
    "parse_int_list",
    "parse_kv",
    "parse_size",
    "parse_sizes",
    "pread_into",
    "pwrite_all",
    "remove_paths",
]

GIB = 1 << 30
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)
_IO_CHUNK = 1 << 30  # Linux moves at most 0x7ffff000 bytes per read/write call


def parse_size(text: str) -> int:
    """Bytes in ``"512K"``, ``"64M"``, ``"1G"``, ``"1.5GiB"`` or ``"4096"`` (binary units).

    Raises:
        ValueError: The text is not a size.
    """
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (use e.g. 1M, 64M, 1G)")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise ValueError(f"size {text!r} is below one byte")
    return int(value)


def parse_sizes(text: str) -> list[int]:
    """A comma-separated list of sizes."""
    return [parse_size(t) for t in text.split(",") if t.strip()]


def parse_int_list(text: str) -> list[int]:
    """A comma-separated list of positive ints (``k``/``M`` suffixes as powers of ten)."""
    out = []
    for t in text.split(","):
        t = t.strip().lower()
        if not t:
            continue
        mult = {"k": 1000, "m": 1000_000}.get(t[-1], 1)
        n = int(float(t[:-1] if mult > 1 else t) * mult)
        if n < 1:
            raise ValueError(f"expected a positive count, got {t!r}")
        out.append(n)
    return out


def parse_kv(text: str | None) -> dict[str, str]:
    """``"a=1,b=2"`` as a dict (MPI-IO hints)."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"expected key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def format_size(n: int) -> str:
    """``1073741824`` -> ``"1G"``; ``1536`` -> ``"1.5K"``."""
    for unit in ("T", "G", "M", "K"):
        u = _UNITS[unit]
        if n >= u:
            v = n / u
            return f"{v:g}{unit}" if v == int(v) else f"{v:.3g}{unit}"
    return f"{n}B"


def align_up(n: int, alignment: int) -> int:
    """``n`` rounded up to a multiple of ``alignment``."""
    return -(-n // alignment) * alignment


def median(samples: Sequence[float]) -> float:
    """The median (``nan`` for no samples)."""
    return statistics.median(samples) if samples else float("nan")


def fsync_path(path: str) -> None:
    """fsync a file by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """fsync a directory (makes file creations and renames in it durable)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def drop_cache(paths: Iterable[str]) -> None:
    """Evict the files' pages from the page cache (they must be clean, i.e. synced).

    Uses ``posix_fadvise(POSIX_FADV_DONTNEED)``; a no-op where it is unavailable.
    """
    if not hasattr(os, "posix_fadvise"):
        return
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def remove_paths(paths: Iterable[str]) -> None:
    """Remove files that exist."""
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)


def pwrite_all(fd: int, buf: memoryview, offset: int) -> None:
    """Write all of ``buf`` at ``offset`` (looping over short writes)."""
    buf = buf.cast("B")
    done = 0
    while done < len(buf):
        n = os.pwrite(fd, buf[done : done + _IO_CHUNK], offset + done)
        if n <= 0:
            raise OSError(f"pwrite wrote {n} bytes at offset {offset + done}")
        done += n


def pread_into(fd: int, buf: memoryview, offset: int) -> None:
    """Fill all of ``buf`` from ``offset`` with ``os.preadv`` (looping over short reads)."""
    buf = buf.cast("B")
    done = 0
    while done < len(buf):
        n = os.preadv(fd, [buf[done : done + _IO_CHUNK]], offset + done)
        if n <= 0:
            raise OSError(f"short read: {done} of {len(buf)} bytes at offset {offset}")
        done += n
