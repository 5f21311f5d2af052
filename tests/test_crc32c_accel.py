"""hpckpt's AVX-512 CRC-32C (``hpckpt.io._crc32c``) against the ``crc32c`` package.

The extension must give the standard CRC-32C, the value every index records, for
every length (the folded 256-byte blocks, the 64-byte reduction and the tails),
every start address and every running value. Pure logic: no MPI.
"""

from __future__ import annotations

import os
import platform

import crc32c
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpckpt.io import checksum

if platform.machine() == "x86_64":  # setup builds the extension: it must import here
    from hpckpt.io import _crc32c as fast
else:
    fast = pytest.importorskip("hpckpt.io._crc32c")


def test_the_extension_is_used_where_the_cpu_has_vpclmulqdq() -> None:
    flags = open("/proc/cpuinfo").read().split()
    has = all(f in flags for f in ("avx512f", "avx512vl", "vpclmulqdq", "pclmulqdq", "sse4_2"))
    assert fast.vectorized() == has
    if has:
        assert checksum.ACCELERATED is fast.crc32c
        assert checksum.checksum_function("crc32c") is fast.crc32c
    else:
        assert checksum.checksum_function("crc32c") is crc32c.crc32c
        with pytest.raises(RuntimeError, match="VPCLMULQDQ"):
            fast.crc32c(b"x")


needs_vector = pytest.mark.skipif(not fast.vectorized(), reason="the CPU has no AVX-512 VPCLMULQDQ")


@needs_vector
@settings(max_examples=400, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=3000),
    skip=st.integers(0, 63),
    value=st.integers(0, 2**32 - 1),
)
def test_equals_the_crc32c_package(data: bytes, skip: int, value: int) -> None:
    view = memoryview(data)[min(skip, len(data)) :]  # any start address
    assert fast.crc32c(view) == crc32c.crc32c(view)
    assert fast.crc32c(view, value) == crc32c.crc32c(view, value)


@needs_vector
@pytest.mark.parametrize("n", [255, 256, 257, 511, 512, 513, 1 << 16, (1 << 20) + 77])
def test_every_length_around_the_blocks_and_large_buffers(n: int) -> None:
    a = np.frombuffer(os.urandom(n + 8), dtype=np.uint8)
    for skip in (0, 1, 8):
        b = a[skip : skip + n]
        assert fast.crc32c(b) == crc32c.crc32c(b)


@needs_vector
def test_running_value_over_chunks_equals_the_whole() -> None:
    a = np.frombuffer(os.urandom(3 << 20), dtype=np.uint8)
    whole = crc32c.crc32c(a)
    for step in (1000, 256 << 10, 1 << 20):
        crc = 0
        for lo in range(0, a.size, step):
            crc = fast.crc32c(a[lo : lo + step], crc)
        assert crc == whole


@needs_vector
def test_one_flipped_bit_changes_the_value() -> None:
    a = np.frombuffer(os.urandom(1 << 16), dtype=np.uint8).copy()
    before = fast.crc32c(a)
    a[12345] ^= 0x10
    assert fast.crc32c(a) != before
    assert fast.crc32c(a) == crc32c.crc32c(a)


def test_rejects_what_is_not_a_contiguous_buffer() -> None:
    if not fast.vectorized():
        pytest.skip("the CPU has no AVX-512 VPCLMULQDQ")
    with pytest.raises(TypeError):
        fast.crc32c("text")  # type: ignore[arg-type]
    with pytest.raises((BufferError, TypeError, ValueError)):
        fast.crc32c(np.zeros((4, 4))[:, 1])
