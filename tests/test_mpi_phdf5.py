"""Parallel HDF5 (issue 14) under MPI: io="hdf5" and compression write and read every
tensor kind with collective H5Dwrite/H5Dread (checked through HDF5's own report of the
transfer mode), every io path reads every other path's checkpoints on any layout,
compressed checkpoints are bit-identical after a reshard and readable with plain h5py,
damage in a compressed dataset is caught on every rank, failures on one rank are agreed
on, and the MPI-IO and striping hints reach the MPI file handle.

Runs on 1 to 4 ranks (and on 1 rank in the single-rank pass of scripts/run-tests.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import zlib

import h5py
import numpy as np
import pytest
from conftest import Agreed, all_ranks
from mpi4py import MPI

import hpckpt
from hpckpt import UNSHARDED, Layout, _faults
from hpckpt.io import phdf5, wait_removals
from hpckpt.io.h5capi import ACTUAL_IO_MODES

pytestmark = pytest.mark.mpi(min_size=1)

COLLECTIVE_MODES = {2, 4}  # chunk collective, contiguous collective
HDF5 = hpckpt.CheckpointOptions(io="hdf5")
GZIP = hpckpt.CheckpointOptions(compression="shuffle+gzip:1")


def meshes():
    size = MPI.COMM_WORLD.Get_size()
    two = (2, size // 2) if size % 2 == 0 else (size, 1)
    return hpckpt.create_mesh([("x", two[0]), ("y", two[1])]), hpckpt.create_mesh([("r", size)])


def model_values(small=60):
    size = MPI.COMM_WORLD.Get_size()
    rng = np.random.default_rng(14)
    vals = {
        "sharded": rng.standard_normal((8, 6)).astype(np.float32),
        "uneven": np.arange(7 * 5, dtype=np.int32).reshape(7, 5),
        "strided": rng.standard_normal((9, 13)),  # columns sharded: strided pieces
        "both": rng.standard_normal((6, 10)),
        "tiny": np.array([1.5, 2.5, 3.5]),  # empty shards on 4 ranks
        "replicated": rng.integers(0, 100, (5, 3)).astype(np.int64),
        "big_replica": rng.standard_normal((400, 330)),  # > 1 MiB: replicas split the rows
        "big": rng.standard_normal((size * 600 + 1, 256)),  # >= 1 MiB per rank, contiguous
        "splits": rng.standard_normal((11, 4)).astype(np.float32),
        "scalar": np.float64(2.75),
        "iscalar": np.int64(-7),
        "flags": np.array([True, False, True, True, False] * 300),
        "half": rng.standard_normal(900).astype(np.float16),
        "cplx": (rng.standard_normal(140) + 1j * rng.standard_normal(140)).astype(np.complex64),
        "u16": np.arange(11, dtype=np.uint16),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    for i in range(small):  # many small tensors
        vals[f"small{i:02d}"] = np.arange(i % 7 + 1, dtype=np.float64) + i
    return vals


def layouts(mesh, flat):
    size = MPI.COMM_WORLD.Get_size()
    split = [0, *[2, 2, 9][: size - 1], 11]  # explicit bounds; an empty block on 3-4 ranks
    lays = {
        "sharded": Layout(["x", UNSHARDED], mesh),
        "uneven": Layout(["x", "y"], mesh),
        "strided": Layout([UNSHARDED, "r"], flat),
        "both": Layout(["y", "x"], mesh),
        "tiny": Layout(["r"], flat),
        "replicated": Layout.replicated(mesh, 2),
        "big_replica": Layout.replicated(mesh, 2),
        "big": Layout(["r", UNSHARDED], flat),
        "splits": Layout(["r", UNSHARDED], flat, splits={"r": split}),
        "scalar": Layout([], mesh),
        "iscalar": Layout([], flat),
        "flags": Layout(["y"], mesh),
        "half": Layout(["r"], flat),
        "cplx": Layout(["x"], mesh),
        "u16": Layout(["r"], flat),
        "empty": Layout(["x", "y"], mesh),
    }
    for i in range(60):
        lays[f"small{i:02d}"] = Layout(["r"], flat) if i % 2 else Layout.replicated(flat, 1)
    return lays


def other_layouts(values):
    """Every tensor on another decomposition: transposed, replicated, rows <-> columns."""
    size = MPI.COMM_WORLD.Get_size()
    other = hpckpt.create_mesh([("a", size)])
    lays = {k: Layout.replicated(other, np.ndim(v)) for k, v in values.items()}
    lays["sharded"] = Layout([UNSHARDED, "a"], other)
    lays["strided"] = Layout(["a", UNSHARDED], other)
    lays["both"] = Layout(["a", UNSHARDED], other)
    lays["big"] = Layout([UNSHARDED, "a"], other)
    lays["flags"] = Layout(["a"], other)
    return lays


def make_vars(values, lays, zero=False):
    return {
        k: hpckpt.Variable(np.zeros_like(v) if zero else v, lays[k], name=k)
        for k, v in values.items()
    }


def restore(path, values, lays, options=None, saved=False):
    """Read ``path`` (``saved``: a ``save()``d one, with its counter) into fresh variables."""
    vs = make_vars(values, lays, zero=True)
    ckpt = hpckpt.Checkpoint(**vs)
    (ckpt.restore if saved else ckpt.read)(path, options=options).assert_consumed()
    return {k: v.numpy() for k, v in vs.items()}


def same(got, values):
    return [k for k in values if not np.array_equal(got[k], values[k])]


def dataset_names(path):
    with open(path + ".index.json") as f:
        doc = json.load(f)
    return doc, {k: t["dataset"] for k, t in doc["tensors"].items()}


def test_hdf5_writes_and_reads_every_tensor_kind_collectively(shared_dir):
    comm = MPI.COMM_WORLD
    mesh, flat = meshes()
    values = model_values()
    lays = layouts(mesh, flat)
    path = hpckpt.Checkpoint(**make_vars(values, lays)).write(
        os.path.join(shared_dir, "h5"), options=HDF5
    )
    written = {k: set(v) for k, v in phdf5.LAST.modes.items()}
    with Agreed():
        # every dataset holding data had collective H5Dwrite calls on this rank, and the
        # file was opened with collective metadata reads and writes
        doc, names = dataset_names(path)
        for key, t in doc["tensors"].items():
            if t["nbytes"]:
                assert written.get(names[key]), key
                assert written[names[key]] <= COLLECTIVE_MODES, (key, written[names[key]])
            assert "filters" not in t, key
            assert (t["offset"] is None) if not t["nbytes"] else t["offset"] >= 0, key
        assert phdf5.LAST.collective_metadata == (True, True)
        assert phdf5.LAST.calls >= len([t for t in doc["tensors"].values() if t["nbytes"]])
        # the large contiguous pieces moved by independent MPI-IO inside collective calls
        assert names["big/.ATTRIBUTES/VARIABLE_VALUE"] in phdf5.LAST.individual
    got = restore(path, values, lays, HDF5)
    read_modes = {k: set(v) for k, v in phdf5.LAST.modes.items()}
    with Agreed():
        assert same(got, values) == []
        assert read_modes and all(m <= COLLECTIVE_MODES for m in read_modes.values()), {
            k: [ACTUAL_IO_MODES[x] for x in m] for k, m in read_modes.items()
        }
        if comm.rank == 0:  # plain serial h5py sees every tensor as its global array
            with h5py.File(os.path.join(shared_dir, doc["data_file"]["name"]), "r") as f:
                for k, want in values.items():
                    ds = f[names[f"{k}/.ATTRIBUTES/VARIABLE_VALUE"]]
                    assert ds.chunks is None and ds.compression is None, k
                    assert np.array_equal(ds[()], want), k


WRITERS = {
    "auto": hpckpt.CheckpointOptions(),
    "mpiio": hpckpt.CheckpointOptions(io="mpiio"),
    "posix": hpckpt.CheckpointOptions(io="posix"),
    "hdf5": HDF5,
    "hdf5-two-phase": hpckpt.CheckpointOptions(io="hdf5", direct_io_threshold=None),
    "gzip": GZIP,
}
READERS = ["auto", "mpiio", "posix", "hdf5"]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_path_reads_every_other_paths_checkpoints(shared_dir, writer):
    mesh, flat = meshes()
    values = model_values(small=4)
    path = hpckpt.Checkpoint(**make_vars(values, layouts(mesh, flat))).write(
        os.path.join(shared_dir, writer), options=WRITERS[writer]
    )
    for i, reader in enumerate(READERS):
        for j, (name, lays) in enumerate(
            (("saved", layouts(mesh, flat)), ("other", other_layouts(values)))
        ):
            in_place = (i + j) % 2 == 0  # straight into the variables, or staged
            opts = hpckpt.CheckpointOptions(io=reader, restore_in_place=in_place)
            bad = same(restore(path, values, lays, opts), values)
            assert all_ranks(not bad), (writer, reader, name, in_place, bad)


def test_compressed_checkpoints_are_chunked_filtered_and_bit_identical_after_a_reshard(
    shared_dir,
):
    comm = MPI.COMM_WORLD
    mesh, flat = meshes()
    values = model_values(small=4)
    path = hpckpt.Checkpoint(**make_vars(values, layouts(mesh, flat))).write(
        os.path.join(shared_dir, "z"), options=GZIP
    )
    written = {k: set(v) for k, v in phdf5.LAST.modes.items()}
    doc, names = dataset_names(path)
    compressed = {k for k, t in doc["tensors"].items() if "filters" in t}
    with Agreed():
        # tensors of at least 1 KiB with a dimension are compressed; the rest stay contiguous
        want = {
            f"{k}/.ATTRIBUTES/VARIABLE_VALUE"
            for k, v in values.items()
            if np.ndim(v) and np.asarray(v).nbytes >= 1024
        }
        assert compressed == want
        for key in compressed:
            t = doc["tensors"][key]
            assert t["offset"] is None and len(t["chunks"]) == len(t["shape"])
            assert t["filters"] == [{"filter": "shuffle"}, {"filter": "deflate", "level": 1}]
            assert written[names[key]] <= {2}, (key, written[names[key]])  # chunk collective
    for lays in (layouts(mesh, flat), other_layouts(values)):
        for reader in READERS:
            got = restore(path, values, lays, hpckpt.CheckpointOptions(io=reader))
            assert all_ranks(same(got, values) == []), reader
    with Agreed():
        if comm.rank == 0:  # plain h5py decompresses it without hpckpt
            with h5py.File(os.path.join(shared_dir, doc["data_file"]["name"]), "r") as f:
                for k, v in values.items():
                    key = f"{k}/.ATTRIBUTES/VARIABLE_VALUE"
                    ds = f[names[key]]
                    assert (ds.compression == "gzip") == (key in compressed), k
                    assert ds.shuffle == (key in compressed), k
                    assert np.array_equal(ds[()], v), k
            reader = hpckpt.load_checkpoint(path)  # hpckpt's own launcher-free reader
            for k, v in values.items():
                assert np.array_equal(reader.get_tensor(f"{k}/.ATTRIBUTES/VARIABLE_VALUE"), v)


def _chunk_of(path, dataset):
    """(file offset, stored bytes) of the first chunk of a dataset."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
        return info.byte_offset, info.size, f[dataset].dtype


