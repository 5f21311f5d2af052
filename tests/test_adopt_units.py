"""Pure and single-process parts of issue 13: the tiling check naming ranks, strided
buffers (checksums, file runs, direct IO without copies), Variable.from_local's
errors and zero-copy conversions, dtypes, RankState's default reshard, and the
command line's values, ``old -> new`` diffs and byte progress."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout
from hpckpt.dtypes import check_dtype, logical_name, storage_dtype
from hpckpt.io import tiling_problem
from hpckpt.io.mpiio import Piece, _runs, posix_io
from hpckpt.io.strided import c_order_blocks, crc_of, memory_split

pytestmark = pytest.mark.skipif(
    MPI.COMM_WORLD.Get_size() > 1, reason="serial test: run without mpirun"
)


# --- tiling -------------------------------------------------------------------------


def test_tiling_accepts_replicas_and_empty_boxes():
    boxes = [((0, 0), (2, 4)), ((0, 0), (2, 4)), ((2, 0), (3, 4)), ((5, 1), (0, 3))]
    assert tiling_problem((5, 4), boxes) is None
    assert tiling_problem((), [((), ()), ((), ())]) is None


def test_tiling_names_overlapping_ranks():
    boxes = [((0, 0), (3, 4)), ((2, 0), (3, 4))]
    msg = tiling_problem((5, 4), boxes)
    assert msg is not None
    assert "the boxes of ranks [0] and [1] overlap (at start [2, 0], shape [1, 4])" in msg


def test_tiling_names_the_gap_and_its_neighbours():
    boxes = [((0, 0), (2, 4)), ((3, 0), (2, 4)), ((0, 0), (2, 4))]
    msg = tiling_problem((5, 4), boxes)
    assert msg is not None
    assert "no rank's box covers the elements at start [2, 0], shape [1, 4]" in msg
    assert "ranks [0, 1, 2] border it" in msg


def test_tiling_names_boxes_outside():
    msg = tiling_problem((5, 4), [((0, 0), (5, 4)), ((4, 2), (2, 2))])
    assert msg is not None and "ranks [1] lie outside" in msg


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=5))
def test_tiling_agrees_with_a_brute_force_count(rows):
    boxes = [((a, 0), (max(b - a, 0), 3)) for a, b in rows]
    count = np.zeros((6, 3), int)
    for (a, _), (n, _) in set(boxes):
        count[a : a + n] += 1
    ok = all(a + n <= 6 for (a, _), (n, _) in boxes) and np.all(count == 1)
    assert (tiling_problem((6, 3), boxes) is None) == bool(ok)


# --- strided buffers ----------------------------------------------------------------


VIEWS = {
    "interior": lambda g: g[1:-1, 1:-1],
    "columns": lambda g: g[:, 2:5],
    "every other row": lambda g: g[::2, 1:-1],
    "strided last dim": lambda g: g[1:-1, ::2],
    "reversed": lambda g: g[::-1, 1:-1],
    "contiguous": lambda g: g[2:4],
}


@pytest.mark.parametrize("name", list(VIEWS))
def test_checksums_of_strided_arrays_match_the_contiguous_bytes(name):
    g = np.arange(9 * 8, dtype=np.float32).reshape(9, 8)
    a = VIEWS[name](g)
    want = zlib.crc32(np.ascontiguousarray(a).tobytes())
    assert crc_of(a, zlib.crc32) == want
    assert b"".join(bytes(b) for b in c_order_blocks(a, max_bytes=20)) == a.tobytes()


def test_memory_split():
    g = np.zeros((6, 7, 5))
    assert memory_split(g) == 0
    assert memory_split(g[1:-1]) == 0
    assert memory_split(g[:, 1:-1]) == 1  # each g[i] block is contiguous
    assert memory_split(g[:, :, 1:-1]) == 2
    assert memory_split(g[:, :, ::2]) == 3


@pytest.mark.parametrize("name", ["interior", "columns", "reversed", "strided last dim"])
def test_posix_io_writes_and_reads_strided_arrays_in_place(tmp_path, name):
    """Runs are cut where memory is not contiguous: the file gets the C-order bytes, and a
    read lands in the strided destination without touching the rest of its array."""
    g = np.arange(9 * 8, dtype=np.int64).reshape(9, 8)
    a = VIEWS[name](g)
    shape = (20, a.shape[1] + 3)
    start = (4, 2)
    path = str(tmp_path / "f")
    with open(path, "wb") as f:
        f.write(b"\0" * (100 + 8 * shape[0] * shape[1]))
    piece = Piece(100, shape, start, a)
    runs = _runs(piece)
    assert all(m.flags.c_contiguous for _, m in runs)
    posix_io(path, [piece], write=True)
    on_disk = np.fromfile(path, dtype=np.int64, offset=100).reshape(shape)
    box = (slice(4, 4 + a.shape[0]), slice(2, 2 + a.shape[1]))
    assert np.array_equal(on_disk[box], a)
    on_disk[box] = 0
    assert not on_disk.any()  # nothing outside the box
    dest = np.full_like(g, -1)
    d = VIEWS[name](dest)
    posix_io(path, [Piece(100, shape, start, d)], write=False)
    assert np.array_equal(d, a)
    outside = np.ones(g.shape, bool)
    VIEWS[name](outside)[...] = False
    assert np.all(dest[outside] == -1)


# --- Variable.from_local, dtypes ----------------------------------------------------


@pytest.fixture
def mesh():
    return hpckpt.create_mesh([("x", 1), ("y", 1)], comm=MPI.COMM_SELF)


def test_shape_mismatch_names_the_block_rule_and_the_way_out(mesh):
    lay = Layout(["x", "y"], mesh)
    with pytest.raises(ValueError) as ei:
        hpckpt.Variable.from_local(np.zeros((30, 23)), lay, (61, 47))
    msg = str(ei.value)
    assert "(30, 23)" in msg and "(61, 47)" in msg and "n % k" in msg
    assert "splits=" in msg and "offset=" in msg
    split = Layout(["x", "y"], mesh, splits={"x": [0, 61], "y": [0, 47]})
    with pytest.raises(ValueError, match="own splits"):
        hpckpt.Variable.from_local(np.zeros((30, 23)), split, (61, 47))


def test_from_local_box_arguments():
    with pytest.raises(ValueError, match="needs offset="):
        hpckpt.Variable.from_local(np.zeros((2, 3)), global_shape=(4, 3))
    with pytest.raises(ValueError, match="does not fit"):
        hpckpt.Variable.from_local(np.zeros((2, 3)), global_shape=(4, 3), offset=(3, 0))
    with pytest.raises(ValueError, match="global_shape"):
        hpckpt.Variable.from_local(np.zeros((2, 3)))
    v = hpckpt.Variable.from_local(np.ones((4, 3)), global_shape=(4, 3))
    assert v.offset == (0, 0) and v.layout is None
    assert "offset=(0, 0)" in repr(v)


def test_from_local_copies_unless_told_not_to(mesh):
    lay = Layout(["x", UNSHARDED], mesh)
    g = np.zeros((5, 6))
    inner = g[1:-1, 1:-1]
    copied = hpckpt.Variable.from_local(inner, lay, (3, 4))
    aliased = hpckpt.Variable.from_local(inner, lay, (3, 4), copy=False)
    assert not np.shares_memory(copied.local, g)
    assert aliased.local is inner
    aliased.local[0, 0] = 4.0
    assert g[1, 1] == 4.0
    with pytest.raises(TypeError, match="native byte order"):
        hpckpt.Variable.from_local(np.zeros((3, 4), ">f8"), lay, (3, 4), copy=False)


def test_dtypes():
    bf = np.dtype(ml_dtypes.bfloat16)
    assert check_dtype(bf) == bf and logical_name(bf) == "bfloat16"
    assert storage_dtype(bf) == np.uint16
    assert storage_dtype(np.dtype(ml_dtypes.float8_e5m2)) == np.uint8
    assert storage_dtype(np.dtype(np.float32)) == np.float32
    with pytest.raises(TypeError, match="ml_dtypes float"):
        check_dtype(np.dtype(ml_dtypes.int4))
    with pytest.raises(TypeError):
        check_dtype(np.dtype("U3"))


def test_rank_state_default_reshard_raises_a_clear_error():
    class R(hpckpt.RankState):
        pass

    with pytest.raises(hpckpt.CheckpointError, match=r"saved by 4 ranks.*reshard\(saved\)"):
        R().reshard(["a", "b", "c", "d"])


# --- command line ---------------------------------------------------------------------


class Text(hpckpt.PythonState):
    def __init__(self, text):
        self.text = text

    def serialize(self):
        return self.text

    def deserialize(self, s):
        self.text = s


def hp(*args):
    return subprocess.run(
        [sys.executable, "-m", "hpckpt.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    comm = MPI.COMM_SELF
    mesh = hpckpt.create_mesh([("x", 1)], comm=comm)
    step = hpckpt.Variable(np.int64(160), Layout([], mesh))
    bf = hpckpt.Variable(np.float32(1.5).astype(ml_dtypes.bfloat16), Layout([], mesh))
    w = hpckpt.Variable(np.arange(4.0), Layout([UNSHARDED], mesh))
    it = Text('{"pos": 160}\x1b[31m' + "x" * 300)
    ck = hpckpt.DTensorCheckpoint(mesh, step=step, it=it, bf=bf, w=w)
    a = ck.write(str(d / "a"))
    step.assign(np.int64(200))
    it.text = '{"pos": 200}'
    w2 = hpckpt.Variable(np.arange(4.0), Layout(["x"], mesh))  # same values, other layout
    b = hpckpt.DTensorCheckpoint(mesh, step=step, it=it, bf=bf, w=w2).write(str(d / "b"))
    return a, b


def test_inspect_shows_scalars_and_state_text(two):
    r = hp("inspect", two[0])
    assert r.returncode == 0, r.stderr
    assert "step: int64 []" in r.stdout and "= 160" in r.stdout
    assert "bf: bfloat16 []" in r.stdout and "= 1.5" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("it:"))
    assert '{"pos": 160}\\x1b[31m' in line  # escaped, not interpreted
    assert "... (" in line and len(line) < 200  # truncated
    doc = json.loads(hp("inspect", two[0], "--json").stdout)
    node = next(c for c in doc["tree"]["children"] if c["name"] == "step")
    assert node["value"] == 160


def test_diff_prints_old_and_new_once_per_tensor(two):
    r = hp("diff", "--all", two[0], two[1])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "step/.ATTRIBUTES/VARIABLE_VALUE  160 -> 200" in out
    assert 'it/.ATTRIBUTES/py_state  \'{"pos": 160}' in out and "-> '{\"pos\": 200}'" in out
    for key in ("step/", "it/", "bf/", "w/"):
        assert sum(line.split()[2].startswith(key) for line in out.splitlines()[2:-1]) == 1, out
    assert "w/.ATTRIBUTES/VARIABLE_VALUE  float64 [4]  (layout changed)" in out


def test_serial_reads_report_progress_in_bytes(tmp_path):
    from hpckpt import io

    mesh = hpckpt.create_mesh([("x", 1)], comm=MPI.COMM_SELF)
    n = (9 << 20) // 8  # more than one read chunk
    v = hpckpt.Variable(np.ones(n), Layout([UNSHARDED], mesh))
    p = hpckpt.DTensorCheckpoint(mesh, v=v).write(str(tmp_path / "c"))
    index = io.load_index(p)
    e = index.tensors["v/.ATTRIBUTES/VARIABLE_VALUE"]
    got = []
    io.read_tensor_serial(p, index, e, on_bytes=got.append)
    assert len(got) >= 2 and sum(got) == e.nbytes
    from hpckpt.cli.verify import verify_checkpoint

    rep = verify_checkpoint(p, progress=False)
    assert rep["ok"] and rep["bytes_read"] == e.nbytes


def test_neither_ml_dtypes_nor_torch_is_imported_by_hpckpt():
    code = (
        "import sys, hpckpt, hpckpt.cli; print('ml_dtypes' in sys.modules, 'torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False False", r.stderr
