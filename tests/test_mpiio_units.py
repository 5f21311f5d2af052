"""Pure logic of the MPI-IO planner: contiguous runs and piece splitting."""

from __future__ import annotations

import itertools

import numpy as np

from hpckpt.io._mpiio import Piece, _file_run, split_piece


def brute_run(gshape, start, shape, itemsize, offset):
    """The first byte if the hyperslab's bytes are one contiguous run, else None."""
    idx = np.arange(int(np.prod(gshape))).reshape(gshape)
    sl = idx[tuple(slice(a, a + n) for a, n in zip(start, shape, strict=False))].reshape(-1)
    if sl.size and np.all(np.diff(sl) == 1):
        return offset + int(sl[0]) * itemsize
    return None


def test_file_run_matches_brute_force():
    g = (3, 4, 2)
    for start in itertools.product(range(3), range(4), range(2)):
        for shape in itertools.product(range(1, 4), range(1, 5), range(1, 3)):
            if any(a + n > m for a, n, m in zip(start, shape, g, strict=False)):
                continue
            p = Piece(1000, g, start, np.zeros(shape, np.float32))
            assert _file_run(p) == brute_run(g, start, shape, 4, 1000), (start, shape)


def test_split_piece_rows_cover_the_piece():
    a = np.arange(100 * 8, dtype=np.float64).reshape(100, 8)
    parts = split_piece(Piece(0, (300, 8), (50, 0), a), max_bytes=8 * 8 * 7)
    assert sum(p.array.shape[0] for p in parts) == 100
    assert [p.start[0] for p in parts][:2] == [50, 57]
    assert all(p.array.base is not None for p in parts)  # views, no copies


def test_runs_cover_exactly_the_hyperslab():
    from hpckpt.io._mpiio import _runs

    g = (4, 5, 6)
    rng = np.random.default_rng(0)
    for _ in range(60):
        start = tuple(int(rng.integers(0, n)) for n in g)
        shape = tuple(int(rng.integers(1, n - a + 1)) for a, n in zip(start, g, strict=True))
        arr = rng.standard_normal(shape)
        p = Piece(64, g, start, arr)
        flat = np.zeros(int(np.prod(g)))
        for off, mem in _runs(p):
            i = (off - 64) // 8
            flat[i : i + mem.size] = mem
        want = np.zeros(g)
        want[tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))] = arr
        assert np.array_equal(flat.reshape(g), want)
