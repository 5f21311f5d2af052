"""Variables on a 1-rank world: dtypes, scalars, assignment, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from mpi4py import MPI

import hpckpt

DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
]


@pytest.fixture
def mesh():
    return hpckpt.create_mesh([("x", 1)], comm=MPI.COMM_SELF)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_numeric_dtypes_and_bool(mesh, dtype):
    g = (np.arange(12) % 3).astype(dtype).reshape(3, 4)
    v = hpckpt.Variable(g, hpckpt.Layout(["x", hpckpt.UNSHARDED], mesh))
    assert v.dtype == np.dtype(dtype) and v.shape == (3, 4)
    assert np.array_equal(v.numpy(), g)


def test_scalar_and_assign(mesh):
    v = hpckpt.Variable(3.5, hpckpt.Layout([], mesh), name="s")
    assert v.shape == () and v.local.shape == ()
    v.assign(4.0)
    assert float(v.numpy()) == 4.0
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        v.assign([1.0, 2.0])


def test_from_local_checks_shape(mesh):
    lay = hpckpt.Layout(["x"], mesh)
    v = hpckpt.Variable.from_local(np.arange(5), lay, (5,))
    assert np.array_equal(v.numpy(), np.arange(5))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        hpckpt.Variable.from_local(np.arange(4), lay, (5,))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        v.assign_local(np.arange(3))


def test_rejects_non_numeric(mesh):
    with pytest.raises(TypeError, match="not supported"):
        hpckpt.Variable(np.array(["a", "b"]), hpckpt.Layout(["x"], mesh))
    with pytest.raises(TypeError, match="not supported"):
        hpckpt.Variable(np.array([object()]), hpckpt.Layout(["x"], mesh))


def test_layout_rank_mismatch(mesh):
    with pytest.raises(ValueError, match="rank 1"):
        hpckpt.Variable(np.zeros((2, 2)), hpckpt.Layout(["x"], mesh))


def test_local_is_writable_view(mesh):
    v = hpckpt.Variable(np.zeros(4), hpckpt.Layout(["x"], mesh))
    v.local[1] = 7
    assert v.numpy()[1] == 7


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((3,), np.float32), ((1024, 1024), np.float64), ((512, 1024), np.uint8), ((300, 1001), "<c8")],
)
def test_large_shards_and_scratch_buffers_are_page_aligned(shape, dtype):
    """Restores read into these: large ones start on a page (the kernel's fast copy)."""
    from hpckpt.variable import ALIGN_MIN_BYTES, PAGE_BYTES, aligned_copy, aligned_empty

    a = aligned_empty(shape, dtype)
    src = np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)
    b = aligned_copy(src, dtype)
    for arr in (a, b):
        assert arr.shape == shape and arr.dtype == np.dtype(dtype) and arr.flags.c_contiguous
        assert arr.flags.writeable
        if arr.nbytes >= ALIGN_MIN_BYTES:
            assert arr.ctypes.data % PAGE_BYTES == 0
    a[...] = src  # the whole buffer is usable
    np.testing.assert_array_equal(a, src)
    np.testing.assert_array_equal(b, src)


def test_restore_scratch_is_reused_from_round_to_round():
    """A restore's scratch pool hands the next round the memory of the last one (no new
    pages to fault in and zero), page-aligned, without overlaps within a round."""
    from hpckpt.io.scratch import ScratchPool
    from hpckpt.variable import ALIGN_MIN_BYTES, PAGE_BYTES

    pool = ScratchPool()
    shapes = [((1024, 1024), np.float32), ((700, 1001), np.float64), ((3, 5), np.int16)]
    first = [pool.take(s, d) for s, d in shapes]
    for a, (s, d) in zip(first, shapes, strict=True):
        assert a.shape == s and a.dtype == np.dtype(d) and a.flags.c_contiguous
        if a.nbytes >= ALIGN_MIN_BYTES:
            assert a.ctypes.data % PAGE_BYTES == 0
    # within a round: no two arrays share a byte
    spans = sorted((a.ctypes.data, a.ctypes.data + a.nbytes) for a in first)
    assert all(hi <= lo2 for (_, hi), (lo2, _) in itertools.pairwise(spans))
    for n, a in enumerate(first):
        a[...] = n + 1
    for n, a in enumerate(first):
        assert (a == n + 1).all()
    held = pool.nbytes
    assert held >= first[0].nbytes + first[1].nbytes
    pool.reset()
    second = [pool.take(s, d) for s, d in shapes[:2]]
    # the same memory again, and no new block
    assert [a.ctypes.data for a in second] == [a.ctypes.data for a in first[:2]]
    assert pool.nbytes == held
    # a larger request than any free block gets a new block; the others stay usable
    big = pool.take((3 << 20,), np.uint8)
    assert pool.nbytes == held + big.nbytes and big.ctypes.data % PAGE_BYTES == 0
