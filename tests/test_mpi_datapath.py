"""The collective data path under MPI: write, read, resharding, agreed errors."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from conftest import Agreed, all_ranks
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout
from hpckpt.io import load_index, wait_removals

pytestmark = pytest.mark.mpi(min_size=2)


def mesh2d():
    size = MPI.COMM_WORLD.Get_size()
    shape = (2, size // 2) if size % 2 == 0 else (size, 1)
    return hpckpt.create_mesh([("x", shape[0]), ("y", shape[1])])


def model_values():
    rng = np.random.default_rng(42)
    return {
        "one_dim": rng.standard_normal((8, 6)).astype(np.float32),
        "both_dims": rng.standard_normal((6, 10)),
        "uneven": np.arange(7 * 5, dtype=np.int32).reshape(7, 5),
        "tiny": np.array([1.5, 2.5, 3.5]),  # empty shards on 4 ranks
        "replicated": rng.integers(0, 100, (5, 3)).astype(np.int64),
        "scalar": np.float64(2.75),
        "flags": np.array([True, False, True, True, False]),
        "half": rng.standard_normal(9).astype(np.float16),
        "cplx": (rng.standard_normal(4) + 1j * rng.standard_normal(4)).astype(np.complex64),
        "u16": np.arange(11, dtype=np.uint16),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }


def layouts(mesh):
    size = MPI.COMM_WORLD.Get_size()
    flat = hpckpt.create_mesh([("r", size)])
    return {
        "one_dim": Layout(["x", UNSHARDED], mesh),
        "both_dims": Layout(["y", "x"], mesh),
        "uneven": Layout(["x", "y"], mesh),
        "tiny": Layout(["r"], flat),
        "replicated": Layout.replicated(mesh, 2),
        "scalar": Layout([], mesh),
        "flags": Layout(["y"], mesh),
        "half": Layout(["r"], flat),
        "cplx": Layout(["x"], mesh),
        "u16": Layout(["r"], flat),
        "empty": Layout(["x", "y"], mesh),
    }


def make_vars(values, lays):
    return {k: hpckpt.Variable(v, lays[k], name=k) for k, v in values.items()}


def test_write_read_roundtrip_and_plain_h5py(shared_dir):
    comm = MPI.COMM_WORLD
    mesh = mesh2d()
    values = model_values()
    vs = make_vars(values, layouts(mesh))
    ckpt = hpckpt.Checkpoint(**vs)
    prefix = os.path.join(shared_dir, "model")
    assert ckpt.write(prefix) == prefix

    # Plain serial h5py sees every tensor as its global array.
    with Agreed():
        if comm.rank == 0:
            index = json.load(open(prefix + ".index.json"))
            with h5py.File(os.path.join(shared_dir, index["data_file"]["name"]), "r") as f:
                for k, want in values.items():
                    key = f"{k}/.ATTRIBUTES/VARIABLE_VALUE"
                    ds = f[index["tensors"][key]["dataset"]]
                    assert ds.shape == np.shape(want), k
                    assert ds.dtype == np.asarray(want).dtype, k
                    assert np.array_equal(ds[()], want), k

    for v in vs.values():
        v.local[...] = 0
    status = ckpt.read(prefix)
    status.assert_consumed()
    with Agreed():
        for k, want in values.items():
            assert np.array_equal(vs[k].numpy(), want), k
            assert vs[k].dtype == np.asarray(want).dtype


def test_replicated_tensors_are_written_once(shared_dir):
    comm = MPI.COMM_WORLD
    mesh = mesh2d()
    values = model_values()
    ckpt = hpckpt.Checkpoint(**make_vars(values, layouts(mesh)))
    prefix = os.path.join(shared_dir, "once")
    ckpt.write(prefix)
    with Agreed():
        if comm.rank == 0:
            index = load_index(prefix)
            for key, t in index.tensors.items():
                cover = np.zeros(t.shape, dtype=int)
                for s in t.slices:
                    cover[
                        tuple(slice(a, a + n) for a, n in zip(s.start, s.shape, strict=True))
                    ] += 1
                assert (cover == 1).all(), key  # every element exactly once


def test_restore_with_other_layouts_on_same_ranks(shared_dir):
    size = MPI.COMM_WORLD.Get_size()
    values = model_values()
    mesh = mesh2d()
    prefix = hpckpt.Checkpoint(**make_vars(values, layouts(mesh))).write(
        os.path.join(shared_dir, "src")
    )
    other = hpckpt.create_mesh([("a", 1), ("b", size)])
    new_layouts = {
        "one_dim": Layout([UNSHARDED, "b"], other),
        "both_dims": Layout(["b", UNSHARDED], other),
        "uneven": Layout(["a", "b"], other),
        "tiny": Layout.replicated(other, 1),
        "replicated": Layout(["b", "a"], other),
        "scalar": Layout([], other),
        "flags": Layout(["b"], other),
        "half": Layout.replicated(other, 1),
        "cplx": Layout(["b"], other),
        "u16": Layout(["a"], other),
        "empty": Layout(["b", UNSHARDED], other),
    }
    zeros = {k: np.zeros_like(np.asarray(v)) for k, v in values.items()}
    vs = make_vars(zeros, new_layouts)
    hpckpt.Checkpoint(**vs).read(prefix).assert_consumed()
    with Agreed():
        for k, want in values.items():
            assert np.array_equal(vs[k].numpy(), want), k


@pytest.mark.parametrize("k", [1, 2, 3])
def test_restore_on_fewer_ranks(shared_dir, k):
    comm = MPI.COMM_WORLD
    if k >= comm.size:
        pytest.skip(f"needs more than {k} ranks")
    values = model_values()
    prefix = hpckpt.Checkpoint(**make_vars(values, layouts(mesh2d()))).write(
        os.path.join(shared_dir, "wide")
    )
    sub = comm.Split(0 if comm.rank < k else MPI.UNDEFINED, comm.rank)
    ok = True
    if sub != MPI.COMM_NULL:
        mesh = hpckpt.create_mesh([("z", k)], comm=sub)
        vs = {
            name: hpckpt.Variable(
                np.zeros_like(np.asarray(v)),
                Layout(["z"] + [UNSHARDED] * (np.ndim(v) - 1), mesh)
                if np.ndim(v)
                else Layout([], mesh),
            )
            for name, v in values.items()
        }
        hpckpt.DTensorCheckpoint(mesh, **vs).read(prefix).assert_consumed()
        ok = all(np.array_equal(vs[n].numpy(), values[n]) for n in values)
        sub.Free()
    assert all_ranks(ok)


def test_shape_mismatch_raises_on_every_rank_and_changes_nothing(shared_dir):
    mesh = mesh2d()
    v = hpckpt.Variable(np.arange(12.0).reshape(4, 3), Layout(["x", UNSHARDED], mesh))
    w = hpckpt.Variable(np.arange(5.0), Layout(["y"], mesh))
    prefix = hpckpt.Checkpoint(v=v, w=w).write(os.path.join(shared_dir, "m"))
    bad = hpckpt.Variable(np.full((3, 4), 9.0), Layout(["x", UNSHARDED], mesh))
    w2 = hpckpt.Variable(np.full(5, 9.0), Layout(["y"], mesh))
    raised = None
    try:
        hpckpt.Checkpoint(v=bad, w=w2).read(prefix)
    except hpckpt.CheckpointError as e:
        raised = str(e)
    assert all_ranks(raised is not None and "shape mismatch" in raised and "(4, 3)" in raised)
    # every rank got the same message, and nothing was assigned
    assert len(set(MPI.COMM_WORLD.allgather(raised))) == 1
    assert all_ranks((bad.local == 9.0).all() and (w2.local == 9.0).all())


def test_dtype_mismatch_raises_checkpoint_error(shared_dir):
    mesh = mesh2d()
    v = hpckpt.Variable(np.arange(4.0), Layout(["x"], mesh))
    prefix = hpckpt.Checkpoint(v=v).write(os.path.join(shared_dir, "d"))
    w = hpckpt.Variable(np.arange(4, dtype=np.int32), Layout(["x"], mesh))
    with pytest.raises(hpckpt.CheckpointError, match="dtype mismatch"):
        hpckpt.Checkpoint(v=w).read(prefix)


def test_missing_checkpoint_is_not_found_everywhere(shared_dir):
    v = hpckpt.Variable(np.arange(4.0))
    with pytest.raises(hpckpt.NotFoundError, match="nope"):
        hpckpt.Checkpoint(v=v).read(os.path.join(shared_dir, "nope"))
    assert isinstance(hpckpt.NotFoundError("x"), FileNotFoundError)


class Flaky(hpckpt.PythonState):
    def __init__(self, bad_rank):
        self.bad_rank = bad_rank
        self.value = "ok"

    def serialize(self):
        if MPI.COMM_WORLD.rank == self.bad_rank:
            raise RuntimeError("disk of thoughts is full")
        return self.value

    def deserialize(self, s):
        self.value = s


def test_failure_on_one_rank_is_the_same_error_on_all(shared_dir):
    comm = MPI.COMM_WORLD
    bad = comm.size - 1
    v = hpckpt.Variable(np.arange(6.0))
    ckpt = hpckpt.Checkpoint(v=v, it=Flaky(bad))
    msg = None
    try:
        ckpt.write(os.path.join(shared_dir, "f"))
    except hpckpt.CheckpointError as e:
        msg = str(e)
        assert [f.rank for f in e.failures] == [bad]
        assert e.failures[0].type == "RuntimeError"
    assert all_ranks(msg is not None and f"rank {bad}: RuntimeError: disk of thoughts" in msg)
    assert len(set(comm.allgather(msg))) == 1
    assert all_ranks(not os.path.exists(os.path.join(shared_dir, "f.index.json")))


def test_python_state_roundtrip(shared_dir):
    st = Flaky(bad_rank=-1)
    st.value = "position=17"
    ckpt = hpckpt.Checkpoint(it=st)
    p = ckpt.write(os.path.join(shared_dir, "ps"))
    st.value = "changed"
    ckpt.read(p).assert_consumed()
    assert all_ranks(st.value == "position=17")


def test_overwrite_keeps_one_data_file(shared_dir):
    comm = MPI.COMM_WORLD
    v = hpckpt.Variable(np.arange(10.0), Layout(["x"], hpckpt.create_mesh()))
    ckpt = hpckpt.Checkpoint(v=v)
    p = os.path.join(shared_dir, "ow")
    ckpt.write(p)
    v.assign(np.arange(10.0) * 2)
    ckpt.write(p)
    if comm.rank == 0:
        wait_removals()  # rank 0 deletes old data files in the background
    files = sorted(os.listdir(shared_dir)) if comm.rank == 0 else None
    files = comm.bcast(files)
    assert len([f for f in files if f.startswith("ow.data-")]) == 1
    v.assign(np.zeros(10))
    ckpt.read(p)
    assert all_ranks(np.array_equal(v.numpy(), np.arange(10.0) * 2))


def test_independent_io_roundtrip(shared_dir):
    """collective=False moves every rank's runs with pwrite/preadv; same result."""
    mesh = mesh2d()
    values = model_values()
    opts = hpckpt.CheckpointOptions(collective=False)
    vs = make_vars(values, layouts(mesh))
    p = hpckpt.Checkpoint(**vs).write(os.path.join(shared_dir, "indep"), options=opts)
    zeros = make_vars({k: np.zeros_like(np.asarray(v)) for k, v in values.items()}, layouts(mesh))
    hpckpt.Checkpoint(**zeros).read(p, options=opts).assert_consumed()
    with Agreed():
        for k, want in values.items():
            assert np.array_equal(zeros[k].numpy(), want), k
    # and the collective reader reads what the independent writer wrote
    again = make_vars({k: np.zeros_like(np.asarray(v)) for k, v in values.items()}, layouts(mesh))
    hpckpt.Checkpoint(**again).read(p).assert_consumed()
    assert all_ranks(all(np.array_equal(again[k].numpy(), values[k]) for k in values))