def _rewrite_chunk_values(path, dataset, shuffle_itemsize):
    """Change one value in the first chunk; recompress so that the stream still inflates
    (same or fewer bytes, zero padded in place: the file keeps its size and layout)."""
    off, size, _ = _chunk_of(path, dataset)
    with open(path, "r+b") as f:
        f.seek(off)
        raw = f.read(size)
        plain = bytearray(zlib.decompress(raw))
        # the shuffled stream holds byte planes: flip a bit of element 0's top byte
        plane = len(plain) // shuffle_itemsize
        plain[(shuffle_itemsize - 1) * plane] ^= 0x01
        for level in range(9, 0, -1):
            new = zlib.compress(bytes(plain), level)
            if len(new) <= size:
                break
        assert len(new) <= size, "cannot recompress the chunk into its space"
        f.seek(off)
        f.write(new + b"\0" * (size - len(new)))


@pytest.mark.parametrize("damage", ["values", "stream"])
def test_damage_in_a_compressed_dataset_is_caught_on_every_rank(shared_dir, damage):
    comm = MPI.COMM_WORLD
    _mesh, flat = meshes()
    values = {"w": np.linspace(0.0, 1.0, 64 * 48).reshape(64, 48)}
    lays = {"w": Layout(["r", UNSHARDED], flat)}
    path = hpckpt.Checkpoint(**make_vars(values, lays)).write(
        os.path.join(shared_dir, "bad"), options=GZIP
    )
    doc, names = dataset_names(path)
    data = os.path.join(shared_dir, doc["data_file"]["name"])
    dataset = names["w/.ATTRIBUTES/VARIABLE_VALUE"]
    if comm.rank == 0:
        if damage == "values":
            _rewrite_chunk_values(data, dataset, 8)
            with h5py.File(data, "r") as f:  # HDF5 inflates it: only the checksum can tell
                assert not np.array_equal(f[dataset][()], values["w"])
        else:
            off, size, _ = _chunk_of(data, dataset)
            with open(data, "r+b") as f:
                f.seek(off + size // 2)
                b = f.read(1)
                f.seek(off + size // 2)
                f.write(bytes([b[0] ^ 0xFF]))
    comm.Barrier()
    # restored onto another layout: the chunk's owner is not the rank that wrote it
    for lays2 in (lays, {"w": Layout([UNSHARDED, "a"], hpckpt.create_mesh([("a", comm.size)]))}):
        for io in READERS:
            try:
                restore(path, values, lays2, hpckpt.CheckpointOptions(io=io))
                msg = None
            except hpckpt.CorruptCheckpointError as e:
                msg = str(e)
            msgs = comm.allgather(msg)
            assert all(m is not None for m in msgs), (damage, io, msgs)
            assert len(set(msgs)) == 1  # the same error on every rank
            if damage == "values":
                assert "checksum mismatch in tensor 'w/" in msgs[0], msgs[0]
                assert "shuffle+gzip:1 dataset" in msgs[0], msgs[0]


@pytest.fixture
def _disarm():
    yield
    _faults.clear()


PHASES = ["create", "before_data", "mid_data", "after_data", "before_commit"]


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("options", ["hdf5", "gzip"])
@pytest.mark.parametrize("phase", PHASES)
def test_a_failure_on_one_rank_is_agreed_and_loses_nothing(shared_dir, phase, options, _disarm):
    comm = MPI.COMM_WORLD
    opts = WRITERS[options]
    _mesh, flat = meshes()
    values = {"w": np.arange(64 * 20, dtype=np.float64).reshape(64, 20), "s": np.float64(1.0)}
    lays = {"w": Layout(["r", UNSHARDED], flat), "s": Layout([], flat)}
    ckpt = hpckpt.Checkpoint(**make_vars(values, lays))
    mgr = hpckpt.CheckpointManager(ckpt, shared_dir, max_to_keep=2)
    first = mgr.save(options=opts)
    bad = 0 if phase in ("create", "before_commit") else comm.size - 1
    if comm.rank == bad:
        _faults.inject(phase, bad, "raise")
    msg = None
    try:
        mgr.save(options=opts)
    except hpckpt.CheckpointError as e:
        msg = str(e)
    _faults.clear()
    msgs = comm.allgather(msg)
    assert all(m is not None and f"rank {bad}" in m for m in msgs), msgs
    assert len(set(msgs)) == 1
    assert all_ranks(mgr.latest_checkpoint == first)
    got = restore(first, values, lays, saved=True)
    assert all_ranks(same(got, values) == [])
    # and the next save works (no rank is left inside a collective call)
    again = mgr.save(options=opts)
    assert all_ranks(same(restore(again, values, lays, opts, saved=True), values) == [])
    if comm.rank == 0:
        wait_removals()


def test_async_save_through_parallel_hdf5(shared_dir):
    mesh, flat = meshes()
    values = model_values(small=4)
    lays = layouts(mesh, flat)
    vs = make_vars(values, lays)
    ckpt = hpckpt.Checkpoint(**vs)
    opts = hpckpt.CheckpointOptions(enable_async=True, compression="gzip:1")
    path = ckpt.write(os.path.join(shared_dir, "a"), options=opts)
    for v in vs.values():
        if v.local.size:
            v.local[...] = 0  # the snapshot was taken: this does not reach the file
    ckpt.sync()
    assert all_ranks(same(restore(path, values, lays), values) == [])


def test_hints_and_alignment_reach_the_mpi_file(shared_dir):
    """striping_factor/striping_unit and the user's MPI-IO hints are passed to
    MPI_File_open when the file is created collectively (read back from the MPI
    library through HDF5's own MPI_File handle); striping_unit is the alignment."""
    _mesh, flat = meshes()
    values = {"w": np.arange(MPI.COMM_WORLD.size * 40000, dtype=np.float64)}
    lays = {"w": Layout(["r"], flat)}
    opts = hpckpt.CheckpointOptions(
        io="hdf5",
        striping_factor=2,
        striping_unit=65536,
        mpi_info={"cb_nodes": "1"},
        alignment_threshold=4096,
    )
    path = hpckpt.Checkpoint(**make_vars(values, lays)).write(
        os.path.join(shared_dir, "hints"), options=opts
    )
    hints, alignment = dict(phdf5.LAST.hints), phdf5.LAST.alignment
    doc, _names = dataset_names(path)
    with Agreed():
        assert hints.get("striping_factor") == "2", hints
        assert hints.get("striping_unit") == "65536", hints
        assert hints.get("cb_nodes") == "1", hints
        assert alignment == (4096, 65536)
        assert doc["tensors"]["w/.ATTRIBUTES/VARIABLE_VALUE"]["offset"] % 65536 == 0
    # a user's own striping hint wins over the option
    opts2 = hpckpt.CheckpointOptions(
        io="hdf5", striping_factor=2, mpi_info={"striping_factor": "1"}, alignment=4096
    )
    hpckpt.Checkpoint(**make_vars(values, lays)).write(
        os.path.join(shared_dir, "hints2"), options=opts2
    )
    assert all_ranks(phdf5.LAST.hints.get("striping_factor") == "1")
    assert all_ranks(phdf5.LAST.alignment == (1 << 20, 4096))


@pytest.fixture
def small_disk(shared_dir):
    """A real 2 MiB file system (tmpfs) that a checkpoint does not fit in."""
    comm = MPI.COMM_WORLD
    mnt = os.path.join(shared_dir, "disk")
    err = None
    if comm.rank == 0:
        os.mkdir(mnt)
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt], capture_output=True, text=True
        )
        err = None if r.returncode == 0 else (r.stderr.strip() or f"mount exit {r.returncode}")
    err = comm.bcast(err)
    if err:
        pytest.skip(f"cannot mount a 2 MiB tmpfs here (needs root): {err}")
    yield mnt
    comm.Barrier()
    if comm.rank == 0:
        subprocess.run(["umount", mnt], check=False)


