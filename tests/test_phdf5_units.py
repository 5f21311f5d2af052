"""Issue 14, pure logic: compression pipelines and chunk shapes, the index records of
compressed tensors, the io/compression options, and the detection of the file system's
stripe or block size (from fake inputs: no Lustre here).

No MPI job, no HDF5 file: these run in the serial pass.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hpckpt
from hpckpt.errors import CorruptCheckpointError
from hpckpt.io import filters, striping
from hpckpt.io.index import REPLICA_SPLIT_BYTES, CheckpointIndex, TensorEntry
from hpckpt.io.index_parse import parse_index
from hpckpt.io.slicing import DerivedSlicing
from hpckpt.layout import LayoutSpec, dim_bounds
from hpckpt.options import io_options

# --- compression pipelines ------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,shuffle,level",
    [
        ("gzip", False, 4),
        ("gzip:0", False, 0),
        ("gzip:9", False, 9),
        ("shuffle+gzip:1", True, 1),
        ("shuffle+gzip", True, 4),
        (" Shuffle+GZIP:3 ", True, 3),
    ],
)
def test_compression_specs_parse(spec, shuffle, level):
    c = filters.parse_compression(spec)
    assert c == filters.Compression(shuffle, level)
    assert filters.parse_compression(c.spec) == c  # the canonical spec parses back


@pytest.mark.parametrize(
    "bad,kind",
    [
        ("lz4", ValueError),
        ("gzip:10", ValueError),
        ("gzip:-1", ValueError),
        ("gzip+shuffle:4", ValueError),
        ("shuffle", ValueError),
        ("", ValueError),
        (4, TypeError),
        (b"gzip", TypeError),
    ],
)
def test_bad_compression_specs_name_the_value(bad, kind):
    with pytest.raises(kind, match=repr(bad)[:6].replace("+", r"\+").replace("(", r"\(")):
        filters.parse_compression(bad)
    with pytest.raises(kind):
        hpckpt.CheckpointOptions(compression=bad)


def test_pipeline_json_round_trip_and_hdf5_values():
    for c in (filters.Compression(True, 4), filters.Compression(False, 0)):
        assert filters.pipeline_from_json(json.loads(json.dumps(c.to_json()))) == c
    assert filters.Compression(True, 6).hdf5_filters(8) == [(2, (8,)), (1, (6,))]
    assert filters.Compression(False, 6).hdf5_filters(8) == [(1, (6,))]


@pytest.mark.parametrize(
    "raw",
    [
        [],
        [{"filter": "deflate"}],
        [{"filter": "deflate", "level": 10}],
        [{"filter": "deflate", "level": True}],
        [{"filter": "szip", "level": 4}],
        [{"filter": "deflate", "level": 4}, {"filter": "shuffle"}],
        [{"filter": "shuffle"}, {"filter": "shuffle"}, {"filter": "deflate", "level": 1}],
        [{"filter": "deflate", "level": 4, "extra": 1}],
        "gzip:4",
        [["deflate", 4]],
    ],
)
def test_hostile_filter_records_are_refused(raw):
    with pytest.raises(ValueError, match="filters"):
        filters.pipeline_from_json(raw)


@settings(max_examples=300, deadline=None)
@given(
    shape=st.lists(st.integers(1, 3000), min_size=1, max_size=3),
    itemsize=st.sampled_from([1, 2, 4, 8, 16]),
    parts=st.lists(st.integers(1, 7), min_size=3, max_size=3),
    target=st.sampled_from([64, 4096, 1 << 20]),
)
def test_chunks_fit_the_tensor_the_target_and_the_layout_blocks(shape, itemsize, parts, target):
    bounds = [dim_bounds(n, k) if k > 1 else None for n, k in zip(shape, parts, strict=False)]
    c = filters.chunk_shape(shape, itemsize, bounds, target)
    assert len(c) == len(shape)
    assert all(1 <= x <= n for x, n in zip(c, shape, strict=True))
    assert math.prod(c) * itemsize <= max(target, itemsize)
    for x, b in zip(c, bounds, strict=True):
        if b is not None:  # never more than the largest block: most chunks have one writer
            assert x <= max(hi - lo for lo, hi in itertools.pairwise(b))


def test_chunks_keep_trailing_rows_whole_when_they_fit():
    # rows of 16 KiB, 1 MiB chunks: 64 whole rows; 4 row blocks of 250
    assert filters.chunk_shape((1000, 4096), 4, [dim_bounds(1000, 4), None]) == (64, 4096)
    # one row bigger than the target: one row, cut along the columns
    assert filters.chunk_shape((10, 1 << 20), 4, None) == (1, 1 << 18)


def test_only_tensors_with_a_dimension_and_a_kibibyte_are_compressed():
    assert not filters.compressible((), 8)
    assert not filters.compressible((0, 4), 4)
    assert not filters.compressible((127,), 8)
    assert filters.compressible((128,), 8)


# --- options ------------------------------------------------------------------------------


def test_io_modes_map_onto_the_storage_options():
    auto = io_options(hpckpt.CheckpointOptions())
    assert (auto.io, auto.collective, auto.direct_io_threshold) == ("auto", True, 1 << 20)
    assert auto.compression is None and not auto.parallel_hdf5
    mpiio = io_options(hpckpt.CheckpointOptions(io="mpiio"))
    assert (mpiio.collective, mpiio.direct_io_threshold) == (True, None)
    for o in (hpckpt.CheckpointOptions(io="posix"), hpckpt.CheckpointOptions(collective=False)):
        assert (io_options(o).io, io_options(o).collective) == ("posix", False)
    h5 = io_options(hpckpt.CheckpointOptions(io="hdf5"))
    assert h5.parallel_hdf5 and h5.io == "hdf5" and h5.compression is None
    z = io_options(hpckpt.CheckpointOptions(compression="shuffle+gzip:2", striping_unit=65536))
    assert z.parallel_hdf5 and z.io == "auto"
    assert z.compression == filters.Compression(True, 2) and z.striping_unit == 65536


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"io": "lustre"}, "'lustre'"),
        ({"io": None}, "None"),
        ({"collective": False, "io": "hdf5"}, "io='hdf5'"),
        ({"collective": False, "io": "mpiio"}, "io='mpiio'"),
        ({"io": "posix", "compression": "gzip"}, "io='posix'"),
        ({"io": "mpiio", "compression": "gzip:1"}, "io='mpiio'"),
        ({"collective": False, "compression": "gzip"}, "collective=False"),
        ({"striping_factor": 0}, "striping_factor.*0"),
        ({"striping_unit": -1}, "striping_unit.*-1"),
        ({"alignment": 0}, "alignment.*0"),
    ],
)
def test_contradictory_or_bad_io_options_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hpckpt.CheckpointOptions(**kwargs)


# --- index records of compressed tensors ----------------------------------------------------


def _index(entries: list[TensorEntry], size: int = 1 << 16) -> CheckpointIndex:
    return CheckpointIndex(
        "ckpt-1.data-0123456789abcdef.h5", size, {e.key: e for e in entries}, 2, 1.0
    )


def _compressed(shape=(40, 30), chunks=(20, 30), comp=None, dtype="<f8") -> TensorEntry:
    spec = LayoutSpec(("x", "unsharded"), ("x",), (2,))
    slicing = DerivedSlicing(shape, spec, np.dtype(dtype).itemsize, REPLICA_SPLIT_BYTES)
    return TensorEntry(
        "z/.ATTRIBUTES/VARIABLE_VALUE",
        "z",
        np.dtype(dtype),
        shape,
        None,
        spec,
        slicing,
        np.arange(len(slicing), dtype=np.uint32),
        filters=comp or filters.Compression(True, 4),
        chunks=chunks,
    )


@settings(max_examples=100, deadline=None)
@given(
    rows=st.integers(1, 200),
    cols=st.integers(1, 50),
    level=st.integers(0, 9),
    shuffle=st.booleans(),
    data=st.data(),
)
def test_compressed_records_round_trip_in_both_parser_modes(rows, cols, level, shuffle, data):
    chunks = (data.draw(st.integers(1, rows)), data.draw(st.integers(1, cols)))
    e = _compressed((rows, cols), chunks, filters.Compression(shuffle, level))
    # a compressed tensor may be larger than the whole (compressed) data file
    index = _index([e], size=64)
    text = index.to_json()
    doc = json.loads(text)["tensors"][e.key]
    assert doc["offset"] is None and doc["chunks"] == list(chunks)
    assert doc["filters"][-1] == {"filter": "deflate", "level": level}
    for trusted in (False, True):
        got = parse_index(text, trusted=trusted)
        assert got == index
        t = got.tensors[e.key]
        assert (t.filters, t.chunks) == (e.filters, chunks)


def _edit(fn, size=64):
    doc = json.loads(_index([_compressed()], size).to_json())
    fn(doc["tensors"]["z/.ATTRIBUTES/VARIABLE_VALUE"])
    return json.dumps(doc)


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda t: t.update(offset=4096), "compressed .chunked. but names an offset"),
        (lambda t: t.update(chunks=[0, 30]), "bad chunk shape"),
        (lambda t: t.update(chunks=[41, 30]), "bad chunk shape"),
        (lambda t: t.update(chunks=[20]), "bad chunk shape"),
        (lambda t: t.pop("chunks"), "bad chunk shape"),
        (lambda t: t.update(chunks=[20, 30.0]), "bad chunk shape"),
        (lambda t: t.update(filters=[{"filter": "lzf"}]), "filters"),
        (lambda t: t.update(filters=None), "filters"),
        (lambda t: t.update(nbytes=1), "nbytes"),
        (lambda t: t.update(shape=[0, 30], nbytes=0), "cannot be compressed"),
    ],
)
def test_hostile_compressed_records_are_refused(edit, match):
    with pytest.raises(CorruptCheckpointError, match=match):
        parse_index(_edit(edit))


def test_a_contiguous_record_must_still_fit_the_data_file():
    # without "filters", the size and offset checks apply as before
    text = _edit(lambda t: (t.pop("filters"), t.pop("chunks"), t.update(offset=0)))
    with pytest.raises(CorruptCheckpointError, match="more than the data file"):
        parse_index(text)


# --- stripe and block size detection --------------------------------------------------------

MOUNTS = """\
overlay / overlay rw,relatime 0 0
tmpfs /dev/shm tmpfs rw 0 0
10.0.0.1@tcp:/scratch /lustre/scratch lustre rw,flock 0 0
gpfs0 /gpfs gpfs rw 0 0
/dev/sda1 /lustre/scratch/local\\040disk ext4 rw 0 0
"""


def test_the_file_system_type_is_the_longest_mount_holding_the_path():
    assert striping.fs_type_of("/lustre/scratch/run/ckpt", MOUNTS) == "lustre"
    assert striping.fs_type_of("/lustre/scratch", MOUNTS) == "lustre"
    assert striping.fs_type_of("/lustre/scratchy", MOUNTS) == "overlay"
    assert striping.fs_type_of("/lustre/scratch/local disk/x", MOUNTS) == "ext4"
    assert striping.fs_type_of("/gpfs/proj", MOUNTS) == "gpfs"
    assert striping.fs_type_of("/work", MOUNTS) == "overlay"
    assert striping.fs_type_of("/work", "") == "unknown"


def _lov_v1(size: int, count: int, magic: int = striping.LOV_MAGIC_V1) -> bytes:
    head = struct.pack("<II16sIHH", magic, 1, b"\0" * 16, size, count, 0xFFFF)
    return head + b"\0" * 24 * max(count, 0)  # per-stripe objects follow


def _lov_comp(first: bytes, second: bytes) -> bytes:
    header = 32
    entries = 2 * 48
    off1 = header + entries
    off2 = off1 + len(first)
    ents = b"".join(
        struct.pack("<II16sIIIQI", i + 1, 0, b"\0" * 16, off, len(blob), 0, 0, 0)
        for i, (off, blob) in enumerate([(off1, first), (off2, second)])
    )
    total = off2 + len(second)
    head = struct.pack("<IIIHHH6s8s", striping.LOV_MAGIC_COMP_V1, total, 1, 0, 2, 0, b"", b"")
    return head + ents + first + second


def test_lustre_layout_xattrs_are_parsed():
    assert striping.parse_lov_xattr(_lov_v1(4 << 20, 8)) == (4 << 20, 8)
    assert striping.parse_lov_xattr(_lov_v1(1 << 20, 0xFFFF)) == (1 << 20, -1)
    v3 = _lov_v1(2 << 20, 4, striping.LOV_MAGIC_V3) + b"pool\0".ljust(16, b"\0")
    assert striping.parse_lov_xattr(v3) == (2 << 20, 4)
    # progressive file layout: the first component (where the metadata and first datasets live)
    pfl = _lov_comp(_lov_v1(1 << 20, 1), _lov_v1(16 << 20, 32))
    assert striping.parse_lov_xattr(pfl) == (1 << 20, 1)
    for bad in (b"", b"\x00" * 3, _lov_v1(1 << 20, 1)[:20], b"\xd0\x0b\xd1\x0a" + b"\0" * 40):
        assert striping.parse_lov_xattr(bad) is None
    assert striping.parse_lov_xattr(pfl[:40]) is None  # truncated composite
    assert striping.parse_lov_xattr(_lov_v1(0, 1)) is None


def test_lfs_getstripe_outputs_are_parsed():
    old = "stripe_count:  4 stripe_size:   4194304 pattern:       raid0 stripe_offset: -1\n"
    assert striping.parse_lfs_getstripe(old) == (4 << 20, 4)
    yaml = (
        "/lustre/run\n  lmm_stripe_count:  -1\n  lmm_stripe_size:   1048576\n  lmm_pattern: raid0\n"
    )
    assert striping.parse_lfs_getstripe(yaml) == (1 << 20, -1)
    pfl = (
        "  lcm_layout_gen:    0\n  lcm_entry_count:   2\n    lcme_id: N/A\n"
        "      stripe_count:  1       stripe_size:   65536\n"
        "      stripe_count:  8       stripe_size:   16777216\n"
    )
    assert striping.parse_lfs_getstripe(pfl) == (65536, 1)
    assert striping.parse_lfs_getstripe("lfs: not a Lustre file system") is None


class _Fs:
    """Fake system calls for :func:`striping.detect`."""

    def __init__(self, mounts=MOUNTS, bsize=4096, xattr=None, lfs=None):
        self.mounts, self.bsize, self.xattr, self.lfs = mounts, bsize, xattr, lfs
        self.lfs_calls = 0

    def kwargs(self):
        return {
            "statvfs": lambda p: os.statvfs_result((self.bsize,) + (0,) * 10),
            "read_mounts": lambda: self.mounts,
            "getxattr": lambda p, n: self.xattr if n == "lustre.lov" else None,
            "run_lfs": self._lfs,
        }

    def _lfs(self, p):
        self.lfs_calls += 1
        return self.lfs


def test_detect_on_lustre_prefers_the_directory_layout_xattr():
    fs = _Fs(xattr=_lov_v1(8 << 20, 16), lfs="stripe_count: 2 stripe_size: 65536")
    got = striping.detect("/lustre/scratch/run", **fs.kwargs())
    assert (got.fs_type, got.stripe_size, got.stripe_count, got.source) == (
        "lustre",
        8 << 20,
        16,
        "lustre.lov",
    )
    assert fs.lfs_calls == 0 and striping.alignment_for(got) == 8 << 20


def test_detect_on_lustre_falls_back_to_lfs_then_to_the_default():
    fs = _Fs(lfs="stripe_count:  2 stripe_size:   65536 pattern: 0 stripe_offset: -1")
    got = striping.detect("/lustre/scratch/run", **fs.kwargs())
    assert (got.stripe_size, got.stripe_count, got.source) == (65536, 2, "lfs")
    assert striping.alignment_for(got) == 65536  # smaller than 1 MiB: the stripe wins
    got = striping.detect("/lustre/scratch/run", **_Fs().kwargs())
    assert (got.stripe_size, got.source) == (1 << 20, "lustre-default")


def test_detect_elsewhere_uses_the_block_size_with_a_floor():
    got = striping.detect("/gpfs/proj", **_Fs(bsize=16 << 20).kwargs())
    assert (got.fs_type, got.block_size, got.stripe_size) == ("gpfs", 16 << 20, None)
    assert striping.alignment_for(got) == 16 << 20
    local = striping.detect("/work/x", **_Fs(bsize=4096).kwargs())
    assert local.fs_type == "overlay" and striping.alignment_for(local) == 1 << 20
    huge = striping.FsLayout("gpfs", 8 << 30)
    assert striping.alignment_for(huge) == 1 << 30


def test_alignment_precedence_and_striping_hints(tmp_path):
    d = str(tmp_path)
    assert striping.resolve_alignment(4096, 65536, d) == 4096
    assert striping.resolve_alignment(None, 65536, d) == 65536
    real = striping.alignment_for(striping.detect(d))
    assert striping.resolve_alignment(None, None, d) == real >= 1 << 20
    assert striping.striping_hints(None, None, None) is None
    assert striping.striping_hints(4, 1 << 20, {"cb_nodes": "2"}) == {
        "cb_nodes": "2",
        "striping_factor": "4",
        "striping_unit": "1048576",
    }
    # the user's own hints win
    assert striping.striping_hints(4, None, {"striping_factor": "8"}) == {"striping_factor": "8"}