IO_PATHS = {
    "mpiio": hpckpt.CheckpointOptions(direct_io_threshold=None),  # all through Write_all
    "mixed": hpckpt.CheckpointOptions(direct_io_threshold=16),  # contiguous >= 16 B direct
    "posix": hpckpt.CheckpointOptions(collective=False),
}


@pytest.mark.parametrize("writer", list(IO_PATHS))
def test_io_paths_read_each_others_checkpoints(shared_dir, writer):
    """Every IO path (collective MPI-IO, direct runs beside it, independent) reads
    what every other wrote, onto the saved layouts and onto other ones, in place
    and staged."""
    size = MPI.COMM_WORLD.Get_size()
    mesh = mesh2d()
    values = model_values()
    p = hpckpt.Checkpoint(**make_vars(values, layouts(mesh))).write(
        os.path.join(shared_dir, f"w-{writer}"), options=IO_PATHS[writer]
    )
    other = hpckpt.create_mesh([("a", size)])
    resharded = {k: Layout.replicated(other, np.ndim(v)) for k, v in values.items()}
    resharded["one_dim"] = Layout([UNSHARDED, "a"], other)  # strided pieces
    resharded["both_dims"] = Layout(["a", UNSHARDED], other)
    for reader, opts in IO_PATHS.items():
        for lays in (layouts(mesh), resharded):
            for in_place in (True, False):
                o = hpckpt.CheckpointOptions(
                    collective=opts.collective,
                    direct_io_threshold=opts.direct_io_threshold,
                    restore_in_place=in_place,
                )
                zeros = make_vars({k: np.zeros_like(v) for k, v in values.items()}, lays)
                hpckpt.Checkpoint(**zeros).read(p, options=o).assert_consumed()
                ok = all(np.array_equal(zeros[k].numpy(), values[k]) for k in values)
                assert all_ranks(ok), (writer, reader, in_place)