@pytest.mark.parametrize("options", ["hdf5", "gzip"])
def test_a_full_disk_is_an_agreed_error_not_a_hang(small_disk, options):
    """Collective HDF5 writes on a file system without room: the same CheckpointError on
    every rank (HDF5's collective flush would wait forever if some ranks' metadata writes
    failed), the previous checkpoint intact, and the next save that fits works."""
    comm = MPI.COMM_WORLD
    _mesh, flat = meshes()
    opts = WRITERS[options]
    small = {"s": np.arange(1000.0)}
    big = dict(small, b=np.random.default_rng(5).random((600, 1000)))  # 4.8 MB
    lays = {"s": Layout(["r"], flat), "b": Layout(["r", UNSHARDED], flat)}
    first = hpckpt.Checkpoint(**make_vars(small, lays)).write(
        os.path.join(small_disk, "ok"), options=opts
    )
    msg = None
    try:
        hpckpt.Checkpoint(**make_vars(big, lays)).write(
            os.path.join(small_disk, "full"), options=opts
        )
    except hpckpt.CheckpointError as e:
        msg = str(e)
    msgs = comm.allgather(msg)
    assert all(m is not None for m in msgs) and len(set(msgs)) == 1, msgs
    assert "No space left on device" in msgs[0], msgs[0]
    assert all_ranks(same(restore(first, small, lays, opts), small) == [])
    if comm.rank == 0:
        wait_removals()
    left = comm.bcast(sorted(os.listdir(small_disk)) if comm.rank == 0 else None)
    assert not [n for n in left if n.startswith("full")], left
    again = hpckpt.Checkpoint(**make_vars(small, lays)).write(
        os.path.join(small_disk, "again"), options=opts
    )
    assert all_ranks(same(restore(again, small, lays, opts), small) == [])


