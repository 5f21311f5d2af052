"""Existing codes adopt hpckpt (issue 13): own splits, per-rank boxes, zero copy, RankState,
low-precision floats, progress reports. Runs on 1 to 4 ranks (other rank counts:
tests/test_adopt_rankcount.py)."""

from __future__ import annotations

import itertools
import json
import os

import ml_dtypes
import numpy as np
import pytest
from conftest import Agreed, all_ranks, record_preadv
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout

pytestmark = pytest.mark.mpi


def world():
    c = MPI.COMM_WORLD
    return c.rank, c.size


def ghosted(shape, dtype=np.float64, fill=-1.0):
    g = np.full((shape[0] + 2, shape[1] + 2), fill, dtype=dtype)
    return g, g[1:-1, 1:-1]


def ring(g):
    m = np.ones(g.shape, bool)
    m[1:-1, 1:-1] = False
    return g[m]


def test_splits_with_empty_blocks(shared_dir):
    rank, size = world()
    mesh = hpckpt.create_mesh([("x", size)])
    n = 10
    # rank 0's block is empty, the remainder goes to the last rank
    bounds = [0, 0] + [(n // max(size - 1, 1)) * i for i in range(1, size - 1)] + [n]
    if size == 1:
        bounds = [0, n]
    lay = Layout(["x", UNSHARDED], mesh, splits={"x": bounds})
    full = np.arange(n * 3, dtype=np.int32).reshape(n, 3)
    v = hpckpt.Variable.from_local(full[lay.local_slices(full.shape)], lay, full.shape)
    with Agreed():
        assert v.local.shape == (bounds[rank + 1] - bounds[rank], 3)
        assert np.array_equal(v.numpy(), full)
    path = hpckpt.Checkpoint(v=v).write(os.path.join(shared_dir, "s"))
    w = hpckpt.Variable(np.zeros_like(full), Layout([UNSHARDED, "x"], mesh))
    hpckpt.Checkpoint(v=w).read(path).assert_consumed()
    with Agreed():
        assert np.array_equal(w.numpy(), full)
        e = hpckpt.load_checkpoint(path).index.tensors["v/.ATTRIBUTES/VARIABLE_VALUE"]
        assert e.layout is not None and dict(e.layout.splits) == {"x": tuple(bounds)}
    # a layout with splits fits only tensors of that length
    with pytest.raises(ValueError, match="covers 10 elements"):
        hpckpt.Variable(np.zeros((11, 3)), lay)


@pytest.mark.mpi(min_size=2)
def test_boxes_with_replicas_are_written_once(shared_dir):
    rank, size = world()
    full = np.arange(8 * 5, dtype=np.float32).reshape(8, 5)
    # ranks pair up: both ranks of a pair hold the same box (replicas); an odd last rank
    # shares the last pair's box
    pairs = max(size // 2, 1)
    p = min(rank // 2, pairs - 1)
    lo, hi = 8 * p // pairs, 8 * (p + 1) // pairs
    v = hpckpt.Variable.from_local(full[lo:hi], global_shape=(8, 5), offset=(lo, 0))
    with Agreed():
        assert v.layout is None and v.offset == (lo, 0)
        assert np.array_equal(v.numpy(), full)
    path = hpckpt.Checkpoint(v=v).write(os.path.join(shared_dir, "b"))
    with Agreed():
        e = hpckpt.load_checkpoint(path).index.tensors["v/.ATTRIBUTES/VARIABLE_VALUE"]
        assert e.layout is None
        assert sorted(s.start for s in e.slices) == [(8 * q // pairs, 0) for q in range(pairs)]
        assert np.array_equal(hpckpt.load_variable(path, "v/.ATTRIBUTES/VARIABLE_VALUE"), full)
    # restore into other boxes (a block of rows per rank, no replicas)
    lo2 = 8 * rank // size
    hi2 = 8 * (rank + 1) // size
    w = hpckpt.Variable.from_local(
        np.zeros((hi2 - lo2, 5), np.float32), global_shape=(8, 5), offset=(lo2, 0)
    )
    hpckpt.Checkpoint(v=w).read(path).assert_consumed()
    with Agreed():
        assert np.array_equal(w.local, full[lo2:hi2])


@pytest.mark.mpi(min_size=2)
def test_tiling_errors_name_the_ranks_and_commit_nothing(shared_dir):
    rank, size = world()
    comm = MPI.COMM_WORLD
    good = hpckpt.Variable.from_local(np.ones((1, 4)), global_shape=(size, 4), offset=(rank, 0))
    prefix = os.path.join(shared_dir, "t")
    hpckpt.Checkpoint(v=good).write(prefix)
    before = sorted(os.listdir(shared_dir))
    # overlap: the last rank's box is the first rank's row, so that row is held twice
    # by different boxes (shapes differ) and the last row by nobody
    last = size - 1
    if rank == last:
        bad = hpckpt.Variable.from_local(np.ones((2, 4)), global_shape=(size, 4), offset=(0, 0))
    else:
        bad = hpckpt.Variable.from_local(np.ones((1, 4)), global_shape=(size, 4), offset=(rank, 0))
    with pytest.raises(hpckpt.CheckpointError) as ei:
        hpckpt.Checkpoint(v=bad).write(prefix)
    msg = str(ei.value)
    with Agreed():
        assert f"ranks [0] and [{last}] overlap" in msg or f"ranks [{last}] and [0] overlap" in msg
        assert "Nothing was written" in msg
    # a gap: the last rank holds nothing, its row is uncovered; neighbours are named
    n = 0 if rank == last else 1
    gap = hpckpt.Variable.from_local(np.ones((n, 4)), global_shape=(size, 4), offset=(rank, 0))
    with pytest.raises(hpckpt.CheckpointError) as ei:
        hpckpt.Checkpoint(v=gap).write(prefix)
    msg = str(ei.value)
    with Agreed():
        assert f"no rank's box covers the elements at start [{last}, 0], shape [1, 4]" in msg
        assert f"ranks [{last - 1}] border it" in msg
    comm.Barrier()
    with Agreed():
        assert sorted(os.listdir(shared_dir)) == before  # nothing new, the old one intact
        assert np.all(hpckpt.load_variable(prefix, "v/.ATTRIBUTES/VARIABLE_VALUE") == 1.0)


def test_zero_copy_strided_views_and_double_buffers(shared_dir):
    _rank, size = world()
    mesh = hpckpt.create_mesh([("x", size)])
    lay = Layout(["x", UNSHARDED], mesh)
    shape = (4 * size + 1, 6)
    full = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    sl = lay.local_slices(shape)
    _, ui = ghosted(lay.local_shape(shape))
    un, uni = ghosted(lay.local_shape(shape), fill=-2.0)
    ui[...] = full[sl]
    uni[...] = -full[sl]
    v = hpckpt.Variable.from_local(ui, lay, shape, copy=False)
    ck = hpckpt.Checkpoint(u=v)
    p1 = ck.write(os.path.join(shared_dir, "a"))
    v.local = uni  # the time step swapped the buffers: save the other one, no copy
    p2 = ck.write(os.path.join(shared_dir, "b"))
    with Agreed():
        assert v.local is uni and not ui.flags.c_contiguous
        with pytest.raises(ValueError, match="cannot re-point"):
            v.local = np.zeros((1, 1))
    # restore into the aliased (strided) buffer in place: values land, ghosts untouched
    uni[...] = 0.0
    ck.read(p1).assert_consumed()
    with Agreed():
        assert v.local is uni
        assert np.array_equal(uni, full[sl]) and np.all(ring(un) == -2.0)
        assert np.array_equal(hpckpt.load_variable(p2, "u/.ATTRIBUTES/VARIABLE_VALUE"), -full)
    # restore onto another layout, into another strided destination
    g2, g2i = ghosted(shape, fill=7.0)
    lay2 = Layout([UNSHARDED, UNSHARDED], mesh)
    target = hpckpt.Variable.from_local(g2i, lay2, shape, copy=False)
    hpckpt.Checkpoint(u=target).read(p2).assert_consumed()
    with Agreed():
        assert target.local is g2i
        assert np.array_equal(g2i, -full) and np.all(ring(g2) == 7.0)


def test_zero_copy_dlpack_and_buffer_protocol():
    import torch

    _rank, _size = world()
    t = torch.zeros(3, 4)
    v = hpckpt.Variable.from_local(t, global_shape=(3, 4), copy=False)
    v.local[1, 2] = 5.0  # the tensor sees it: the same memory
    b = bytearray(16)
    w = hpckpt.Variable.from_local(b, global_shape=(16,), copy=False)
    w.local[3] = 9
    with Agreed():
        assert float(t[1, 2]) == 5.0 and b[3] == 9
        with pytest.raises(TypeError, match="copy=False needs"):
            hpckpt.Variable.from_local([1, 2], global_shape=(2,), copy=False)


def test_rank_state_same_rank_count(shared_dir):
    rank, _size = world()

    class Rng(hpckpt.RankState):
        def __init__(self, seed):
            self.rng = np.random.default_rng(seed)

        def serialize(self):
            return json.dumps(self.rng.bit_generator.state)

        def deserialize(self, s):
            self.rng.bit_generator.state = json.loads(s)

    class Blob(hpckpt.RankState):
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data

        def deserialize(self, s):
            self.data = s

    rng = Rng(rank)
    rng.rng.random(5)
    blob = Blob(bytes(range(rank)))  # rank 0's state is empty
    p = hpckpt.Checkpoint(rng=rng, blob=blob).write(os.path.join(shared_dir, "r"))
    want = np.random.default_rng(rank)
    want.random(5)
    other, blob2 = Rng(999), Blob(b"x")
    hpckpt.Checkpoint(rng=other, blob=blob2).read(p).assert_consumed()
    with Agreed():
        assert np.array_equal(other.rng.random(3), want.random(3))
        assert blob2.data == bytes(range(rank)) and isinstance(blob2.data, bytes)


@pytest.mark.parametrize("name", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_low_precision_floats_round_trip(shared_dir, name):
    _rank, size = world()
    dt = np.dtype(getattr(ml_dtypes, name))
    mesh = hpckpt.create_mesh([("x", size)])
    full = np.linspace(-2, 2, 7 * 3).reshape(7, 3).astype(dt)
    v = hpckpt.Variable(full, Layout(["x", UNSHARDED], mesh))
    s = hpckpt.Variable(full[0, 0], Layout([], mesh))
    p = hpckpt.Checkpoint(v=v, s=s).write(os.path.join(shared_dir, name))
    w = hpckpt.Variable(np.zeros((7, 3), dt), Layout([UNSHARDED, "x"], mesh))
    ws = hpckpt.Variable(np.zeros((), dt), Layout([], mesh))
    hpckpt.Checkpoint(v=w, s=ws).read(p).assert_consumed()
    with Agreed():
        assert w.dtype == dt
        assert np.array_equal(w.numpy().view(np.uint8), full.view(np.uint8))
        assert ws.local.reshape(1).view(np.uint8).tobytes() == full[:1, 0].tobytes()
        r = hpckpt.load_checkpoint(p)
        assert r.get_variable_to_dtype_map()["v/.ATTRIBUTES/VARIABLE_VALUE"] == dt
        got = r.get_tensor("v/.ATTRIBUTES/VARIABLE_VALUE")
        assert got.dtype == dt and np.array_equal(got.view(np.uint8), full.view(np.uint8))
    # a restore into another dtype is refused, naming both
    bad = hpckpt.Variable(np.zeros((7, 3), np.float32), Layout([UNSHARDED, "x"], mesh))
    with pytest.raises(hpckpt.CheckpointError, match=f"has {name}, the variable"):
        hpckpt.Checkpoint(v=bad).read(p).expect_partial()


def test_progress_reports_on_rank_zero(shared_dir):
    rank, size = world()
    seen = []
    opts = hpckpt.CheckpointOptions(progress=lambda d, t: seen.append((d, t)))
    mesh = hpckpt.create_mesh([("x", size)])
    v = hpckpt.Variable(np.ones((64 * size, 1024)), Layout(["x", UNSHARDED], mesh))
    p = hpckpt.Checkpoint(v=v).write(os.path.join(shared_dir, "p"), options=opts)
    saved = list(seen)
    seen.clear()
    hpckpt.Checkpoint(v=v).read(p, options=opts).assert_consumed()
    with Agreed():
        if rank == 0:
            total = sum(e.nbytes for e in hpckpt.load_checkpoint(p).index.tensors.values())
            assert saved and saved[-1] == (total, total), saved
            assert all(a[0] <= b[0] for a, b in itertools.pairwise(saved))
            assert seen and seen[-1] == (v.nbytes, v.nbytes)
        else:
            assert not saved and not seen
    assert all_ranks(True)


def test_restores_into_the_callers_numpy_arrays_make_no_slow_kernel_copy(shared_dir, monkeypatch):
    """numpy's large arrays start 16 bytes past a page: reads go through io/bounce.py."""
    from hpckpt.io import bounce

    _rank, size = world()
    mesh = hpckpt.create_mesh([("x", size)])
    lay = Layout(["x", UNSHARDED], mesh)
    shape = (512 * size, 1024)  # 2 MiB of float32 per rank, read directly
    full = np.random.default_rng(11).random(shape, dtype=np.float32)
    mine = np.empty(lay.local_shape(shape), np.float32)  # the caller's memory
    mine[...] = full[lay.local_slices(shape)]
    v = hpckpt.Variable.from_local(mine, lay, shape, copy=False)
    ck = hpckpt.Checkpoint(u=v)
    path = ck.write(os.path.join(shared_dir, "aligned"))
    seen = record_preadv(monkeypatch, bounce)
    mine[...] = 0
    ck.read(path).assert_consumed()
    big = [(a, o) for a, o, n in seen if n >= bounce.MIN_BOUNCE_READ]
    with Agreed():
        assert v.local is mine and np.array_equal(mine, full[lay.local_slices(shape)])
        assert big, "the shard was read directly"
        assert not [c for c in big if bounce.slow_distance(*c)]