def test_direct_io_of_large_pieces_roundtrip(shared_dir):
    """Pieces above the default direct-IO threshold (1 MiB) beside small ones."""
    comm = MPI.COMM_WORLD
    mesh = hpckpt.create_mesh()
    rng = np.random.default_rng(comm.size)
    big = rng.standard_normal((comm.size * 1024 + 3, 1024))  # > 8 MiB per rank, uneven
    small = rng.standard_normal((comm.size * 2 + 1, 7))
    cols = rng.standard_normal((64, comm.size * 4096))  # strided pieces of 32 KiB rows
    vs = {
        "big": hpckpt.Variable(big, Layout(["x", UNSHARDED], mesh)),
        "small": hpckpt.Variable(small, Layout(["x", UNSHARDED], mesh)),
        "cols": hpckpt.Variable(cols, Layout([UNSHARDED, "x"], mesh)),
    }
    p = hpckpt.Checkpoint(**vs).write(os.path.join(shared_dir, "big"))
    for v in vs.values():
        v.local[...] = 0
    hpckpt.Checkpoint(**vs).read(p).assert_consumed()
    got = {k: v.numpy() for k, v in vs.items()}
    assert all_ranks(
        np.array_equal(got["big"], big)
        and np.array_equal(got["small"], small)
        and np.array_equal(got["cols"], cols)
    )


