"""Reads into memory at a slow page offset go through the bounce buffer (io/bounce.py).

Serial, real files: the bytes are right for every offset and alignment, the kernel
is never asked to copy to a destination at a slow distance from the file, and a
short file returns what it has.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import record_preadv

from hpckpt.io import bounce
from hpckpt.io.load import read_index_file, read_tensor_serial

PAGE = bounce.PAGE


def test_slow_distance_is_less_than_a_cache_line_past_the_source():
    assert not bounce.slow_distance(8192, 4096)
    assert bounce.slow_distance(8192 + 16, 4096)
    assert bounce.slow_distance(8192 + 63, 0)
    assert not bounce.slow_distance(8192 + 64, 0)
    assert not bounce.slow_distance(8192 - 16, 0)  # the source past the destination
    assert bounce.slow_distance(5000 + 16, 5000 + PAGE)


def _memory_at(page_offset: int, n: int) -> np.ndarray:
    raw = np.empty(n + 2 * PAGE, dtype=np.uint8)
    skip = (page_offset - raw.ctypes.data) % PAGE
    out = raw[skip : skip + n]
    assert out.ctypes.data % PAGE == page_offset
    return out


@pytest.fixture
def data(tmp_path):
    n = 3 * bounce.BOUNCE_BYTES + 12345
    payload = np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8)
    path = tmp_path / "f.bin"
    path.write_bytes(payload.tobytes())
    return str(path), payload


@pytest.fixture
def copies(monkeypatch):
    """The destination address and file offset of every preadv the code makes."""
    return record_preadv(monkeypatch, bounce)


@pytest.mark.parametrize("page_offset", [0, 16, 63, 64, 200, 4080])
@pytest.mark.parametrize("file_offset", [0, 4096, 7])
def test_bytes_arrive_whatever_the_alignment_and_no_copy_is_slow(
    data, copies, page_offset, file_offset
):
    path, payload = data
    n = len(payload) - file_offset
    out = _memory_at(page_offset, n)
    fd = os.open(path, os.O_RDONLY)
    try:
        got = bounce.read_into(fd, memoryview(out), file_offset)
    finally:
        os.close(fd)
    assert got == n
    assert np.array_equal(out, payload[file_offset:])
    big = [(a, o) for a, o, size in copies if size >= bounce.MIN_BOUNCE_READ]
    assert big, "the reads were made"
    assert not [c for c in big if bounce.slow_distance(*c)]
    if bounce.slow_distance(out.ctypes.data, file_offset):
        assert all(size <= bounce.BOUNCE_BYTES for _, _, size in copies)


@pytest.mark.parametrize("page_offset", [0, 16])
def test_a_short_file_returns_what_it_has(data, page_offset):
    path, payload = data
    out = _memory_at(page_offset, len(payload) + 1000)
    out[:] = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        got = bounce.read_into(fd, memoryview(out), 0)
        assert bounce.read_into(fd, memoryview(out)[:10], len(payload)) == 0
        assert bounce.read_into(fd, memoryview(out)[:0], 0) == 0
    finally:
        os.close(fd)
    assert got == len(payload)
    assert np.array_equal(out[: len(payload)], payload)
    assert not out[len(payload) :].any()


def test_the_serial_reader_reads_numpy_memory_without_slow_copies(tmp_path, copies):
    import hpckpt

    value = np.random.default_rng(3).random((700, 1024), dtype=np.float32)  # 2.7 MiB
    prefix = str(tmp_path / "ck")
    hpckpt.Checkpoint(v=hpckpt.Variable(value)).write(prefix)
    index, _ = read_index_file(prefix)
    entry = index.tensors["v/.ATTRIBUTES/VARIABLE_VALUE"]
    copies.clear()
    out = read_tensor_serial(prefix, index, entry)
    assert np.array_equal(out, value)
    big = [(a, o) for a, o, size in copies if size >= bounce.MIN_BOUNCE_READ]
    assert big and not [c for c in big if bounce.slow_distance(*c)]
