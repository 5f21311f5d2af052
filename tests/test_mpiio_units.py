"""Pure logic of the MPI-IO planner: contiguous runs and piece splitting."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest

from hpckpt.io.mpiio import Piece, split_piece


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
            assert p.file_run == brute_run(g, start, shape, 4, 1000), (start, shape)


def test_split_piece_rows_cover_the_piece():
    a = np.arange(100 * 8, dtype=np.float64).reshape(100, 8)
    parts = split_piece(Piece(0, (300, 8), (50, 0), a), max_bytes=8 * 8 * 7)
    assert sum(p.array.shape[0] for p in parts) == 100
    assert [p.start[0] for p in parts][:2] == [50, 57]
    assert all(p.array.base is not None for p in parts)  # views, no copies


def test_runs_cover_exactly_the_hyperslab():
    from hpckpt.io.mpiio import _runs

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


def _row_blocks(shape, cuts):
    """Saved slices of a (rows, ...) tensor cut into row blocks at ``cuts``."""
    edges = [0, *cuts, shape[0]]
    zeros = [0] * (len(shape) - 1)
    return [((a, *zeros), (b - a, *shape[1:])) for a, b in itertools.pairwise(edges)]


def _entry(data, slices, algorithm="crc32c"):
    from hpckpt.io.checksum import checksum
    from hpckpt.io.index import TensorEntry
    from hpckpt.io.slicing import ListedSlicing

    crcs = [checksum(data[tuple(map(slice, st, np.add(st, sh)))], algorithm) for st, sh in slices]
    return TensorEntry(
        "t",
        "t",
        data.dtype,
        data.shape,
        0,
        None,
        ListedSlicing(np.array([s[0] for s in slices]), np.array([s[1] for s in slices])),
        np.array(crcs, dtype=np.uint32),
    )


def test_slice_check_fuses_the_crc_with_the_chunks_as_they_arrive():
    """A saved slice is checksummed chunk by chunk as it is read (in order); out-of-order
    chunks fall back to a whole pass; a flipped byte anywhere is caught and named."""
    import pytest

    from hpckpt.errors import CorruptCheckpointError
    from hpckpt.io.checksum import checksum_function
    from hpckpt.io.verify import SliceCheck

    rng = np.random.default_rng(1)
    data = rng.standard_normal((37, 11))
    entry = _entry(data, _row_blocks(data.shape, [5, 20]))
    fn = checksum_function("crc32c")
    for i, (lo_row, hi_row) in enumerate([(0, 5), (5, 20), (20, 37)]):
        for chunk in (8, 100, 1 << 20):
            for flip in (None, 0, 17, -1):
                buf = data[lo_row:hi_row].copy()
                if flip is not None:
                    buf.reshape(-1).view(np.uint8)[flip] ^= 1
                c = SliceCheck(entry, i, buf, fn)
                chunks = list(range(0, buf.nbytes, chunk))
                if chunk == 100:
                    chunks.reverse()  # out of order: verified by a whole pass
                for lo in chunks:
                    c.update(lo, min(lo + chunk, buf.nbytes))
                if flip is None:
                    c.finish()
                else:
                    with pytest.raises(CorruptCheckpointError, match=f"start \\[{lo_row}, 0\\]"):
                        c.finish()


def test_verify_whole_checks_strided_slices_and_names_the_bad_one():
    import pytest

    from hpckpt.errors import CorruptCheckpointError
    from hpckpt.io.verify import verify_whole

    data = np.arange(8 * 6, dtype=np.int32).reshape(8, 6)
    entry = _entry(data, [((0, 0), (8, 3)), ((0, 3), (8, 3))], "crc32")  # column blocks
    verify_whole(entry, data.copy(), "crc32")
    bad = data.copy()
    bad[7, 5] += 1
    with pytest.raises(CorruptCheckpointError, match=r"slice start \[0, 3\]"):
        verify_whole(entry, bad, "crc32")


def test_sieved_reads_fill_strided_pieces_exactly(tmp_path):
    """posix_io reads strided pieces through one preadv per span (gaps into scratch);
    the result equals the hyperslab, for pieces that qualify and pieces that do not."""
    from hpckpt.io.mpiio import _sievable, posix_io

    rng = np.random.default_rng(3)
    g = (37, 16, 6)
    data = rng.standard_normal(g)
    path = tmp_path / "f.bin"
    offset = 4096
    with open(path, "wb") as f:
        f.write(b"\xff" * offset + data.tobytes())
    cases = [
        ((0, 0, 0), (37, 8, 6)),
        ((3, 8, 0), (30, 8, 6)),
        ((0, 0, 2), (37, 16, 3)),
        ((5, 2, 1), (7, 5, 4)),
        ((0, 0, 0), (37, 16, 6)),
    ]
    for start, shape in cases:
        out = np.zeros(shape)
        p = Piece(offset, g, start, out)
        seen = []
        posix_io(
            str(path),
            [p],
            write=False,
            chunk_bytes=512,
            listener=lambda q, seen=seen: lambda lo, hi: seen.append((lo, hi)),
        )
        want = data[tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))]
        assert np.array_equal(out, want), (start, shape, _sievable(p))
        if seen:  # chunks reported in order, tiling the piece's memory
            assert seen[0][0] == 0 and seen[-1][1] == out.nbytes
            assert all(a[1] == b[0] for a, b in itertools.pairwise(seen))
    assert _sievable(Piece(offset, g, (0, 0, 0), np.zeros((37, 8, 6))))  # half the rows: 2x
    assert not _sievable(Piece(offset, g, (0, 0, 0), np.zeros((37, 4, 6))))  # 4x: per run


@pytest.mark.parametrize("skew", [0, 16])  # 16: the kernel's slow copy, through the bounce buffer
def test_streamed_read_tiles_the_run_reports_progress_and_fills_it(tmp_path, skew) -> None:
    from hpckpt.io import mpiio

    n = (1 << 20) + 4096 + 123
    data = np.random.default_rng(3).integers(0, 256, n + 8192, dtype=np.uint8)
    path = tmp_path / "f.bin"
    path.write_bytes(data.tobytes())
    raw = np.zeros(n + 3 * 4096, dtype=np.uint8)
    first = (-raw.ctypes.data) % 4096 + skew  # page offset of the file offset 8192, + skew
    dest = raw[first : first + n]
    told: list[tuple[int, int]] = []
    moved: list[int] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        mpiio._streamed_read(
            fd,
            dest.data.cast("B"),
            8192,
            64 << 10,
            lambda lo, hi: told.append((lo, hi)),
            moved.append,
        )
    finally:
        os.close(fd)
    assert np.array_equal(dest, data[8192 : 8192 + n])
    assert told[0][0] == 0 and told[-1][1] == n
    assert all(a[1] == b[0] and b[1] - b[0] <= 64 << 10 for a, b in itertools.pairwise(told))
    assert sum(moved) == n


def test_streamed_read_of_a_truncated_file_raises(tmp_path) -> None:
    from hpckpt.io import mpiio

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100_000)
    dest = np.zeros(200_000, dtype=np.uint8)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError, match="short read"):
            mpiio._streamed_read(fd, dest.data.cast("B"), 0, 64 << 10, lambda lo, hi: None)
    finally:
        os.close(fd)