def test_ranks_with_different_layouts_never_commit_a_hole(shared_dir):
    """One rank builds its Variable with another layout (same shape and dtype): the save
    fails on every rank, names the ranks that differ, and commits nothing."""
    comm = MPI.COMM_WORLD
    mesh = hpckpt.create_mesh([("x", comm.size)])
    lay = Layout(["x", UNSHARDED], mesh) if comm.rank else Layout([UNSHARDED, "x"], mesh)
    v = hpckpt.Variable(np.arange(48.0 * comm.size).reshape(8 * comm.size, 6), lay)
    prefix = os.path.join(shared_dir, "holes")
    msg = None
    try:
        hpckpt.Checkpoint(v=v).write(prefix)
    except hpckpt.CheckpointError as e:
        msg = str(e)
    assert all_ranks(msg is not None and "layouts" in msg), msg
    assert len(set(comm.allgather(msg))) == 1
    assert all_ranks(not os.path.exists(prefix + ".index.json"))


def test_plan_cache_reuses_the_structure_and_notices_any_change(shared_dir):
    """Saves of the same structure reuse rank 0's file template and every rank's offsets;
    any change (a tensor, a shape, an option) on all ranks makes a fresh plan; every
    checkpoint restores bit-identically and is a plain HDF5 file."""
    from hpckpt.io import write as w

    comm = MPI.COMM_WORLD
    mesh = hpckpt.create_mesh([("x", comm.size)])

    def model(extra=False, rows=12):
        vs = {
            "a": hpckpt.Variable(
                np.arange(rows * 5.0).reshape(rows, 5), Layout(["x", UNSHARDED], mesh)
            ),
            "b": hpckpt.Variable(np.arange(7, dtype=np.int32)),
        }
        if extra:
            vs["c"] = hpckpt.Variable(np.ones((3, 2), np.float32))
        return vs

    cases = [
        (model(), None),
        (model(), None),  # a cache hit
        (model(extra=True), None),  # one more tensor
        (model(rows=13), None),  # another shape
        (model(rows=13), hpckpt.CheckpointOptions(alignment=4096)),  # another option
        (model(rows=13), hpckpt.CheckpointOptions(alignment=4096)),  # a hit again
    ]
    hits = []
    for n, (vs, opts) in enumerate(cases):
        before = set(w._PLANS)
        p = hpckpt.Checkpoint(**vs).write(os.path.join(shared_dir, f"c{n}"), options=opts)
        hits.append(set(w._PLANS) == before)
        fresh = {k: hpckpt.Variable(np.zeros_like(v.numpy()), v.layout) for k, v in vs.items()}
        hpckpt.Checkpoint(**fresh).read(p).assert_consumed()
        want = {k: v.numpy() for k, v in vs.items()}
        got = {k: v.numpy() for k, v in fresh.items()}
        with Agreed():
            for k in vs:
                assert np.array_equal(got[k], want[k]), (n, k)
            if comm.rank == 0:
                data = load_index(p).data_file
                with h5py.File(os.path.join(shared_dir, data), "r") as f:
                    assert np.array_equal(f["a"][...], want["a"])
    assert all_ranks(hits == [False, True, False, False, False, True]), hits


