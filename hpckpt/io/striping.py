"""The file system's block or stripe size, for dataset alignment and striping hints.

:func:`detect` finds, for the directory a checkpoint is written into:

* the file system type (``/proc/mounts``, longest mount point containing the path);
* on Lustre, the directory's default layout: the ``lustre.lov`` extended attribute
  (a ``lov_user_md`` v1/v3 or the first component of a composite layout), else
  ``lfs getstripe -d`` when ``lfs`` is on ``PATH``, else Lustre's default of 1 MiB;
* elsewhere, ``os.statvfs``'s block size (GPFS reports its file system block size
  there, local file systems their page-sized block).

:func:`alignment_for` turns that into the alignment of large datasets (Lustre: the
stripe size; elsewhere the block size, at least :data:`DEFAULT_ALIGNMENT`), used
unless ``CheckpointOptions(alignment=...)`` sets one. :func:`striping_hints` builds
the MPI-IO hints ``striping_factor``/``striping_unit`` that a collectively created
file (``io="hdf5"``, compression) passes to ``MPI_File_open``; files created by
rank 0 (the other paths) take the directory's layout (``lfs setstripe``).

Every input is injectable, so that the detection logic is tested without Lustre.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_ALIGNMENT",
    "FsLayout",
    "alignment_for",
    "detect",
    "fs_type_of",
    "parse_lfs_getstripe",
    "parse_lov_xattr",
    "resolve_alignment",
    "striping_hints",
]

DEFAULT_ALIGNMENT = 1 << 20  # also Lustre's default stripe size
LUSTRE_DEFAULT_STRIPE = 1 << 20
MAX_ALIGNMENT = 1 << 30
LFS_TIMEOUT = 5.0  # seconds for ``lfs getstripe`` (a hung MDS must not hang a save)

LOV_MAGIC_V1 = 0x0BD10BD0
LOV_MAGIC_V3 = 0x0BD30BD0
LOV_MAGIC_COMP_V1 = 0x0BD60BD0
_LOV_V1_HEADER = struct.Struct("<II16sIHH")  # magic, pattern, oi, stripe size, count, offset
_COMP_HEADER = struct.Struct("<IIIHHH6s8s")  # 32 bytes
_COMP_ENTRY = struct.Struct("<II16sIIIQI")  # 48 bytes: id, flags, extent, offset, size, ...


@dataclass(frozen=True)
class FsLayout:
    """What :func:`detect` found about a directory's file system.

    Attributes:
        fs_type: The mount's type (``"lustre"``, ``"gpfs"``, ``"ext4"``, ...;
            ``"unknown"`` when ``/proc/mounts`` is unreadable).
        block_size: ``statvfs``'s ``f_bsize`` (0 if unavailable).
        stripe_size: Lustre's stripe size in bytes (``None`` elsewhere).
        stripe_count: Lustre's stripe count (``-1``: all OSTs; ``None`` elsewhere).
        source: Where the size came from: ``"lustre.lov"``, ``"lfs"``,
            ``"lustre-default"`` or ``"statvfs"``.
    """

    fs_type: str
    block_size: int
    stripe_size: int | None = None
    stripe_count: int | None = None
    source: str = "statvfs"


def fs_type_of(path: str, mounts: str) -> str:
    """The type of the file system holding ``path`` (absolute), from ``/proc/mounts`` text."""
    best, kind = -1, "unknown"
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        inside = path == mnt or path.startswith(mnt.rstrip("/") + "/") or mnt == "/"
        if inside and len(mnt) > best:
            best, kind = len(mnt), parts[2]
    return kind


def parse_lov_xattr(data: bytes) -> tuple[int, int] | None:
    """``(stripe size, stripe count)`` from a ``lustre.lov`` xattr; ``None`` if unparsable.

    Understands plain layouts (``lov_user_md`` v1 and v3: the same leading fields)
    and composite (PFL) layouts, whose first component's layout is used: the
    first bytes of a file are where its HDF5 metadata and first datasets live.
    """
    if len(data) < 4:
        return None
    magic = struct.unpack_from("<I", data)[0]
    if magic in (LOV_MAGIC_V1, LOV_MAGIC_V3):
        if len(data) < _LOV_V1_HEADER.size:
            return None
        _, _, _, size, count, _ = _LOV_V1_HEADER.unpack_from(data)
        count = -1 if count == 0xFFFF else count
        return (size, count) if size > 0 else None
    if magic == LOV_MAGIC_COMP_V1:
        if len(data) < _COMP_HEADER.size + _COMP_ENTRY.size:
            return None
        entries = _COMP_HEADER.unpack_from(data)[4]
        if entries < 1:
            return None
        _, _, _, off, size, _, _, _ = _COMP_ENTRY.unpack_from(data, _COMP_HEADER.size)
        if off < _COMP_HEADER.size or off + size > len(data) or size < _LOV_V1_HEADER.size:
            return None
        return parse_lov_xattr(data[off : off + size])
    return None


_LFS_SIZE = re.compile(r"(?:lmm_)?stripe_size:\s*(\d+)")
_LFS_COUNT = re.compile(r"(?:lmm_)?stripe_count:\s*(-?\d+)")


def parse_lfs_getstripe(text: str) -> tuple[int, int] | None:
    """``(stripe size, stripe count)`` from ``lfs getstripe -d DIR`` output (its first
    component); ``None`` if it names no stripe size."""
    size = _LFS_SIZE.search(text)
    if size is None or int(size.group(1)) <= 0:
        return None
    count = _LFS_COUNT.search(text)
    return int(size.group(1)), int(count.group(1)) if count else 1


def _read_mounts() -> str:
    try:
        with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
            return f.read(1 << 20)
    except OSError:
        return ""


def _run_lfs(directory: str) -> str | None:
    lfs = shutil.which("lfs")
    if lfs is None:
        return None
    try:
        r = subprocess.run(
            [lfs, "getstripe", "-d", directory],
            capture_output=True,
            text=True,
            timeout=LFS_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout if r.returncode == 0 else None


def _getxattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name)
    except (OSError, AttributeError):
        return None


def detect(
    directory: str,
    *,
    statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
    read_mounts: Callable[[], str] = _read_mounts,
    getxattr: Callable[[str, str], bytes | None] = _getxattr,
    run_lfs: Callable[[str], str | None] = _run_lfs,
) -> FsLayout:
    """The block or stripe size of the file system holding ``directory`` (it must exist).

    The keyword arguments replace the system calls (for tests).
    """
    path = os.path.abspath(directory)
    try:
        block = int(statvfs(path).f_bsize)
    except OSError:
        block = 0
    kind = fs_type_of(path, read_mounts())
    if kind != "lustre":
        return FsLayout(kind, block)
    raw = getxattr(path, "lustre.lov")
    got = parse_lov_xattr(raw) if raw else None
    if got is not None:
        return FsLayout(kind, block, got[0], got[1], "lustre.lov")
    text = run_lfs(path)
    got = parse_lfs_getstripe(text) if text else None
    if got is not None:
        return FsLayout(kind, block, got[0], got[1], "lfs")
    return FsLayout(kind, block, LUSTRE_DEFAULT_STRIPE, 1, "lustre-default")


def alignment_for(layout: FsLayout) -> int:
    """The alignment of large datasets on this file system.

    Lustre: the stripe size (a rank's block starting on a stripe boundary touches
    the fewest OSTs and takes no lock another rank holds). Elsewhere the block
    size, but at least :data:`DEFAULT_ALIGNMENT` (local and NFS file systems
    report page-sized blocks; 1 MiB keeps large datasets on extent boundaries at
    a cost of less than 1 MiB per large dataset). At most 1 GiB.
    """
    if layout.stripe_size:
        size = layout.stripe_size
    else:
        size = max(layout.block_size, DEFAULT_ALIGNMENT)
    return max(1, min(size, MAX_ALIGNMENT))


def striping_hints(
    factor: int | None, unit: int | None, hints: dict[str, str] | None = None
) -> dict[str, str] | None:
    """MPI-IO hints for a collectively created file: ``hints`` plus ``striping_factor``
    and ``striping_unit`` where given (the user's own hints win)."""
    out = dict(hints or {})
    if factor is not None:
        out.setdefault("striping_factor", str(int(factor)))
    if unit is not None:
        out.setdefault("striping_unit", str(int(unit)))
    return out or None


_detected: dict[str, FsLayout] = {}


def resolve_alignment(alignment: int | None, striping_unit: int | None, directory: str) -> int:
    """The alignment a save uses: ``alignment`` if set, else ``striping_unit`` if set
    (the stripe size the new file is asked for), else :func:`alignment_for` the
    directory's file system (detected once per directory and process)."""
    if alignment is not None:
        return int(alignment)
    if striping_unit is not None:
        return int(striping_unit)
    key = os.path.abspath(directory)
    layout = _detected.get(key)
    if layout is None:
        layout = _detected[key] = detect(key)
    return alignment_for(layout)
