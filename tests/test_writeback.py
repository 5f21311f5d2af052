"""Writeback started early (``io/writeback.py``), on a real disk-backed file.

The kernel's ``cachestat`` (Linux 6.5+) tells how many of a file's cached pages are
dirty: a file whose ranges went through :class:`Writeback` is written out without any
``fsync``, while the same bytes written without it stay dirty (the kernel's own
flusher waits ``dirty_expire_centisecs``, 30 s by default).
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
import time

import numpy as np
import pytest
from mpi4py import MPI

from hpckpt.io.writeback import Writeback

pytestmark = pytest.mark.skipif(
    MPI.COMM_WORLD.Get_size() > 1, reason="serial test: run without mpirun"
)

_NR_CACHESTAT = 451  # the same number on every architecture (Linux 6.5)


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [
        ("nr_cache", ctypes.c_uint64),
        ("nr_dirty", ctypes.c_uint64),
        ("nr_writeback", ctypes.c_uint64),
        ("nr_evicted", ctypes.c_uint64),
        ("nr_recently_evicted", ctypes.c_uint64),
    ]


def dirty_pages(path: str) -> int:
    """Dirty page-cache pages of ``path`` (``cachestat``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        st = _Stat()
        rc = libc.syscall(_NR_CACHESTAT, fd, ctypes.byref(_Range(0, 0)), ctypes.byref(st), 0)
        if rc != 0:
            err = ctypes.get_errno()
            if err == errno.ENOSYS:
                pytest.skip("this kernel has no cachestat (Linux 6.5+) to observe dirty pages")
            raise OSError(err, os.strerror(err))
        return int(st.nr_dirty)
    finally:
        os.close(fd)


def fs_type(path: str) -> str:
    path = os.path.realpath(path)
    best, kind = "", ""
    with open("/proc/mounts") as f:
        for line in f:
            _, mnt, typ = line.split()[:3]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, typ
    return kind


@pytest.fixture
def disk_dir(tmp_path):
    """A directory on a file system with writeback (not tmpfs, where pages never go to disk)."""
    if fs_type(str(tmp_path)) not in ("tmpfs", "ramfs"):
        yield str(tmp_path)
        return
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        assert fs_type(d) not in ("tmpfs", "ramfs"), "no disk-backed directory for this test"
        yield d


def create(path: str) -> None:
    # a new empty file, never truncated (ext4 starts writing a truncated file at close)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def write(path: str, data: np.ndarray, writeback: Writeback | None, pieces: int = 4) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        step = data.size // pieces
        for lo in range(0, data.size, step):
            n = os.pwrite(fd, data[lo : lo + step], lo)
            assert n == min(step, data.size - lo)
            if writeback is not None:
                writeback.written(lo, n)
    finally:
        os.close(fd)


def test_written_ranges_reach_the_disk_without_an_fsync(disk_dir) -> None:
    data = np.random.default_rng(0).integers(0, 255, 64 << 20, dtype=np.uint8)
    control = os.path.join(disk_dir, "control")
    started = os.path.join(disk_dir, "started")
    create(control)
    write(control, data, None)
    create(started)
    wb = Writeback(started, data.size)
    assert wb.active
    write(started, data, wb)
    wb.close()
    assert dirty_pages(control) > 0
    deadline = time.monotonic() + 20
    while dirty_pages(started) and time.monotonic() < deadline:
        time.sleep(0.05)
    left_started, left_control = dirty_pages(started), dirty_pages(control)
    assert left_started == 0, left_started
    assert left_control > 0, "the control file was written out by someone else: no contrast"
    with open(started, "rb") as f:
        assert f.read() == data.tobytes()
    os.remove(control)  # its dirty pages are dropped, not written


def test_a_writeback_of_a_missing_file_does_nothing(tmp_path) -> None:
    wb = Writeback(str(tmp_path / "absent"), 1 << 30)
    assert not wb.active
    wb.written(0, 4096)
    wb.close()
    wb.close()  # closing twice is harmless


def test_ranges_below_the_minimum_are_left_to_the_fsync(disk_dir) -> None:
    """Many small writes (a save of small tensors) cost no call each: they stay dirty
    until the final fsync."""
    from hpckpt.io.writeback import MIN_BYTES

    data = np.random.default_rng(1).integers(0, 255, 16 * (MIN_BYTES // 4), dtype=np.uint8)
    path = os.path.join(disk_dir, "small")
    create(path)
    wb = Writeback(path, 1 << 30)
    write(path, data, wb, pieces=16)  # 16 ranges of MIN_BYTES / 4
    wb.close()
    time.sleep(1)
    assert dirty_pages(path) == data.size // 4096
    os.remove(path)


def test_a_rank_that_writes_little_in_all_is_left_to_the_fsync(disk_dir) -> None:
    """Below MIN_TOTAL_BYTES in all, even large ranges are not handed to the kernel."""
    from hpckpt.io.writeback import MIN_BYTES, MIN_TOTAL_BYTES

    data = np.random.default_rng(2).integers(0, 255, 4 * MIN_BYTES, dtype=np.uint8)
    assert data.size < MIN_TOTAL_BYTES
    path = os.path.join(disk_dir, "little")
    create(path)
    wb = Writeback(path, data.size)
    assert not wb.active
    write(path, data, wb, pieces=4)  # ranges of MIN_BYTES
    wb.close()
    time.sleep(1)
    assert dirty_pages(path) == data.size // 4096
    os.remove(path)