@pytest.mark.parametrize("chunk", [1 << 16, 1 << 25], ids=["many-chunks", "one-chunk"])
def test_strided_shards_are_saved_in_contiguous_row_bands(shared_dir, chunk, monkeypatch):
    """Shards split along columns are exchanged by the ranks sharing their rows and written
    as contiguous bands (index ``rows``); they restore bit-identically onto the same and
    other layouts, and a flipped byte in a band is caught."""
    from hpckpt.io import aggregate

    monkeypatch.setattr(aggregate, "CHUNK_BYTES", chunk)
    comm = MPI.COMM_WORLD
    mesh = mesh2d()
    rng = np.random.default_rng(7)
    a = rng.standard_normal((2049, 517)).astype(np.float32)  # uneven, > 1 MiB per shard
    b = rng.integers(0, 1 << 30, (300, 2000), dtype=np.int64)
    vs = {
        "a": hpckpt.Variable(a, Layout(["x", "y"], mesh)),
        "b": hpckpt.Variable(b, Layout([UNSHARDED, "y"], mesh)),
    }
    p = hpckpt.Checkpoint(**vs).write(os.path.join(shared_dir, f"bands{chunk}"))
    with Agreed():
        doc = json.load(open(p + ".index.json"))
        strided = mesh.shape[1] > 1
        assert doc["tensors"]["a/.ATTRIBUTES/VARIABLE_VALUE"].get("rows", False) is strided
        assert doc["tensors"]["b/.ATTRIBUTES/VARIABLE_VALUE"].get("rows", False) is strided
    flat = hpckpt.create_mesh([("r", comm.size)])
    for la, lb in [
        (Layout(["x", "y"], mesh), Layout([UNSHARDED, "y"], mesh)),
        (Layout(["r", UNSHARDED], flat), Layout([UNSHARDED, "r"], flat)),
        (Layout.replicated(flat, 2), Layout(["r", UNSHARDED], flat)),
        (Layout(["y", "x"], mesh), Layout(["x", "y"], mesh)),
    ]:
        t = {
            "a": hpckpt.Variable(np.zeros_like(a), la),
            "b": hpckpt.Variable(np.zeros_like(b), lb),
        }
        hpckpt.Checkpoint(**t).read(p).assert_consumed()
        got_a, got_b = t["a"].numpy(), t["b"].numpy()
        assert all_ranks(np.array_equal(got_a, a) and np.array_equal(got_b, b))
    if comm.rank == 0:
        e = load_index(p).tensors["a/.ATTRIBUTES/VARIABLE_VALUE"]
        with open(os.path.join(shared_dir, load_index(p).data_file), "r+b") as f:
            f.seek(e.offset + 4 * 517 * 700 + 3)
            x = f.read(1)
            f.seek(e.offset + 4 * 517 * 700 + 3)
            f.write(bytes([x[0] ^ 1]))
    comm.Barrier()
    t = {"a": hpckpt.Variable(np.zeros_like(a), Layout(["x", "y"], mesh))}
    with pytest.raises(hpckpt.CorruptCheckpointError, match="checksum mismatch in tensor 'a/"):
        hpckpt.Checkpoint(**t).read(p).expect_partial()


def test_row_bands_of_tensors_with_different_groups_and_step_counts(shared_dir, monkeypatch):
    """Row-band tensors whose groups differ (rows over ``x`` for one, over ``y`` for the
    other) and whose groups need different numbers of chunk steps (uneven row splits):
    every pair of ranks still matches its messages, and the save restores exactly."""
    from hpckpt.io import aggregate

    monkeypatch.setattr(aggregate, "CHUNK_BYTES", 1 << 16)
    mesh = mesh2d()
    rows = 2048
    rng = np.random.default_rng(11)
    a = rng.standard_normal((rows, 640)).astype(np.float32)
    c = rng.standard_normal((rows, 640)).astype(np.float32)
    # uneven rows over x: the two x-groups of "a" need different numbers of steps
    splits = {"x": [0, 1800, rows]} if mesh.shape[0] == 2 else None
    vs = {
        "a": hpckpt.Variable(a, Layout(["x", "y"], mesh, splits=splits)),
        "c": hpckpt.Variable(c, Layout(["y", "x"], mesh)),
    }
    opts = hpckpt.CheckpointOptions(timeout=120)
    p = hpckpt.Checkpoint(**vs).write(os.path.join(shared_dir, "groups"), options=opts)
    flat = hpckpt.create_mesh([("r", MPI.COMM_WORLD.size)])
    t = {
        "a": hpckpt.Variable(np.zeros_like(a), Layout(["r", UNSHARDED], flat)),
        "c": hpckpt.Variable(np.zeros_like(c), Layout(["r", UNSHARDED], flat)),
    }
    hpckpt.Checkpoint(**t).read(p, options=opts).assert_consumed()
    assert all_ranks(np.array_equal(t["a"].numpy(), a) and np.array_equal(t["c"].numpy(), c))


def test_strided_caller_arrays_are_saved_without_row_bands(shared_dir):
    """Row bands would need a copy of a shard held in a strided array (a field with ghost
    cells, ``copy=False``): when any rank holds one, every rank saves the layout's own
    slices instead, straight from the caller's arrays, and they restore in place."""
    mesh = mesh2d()
    n = 1400  # shards of at least 1 MiB on a 2 x 2 mesh
    lay = Layout(["x", "y"], mesh)
    shape = lay.local_shape((n, n))
    start = tuple(s.start for s in lay.local_slices((n, n)))
    field = np.full((shape[0] + 2, shape[1] + 2), -1.0)  # one ghost cell around
    ii, jj = np.meshgrid(
        np.arange(shape[0]) + start[0], np.arange(shape[1]) + start[1], indexing="ij"
    )
    field[1:-1, 1:-1] = ii * n + jj
    v = hpckpt.Variable.from_local(field[1:-1, 1:-1], lay, (n, n), copy=False)
    p = hpckpt.Checkpoint(v=v).write(os.path.join(shared_dir, "ghosted"))
    with Agreed():
        doc = json.load(open(p + ".index.json"))
        assert "rows" not in doc["tensors"]["v/.ATTRIBUTES/VARIABLE_VALUE"]
    target = np.zeros_like(field)
    t = hpckpt.Variable.from_local(target[1:-1, 1:-1], lay, (n, n), copy=False)
    hpckpt.Checkpoint(v=t).read(p).assert_consumed()
    assert all_ranks(np.array_equal(target[1:-1, 1:-1], field[1:-1, 1:-1]))
    assert all_ranks((target[0] == 0).all() and (target[:, 0] == 0).all())  # ghosts untouched
    whole = hpckpt.Variable(np.zeros((n, n)), Layout.replicated(mesh, 2))
    hpckpt.Checkpoint(v=whole).read(p).assert_consumed()
    want = np.arange(n * n, dtype=np.float64).reshape(n, n)
    assert all_ranks(np.array_equal(whole.numpy(), want))