@pytest.mark.parametrize("options", ["hdf5", "gzip"])
def test_strided_buffers_and_per_rank_boxes(shared_dir, options):
    """A Variable that is the interior of the caller's array with ghost cells (a strided
    view, no copy) and per-rank boxes (no layout) are written and read in place by
    parallel HDF5 (memory hyperslabs of the caller's array); ghost cells stay untouched."""
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    _, flat = meshes()
    opts = WRITERS[options]
    rows, cols = 5 * size + 3, 40
    glob = np.arange(rows * cols, dtype=np.float64).reshape(rows, cols) / 7.0
    lay = Layout(["r", UNSHARDED], flat)
    sl = lay.local_slices((rows, cols))
    u = np.full((sl[0].stop - sl[0].start + 2, cols + 2), -1.0)
    u[1:-1, 1:-1] = glob[sl]
    v = hpckpt.Variable.from_local(u[1:-1, 1:-1], lay, (rows, cols), copy=False)
    # per-rank boxes: rank r holds columns [c0, c1) of all rows (an uneven split)
    cut = [0, *sorted({min(cols, 3 + 11 * k) for k in range(1, size)}), cols]
    cut = (cut + [cols] * size)[: size + 1]
    box = glob[:, cut[rank] : cut[rank + 1]].copy()
    w = hpckpt.Variable.from_local(box, global_shape=(rows, cols), offset=(0, cut[rank]))
    path = hpckpt.Checkpoint(v=v, w=w).write(os.path.join(shared_dir, options), options=opts)
    u2 = np.full_like(u, -1.0)
    v2 = hpckpt.Variable.from_local(u2[1:-1, 1:-1], lay, (rows, cols), copy=False)
    box2 = np.zeros_like(box)
    w2 = hpckpt.Variable.from_local(
        box2, global_shape=(rows, cols), offset=(0, cut[rank]), copy=False
    )
    hpckpt.Checkpoint(v=v2, w=w2).read(path, options=HDF5).assert_consumed()
    with Agreed():
        assert np.array_equal(u2[1:-1, 1:-1], glob[sl])
        assert (u2[0] == -1).all() and (u2[-1] == -1).all()
        assert (u2[:, 0] == -1).all() and (u2[:, -1] == -1).all()
        assert np.array_equal(box2, box)
        assert np.array_equal(v2.numpy(), glob) and np.array_equal(w2.numpy(), glob)