def test_restores_in_several_rounds_reuse_their_scratch(shared_dir, monkeypatch):
    """Rounds of a restore (``read.ROUND_BYTES``) hand their scratch to the next round:
    resharded and replicated restores that take several rounds are still bit-identical,
    and the scratch a restore holds is less than the scratch its rounds used in all."""
    from hpckpt.io import read, scratch
    from hpckpt.variable import ALIGN_MIN_BYTES, PAGE_BYTES

    comm = MPI.COMM_WORLD
    pools: list[scratch.ScratchPool] = []
    taken = [0]

    class Recording(scratch.ScratchPool):
        def __init__(self) -> None:
            super().__init__()
            pools.append(self)

        def take(self, shape, dtype):
            a = super().take(shape, dtype)
            if a.nbytes >= ALIGN_MIN_BYTES:  # pooled: counted in whole pages
                taken[0] += -(-a.nbytes // PAGE_BYTES) * PAGE_BYTES
            return a

    monkeypatch.setattr(read, "ScratchPool", Recording)
    monkeypatch.setattr(read, "ROUND_BYTES", 1 << 20)  # one tensor per round
    mesh = mesh2d()
    rng = np.random.default_rng(5)
    want = {
        "b": rng.standard_normal((1200, 1000)),  # the largest first: later rounds fit in it
        "a": rng.standard_normal((2049, 517)).astype(np.float32),
        "c": rng.integers(0, 1 << 40, 400_000, dtype=np.int64),
    }
    saved = {
        "b": hpckpt.Variable(want["b"], Layout(["x", "y"], mesh)),
        "a": hpckpt.Variable(want["a"], Layout(["x", "y"], mesh)),
        "c": hpckpt.Variable(want["c"], Layout([UNSHARDED], mesh)),
    }
    p = hpckpt.Checkpoint(**saved).write(os.path.join(shared_dir, "rounds"))
    flat = hpckpt.create_mesh([("r", comm.size)])
    for layouts in [
        # column shards: every saved row band is read whole into scratch, then shared
        (Layout([UNSHARDED, "r"], flat), Layout([UNSHARDED, "r"], flat), Layout(["r"], flat)),
        (Layout(["y", "x"], mesh), Layout([UNSHARDED, "x"], mesh), Layout([UNSHARDED], mesh)),
    ]:
        pools.clear()
        taken[0] = 0
        got = {
            k: hpckpt.Variable(np.zeros_like(v), la)
            for (k, v), la in zip(want.items(), layouts, strict=True)
        }
        hpckpt.Checkpoint(**got).read(p).assert_consumed()
        assert all_ranks(all(np.array_equal(got[k].numpy(), want[k]) for k in want))
        held = sum(x.nbytes for x in pools)
        assert all_ranks(held <= taken[0])
        reused = comm.allreduce(int(held < taken[0]), op=MPI.SUM)
        assert reused > 0, (held, taken[0])


def test_a_restart_on_the_saved_layout_is_one_round(shared_dir, monkeypatch):
    """Tensors restored on the layout they were saved with are read in place on every
    rank (no scratch, no exchange), so they weigh nothing in ``read.ROUND_BYTES``: one
    round however large they are. Restored on another layout, the same tensors take a
    round each (rounds bound scratch). Both restores are bit-identical."""
    from hpckpt.io import read

    rounds = []
    real = read._read_round
    monkeypatch.setattr(
        read, "_read_round", lambda *a, **k: (rounds.append(a[5]), real(*a, **k))[1]
    )
    monkeypatch.setattr(read, "ROUND_BYTES", 1 << 20)
    comm = MPI.COMM_WORLD
    mesh = hpckpt.create_mesh([("r", comm.size)])
    rng = np.random.default_rng(9)
    want = {k: rng.standard_normal((256 * comm.size, 300)) for k in "abc"}  # 0.6 MiB/rank
    saved = {k: hpckpt.Variable(v, Layout(["r", UNSHARDED], mesh)) for k, v in want.items()}
    p = hpckpt.Checkpoint(**saved).write(os.path.join(shared_dir, "inplace"))
    for layout, count in [
        (Layout(["r", UNSHARDED], mesh), 1),
        (Layout([UNSHARDED, "r"], mesh), 3),
    ]:
        rounds.clear()
        got = {k: hpckpt.Variable(np.zeros_like(v), layout) for k, v in want.items()}
        hpckpt.Checkpoint(**got).read(p).assert_consumed()
        with Agreed():
            assert all(np.array_equal(got[k].numpy(), want[k]) for k in want)
            assert len(rounds) == count, (layout, rounds)


def test_the_structure_checksum_stands_for_the_per_dataset_checks_on_every_rank(
    shared_dir, monkeypatch
):
    """A restore that reads raw bytes opens no dataset with HDF5 while the data file's
    structure is as saved (rank 0 compares the index's structure checksum and every rank
    learns the outcome); after a change of a non-raw byte, the validator ranks check the
    datasets one by one, and the restore stays bit-identical."""
    from hpckpt.io import hdf5

    comm = MPI.COMM_WORLD
    calls = []
    real = hdf5.validate_data_file
    monkeypatch.setattr(
        hdf5, "validate_data_file", lambda *a, **k: (calls.append(1), real(*a, **k))[1]
    )
    mesh = hpckpt.create_mesh([("x", comm.size)])
    big = np.arange(comm.size * 64 * 16.0).reshape(comm.size * 64, 16)

    def model(fill=None):
        vs = {"big": big, "v": np.arange(7, dtype=np.int32)}
        if fill is not None:
            vs = {k: np.full_like(v, fill) for k, v in vs.items()}
        return {
            "big": hpckpt.Variable(vs["big"], Layout(["x", UNSHARDED], mesh)),
            "v": hpckpt.Variable(vs["v"]),
        }

    opts = hpckpt.CheckpointOptions(alignment=4096, alignment_threshold=1024)
    p = hpckpt.Checkpoint(**model()).write(os.path.join(shared_dir, "c"), options=opts)

    def restored():
        target = model(fill=-1)
        hpckpt.Checkpoint(**target).read(p).assert_consumed()
        return all(np.array_equal(target[k].numpy(), model()[k].numpy()) for k in target)

    ok = restored()
    untouched = len(calls)
    if comm.rank == 0:  # the zero byte of alignment padding just before the aligned tensor
        with open(p + ".index.json", "rb") as f:
            doc = json.load(f)
        start = next(t["offset"] for k, t in doc["tensors"].items() if k.startswith("big/"))
        with open(os.path.join(shared_dir, doc["data_file"]["name"]), "r+b") as f:
            f.seek(start - 1)
            assert f.read(1) == b"\0"
            f.seek(start - 1)
            f.write(b"\x5a")
    comm.Barrier()
    ok_after = restored()
    checked = comm.allgather(len(calls) - untouched)
    assert all_ranks(ok and ok_after and untouched == 0)
    assert checked[0] == 1 and sum(checked) == min(comm.size, 8), checked


def test_repeated_saves_of_one_structure_save_the_current_values(shared_dir, monkeypatch):
    """Saves of an unchanged structure reuse every rank's planned pieces and, from the
    second one, rank 0's index template: each save holds the values of its moment, also
    after a Variable is re-pointed to another array or its per-rank box changes values;
    restores are bit-identical and verified, and a damaged byte is still found."""
    from hpckpt.io import records
    from hpckpt.io import write as w

    comm = MPI.COMM_WORLD
    mesh = mesh2d()
    lays = layouts(mesh)
    vs = make_vars(model_values(), lays)
    n = 3 + comm.rank  # per-rank boxes of different lengths
    start = sum(3 + r for r in range(comm.rank))
    total = sum(3 + r for r in range(comm.size))
    vs["boxes"] = hpckpt.Variable.from_local(np.zeros(n), None, (total,), offset=(start,))
    # many small replicated tensors: each written by one replica, chosen round-robin
    for i in range(6):
        vs[f"small{i}"] = hpckpt.Variable(np.full(5, float(i)), Layout.replicated(mesh, 1))
    ckpt = hpckpt.Checkpoint(**vs)
    built = []
    real_rows = records.rows_from_layouts

    def counting(*a, **k):
        built.append(1)
        return real_rows(*a, **k)

    monkeypatch.setattr(w, "rows_from_layouts", counting)
    for step in range(5):
        for k, v in vs.items():
            if k == "boxes":
                v.local[...] = np.arange(n) + 100 * step + start
            elif step == 3 and k == "one_dim":  # re-pointed to another array
                v.local = np.ascontiguousarray(v.local * 0 + 7.0 * step)
            elif v.local.size:
                v.local[...] = (v.local + 1).astype(v.dtype) if v.dtype != bool else ~v.local
        want = {k: v.numpy() for k, v in vs.items()}
        prefix = os.path.join(shared_dir, f"s{step}")
        ckpt.write(prefix)
        fresh = {
            k: hpckpt.Variable(np.zeros_like(v.numpy()), v.layout)
            if v.layout is not None
            else hpckpt.Variable.from_local(np.zeros(n), None, (total,), offset=(start,))
            for k, v in vs.items()
        }
        hpckpt.Checkpoint(**fresh).read(prefix).assert_consumed()
        with Agreed():
            for k in vs:
                assert np.array_equal(fresh[k].numpy(), want[k]), (step, k)
    # rank 0 rebuilt the slice records at the first two saves only
    assert all_ranks(len(built) == (2 if comm.rank == 0 else 0)), len(built)
    # what the io layer keeps per tensor is numbers and text: it pins no array (no
    # snapshot, local-tier copy or mapped file outlives its save)
    kept = [v._save_memo.io for v in vs.values() if v.layout is not None]
    assert all_ranks(all(kept)), kept

    def arrays_in(x):
        if isinstance(x, np.ndarray):
            return 1
        if isinstance(x, (tuple, list)):
            return sum(arrays_in(y) for y in x)
        if isinstance(x, dict):
            return sum(arrays_in(y) for y in x.values())
        return 0

    assert all_ranks(sum(arrays_in(m) for m in kept) == 0)
    # a damaged byte of a tensor saved through the template is found on every rank
    with Agreed():
        if comm.rank == 0:
            index = load_index(prefix)
            entry = index.tensors["one_dim/.ATTRIBUTES/VARIABLE_VALUE"]
            with open(os.path.join(shared_dir, index.data_file), "r+b") as f:
                f.seek(entry.offset + 5)
                b = f.read(1)
                f.seek(entry.offset + 5)
                f.write(bytes([b[0] ^ 0x40]))
    with pytest.raises(hpckpt.CorruptCheckpointError):
        hpckpt.Checkpoint(**vs).read(prefix)


def test_saves_of_the_same_tensors_in_another_graph_order_restore(shared_dir):
    """Small replicated tensors are written by the replica their place in the graph
    picks (round-robin): the same keys reached in another order are written by other
    ranks, and rank 0's index template of the earlier order must not be used."""
    comm = MPI.COMM_WORLD
    mesh = hpckpt.create_mesh([("x", comm.size)])
    vs = {
        f"s{i}": hpckpt.Variable(np.full(3, float(i)), Layout.replicated(mesh, 1)) for i in range(6)
    }
    prefix = os.path.join(shared_dir, "order")
    for step, order in enumerate([sorted(vs), sorted(vs), sorted(vs, reverse=True)] * 2):
        for k, v in vs.items():
            v.local[...] = float(step * 10 + int(k[1:]))
        hpckpt.Checkpoint(**{k: vs[k] for k in order}).write(prefix)
        fresh = {k: hpckpt.Variable(np.zeros(3), v.layout) for k, v in vs.items()}
        hpckpt.Checkpoint(**fresh).read(prefix).assert_consumed()
        with Agreed():
            for k, v in vs.items():
                assert np.array_equal(fresh[k].numpy(), v.numpy()), (step, k)


def test_repeat_saves_that_stop_using_row_bands_restore(shared_dir):
    """The same tensor saved in row bands (a contiguous shard), then, under the same key,
    from a caller's strided array (no bands: other slices, other writers): rank 0's index
    template of the banded saves must not describe the later save."""
    mesh = hpckpt.create_mesh([("r", MPI.COMM_WORLD.size)])
    n = 1400  # column shards (strided in the file) of at least 1 MiB
    lay = Layout([UNSHARDED, "r"], mesh)
    shape = lay.local_shape((n, n))
    start = tuple(s.start for s in lay.local_slices((n, n)))
    ii, jj = np.meshgrid(
        np.arange(shape[0]) + start[0], np.arange(shape[1]) + start[1], indexing="ij"
    )
    prefix = os.path.join(shared_dir, "bands")
    field = np.full((shape[0] + 2, shape[1] + 2), -1.0)
    for step in range(5):
        value = (ii * n + jj + step).astype(np.float64)
        if step < 3:  # contiguous: row bands
            v = hpckpt.Variable.from_local(value, lay, (n, n))
        else:  # a view of a field with ghost cells
            field[1:-1, 1:-1] = value
            v = hpckpt.Variable.from_local(field[1:-1, 1:-1], lay, (n, n), copy=False)
        hpckpt.Checkpoint(v=v).write(prefix)
        with Agreed():
            doc = json.load(open(prefix + ".index.json"))
            assert ("rows" in doc["tensors"]["v/.ATTRIBUTES/VARIABLE_VALUE"]) == (step < 3)
        whole = hpckpt.Variable(np.zeros((n, n)), Layout.replicated(mesh, 2))
        hpckpt.Checkpoint(v=whole).read(prefix).assert_consumed()
        want = np.arange(n * n, dtype=np.float64).reshape(n, n) + step
        assert all_ranks(np.array_equal(whole.numpy(), want)), step
