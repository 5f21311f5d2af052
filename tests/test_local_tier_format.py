"""Multi-level checkpointing, pure parts: node maps, local-tier file names, the local
index (round trip, the two parser modes agree, hostile documents), LocalTier arguments.

No MPI job, no HDF5: these run in the serial pass.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import hpckpt
from hpckpt.errors import CorruptCheckpointError
from hpckpt.io.index import CheckpointIndex, TensorEntry
from hpckpt.io.local_index import LocalIndex, SliceLocations, parse_local_index, slice_sizes
from hpckpt.io.paths import (
    local_data_name,
    local_directory,
    local_marker_name,
    parse_local_name,
)
from hpckpt.io.slicing import DerivedSlicing, ListedSlicing
from hpckpt.layout import LayoutSpec
from hpckpt.topology import NodeMap, emulated_ranks_per_node

# --- node maps ----------------------------------------------------------------------


def test_blocks_and_partners():
    m = NodeMap.blocks(5, 2)  # nodes {0,1} {2,3} {4}
    assert m.nodes == 3 and m.ranks_of(2) == (4,)
    assert [m.partner_node(i) for i in range(3)] == [1, 2, 0]
    assert [m.partner_rank(r) for r in range(5)] == [2, 3, 4, 4, 0]
    assert m.origins_of(4) == [2, 3] and m.origins_of(0) == [4] and m.origins_of(1) == []
    assert [m.is_leader(r) for r in range(5)] == [True, False, True, False, True]
    # every rank's data goes to exactly one rank of the next node
    for r in range(5):
        p = m.partner_rank(r)
        assert m.node_of[p] == m.partner_node(m.node_of[r]) and r in m.origins_of(p)


def test_one_node_has_no_partner_pairs():
    m = NodeMap.blocks(3, 3)
    assert m.nodes == 1 and all(m.origins_of(r) == [] for r in range(3))


def test_non_consecutive_nodes():
    m = NodeMap((0, 1, 0, 1))  # round-robin placement
    assert m.ranks_of(0) == (0, 2) and m.partner_rank(2) == 3 and m.local_index(3) == 1


@pytest.mark.parametrize("bad", [(), (1, 0), (0, 2), (0, -1)])
def test_bad_node_maps(bad):
    with pytest.raises(ValueError):
        NodeMap(bad)


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_bad_ranks_per_node_is_named(raw):
    with pytest.raises(ValueError, match="HPCKPT_RANKS_PER_NODE"):
        emulated_ranks_per_node({"HPCKPT_RANKS_PER_NODE": raw})
    assert emulated_ranks_per_node({}) is None
    assert emulated_ranks_per_node({"HPCKPT_RANKS_PER_NODE": " 4 "}) == 4


# --- names --------------------------------------------------------------------------


def test_local_names_round_trip():
    assert local_directory("/dev/shm/run-{node}/x", 3) == "/dev/shm/run-3/x"
    assert local_directory("/dev/shm/run", 3) == "/dev/shm/run"
    name = local_data_name("ckpt-7", 2, "partner", "00ff00ff00ff00ff")
    info = parse_local_name(name)
    assert info is not None and (info.kind, info.checkpoint, info.node, info.copy) == (
        "data",
        "ckpt-7",
        2,
        "partner",
    )
    assert parse_local_name(local_marker_name("ckpt-7")).kind == "marker"
    assert parse_local_name("ckpt-7.local.json.tmp-00ff").kind == "tmp"
    for other in ("ckpt-7.index.json", "checkpoint", ".hidden.local.json", "x.node-1.own-zz.bin"):
        assert parse_local_name(other) is None
    with pytest.raises(ValueError):
        local_data_name("c", 0, "third", "00ff00ff")


# --- the local index ----------------------------------------------------------------

TOKEN = "0123456789abcdef"


def make_index() -> LocalIndex:
    """4 ranks on 2 nodes: a (6, 4) float64 tensor sharded by rows, Python state."""
    nodes = NodeMap.blocks(4, 2)
    spec = LayoutSpec(("x", "unsharded"), ("x",), (4,), ())
    w = TensorEntry(
        "w/.ATTRIBUTES/VARIABLE_VALUE",
        "w",
        np.dtype("<f8"),
        (6, 4),
        0,
        spec,
        DerivedSlicing((6, 4), spec, 8, 1 << 20),
        np.array([11, 22, 33, 44], dtype=np.uint32),
    )
    st = TensorEntry(
        "pos/.ATTRIBUTES/PYTHON_STATE",
        "pos%",
        np.dtype("|u1"),
        (5,),
        192,
        None,
        ListedSlicing(np.array([[0]]), np.array([[5]])),
        np.array([55], dtype=np.uint32),
    )
    index = CheckpointIndex(
        data_file=f"ckpt-1.data-{TOKEN}.h5",
        data_size=197,
        tensors={w.key: w, st.key: st},
        nprocs=4,
        created=1.5,
        graph=None,
    )
    # rows of 2,2,1,1 x 32 bytes: ranks 0,1 on node 0, ranks 2,3 on node 1
    locations = {
        w.key: SliceLocations(np.array([0, 1, 2, 3]), np.array([0, 4096, 0, 4096])),
        st.key: SliceLocations(np.array([0]), np.array([64])),
    }
    return LocalIndex("ckpt-1", 1.5, TOKEN, nodes, "partner", [8192, 8192], locations, index)


def test_round_trip_and_modes_agree():
    li = make_index()
    text = li.to_json()
    a = parse_local_index(text)
    b = parse_local_index(text, trusted=True)
    for x in (a, b):
        assert (x.name, x.token, x.nodes, x.redundancy, x.file_sizes) == (
            li.name,
            li.token,
            li.nodes,
            li.redundancy,
            li.file_sizes,
        )
        assert x.index.tensors == li.index.tensors
        for k, loc in li.locations.items():
            assert np.array_equal(x.locations[k].ranks, loc.ranks)
            assert np.array_equal(x.locations[k].offsets, loc.offsets)
    assert a.has_partner_copies and a.data_file(1, "own") == f"ckpt-1.node-1.own-{TOKEN}.bin"
    assert slice_sizes(li.index.tensors["w/.ATTRIBUTES/VARIABLE_VALUE"]).tolist() == [
        64,
        64,
        32,
        32,
    ]


def _hostile(mutate) -> str:
    doc = json.loads(make_index().to_json())
    mutate(doc)
    return json.dumps(doc)


def _pack(values, dtype):
    import base64

    return base64.b64encode(np.asarray(values, dtype=dtype).tobytes()).decode()


W = "w/.ATTRIBUTES/VARIABLE_VALUE"
HOSTILE = {
    "not json": lambda d: d.clear(),
    "format": lambda d: d.update(format="hpckpt"),
    "version": lambda d: d.update(version=99),
    "token": lambda d: d.update(token="../x"),
    "name": lambda d: d.update(name="a/b"),
    "node map length": lambda d: d.update(node_of=[0, 0, 1]),
    "node map order": lambda d: d.update(node_of=[1, 1, 0, 0]),
    "sizes": lambda d: d.update(files=[8192]),
    "negative size": lambda d: d.update(files=[8192, -1]),
    "redundancy": lambda d: d.update(redundancy="xor"),
    "nprocs": lambda d: d.update(nprocs=3),
    "missing locations": lambda d: d["locations"].pop(W),
    "short ranks": lambda d: d["locations"][W].update(ranks=_pack([0, 1, 2], "<i4")),
    "writer rank": lambda d: d["locations"][W].update(ranks=_pack([0, 1, 2, 9], "<i4")),
    "no writer": lambda d: d["locations"][W].update(ranks=_pack([0, 1, -1, 3], "<i4")),
    "outside file": lambda d: d["locations"][W].update(offsets=_pack([0, 8160, 0, 0], "<i8")),
    "negative offset": lambda d: d["locations"][W].update(offsets=_pack([0, -8, 0, 0], "<i8")),
    "overflow": lambda d: d["locations"][W].update(offsets=_pack([0, 2**63 - 8, 0, 0], "<i8")),
    "bad base64": lambda d: d["locations"][W].update(offsets="!!"),
    "index": lambda d: d["index"].update(version=7),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_local_index_is_refused(case):
    text = "{" if case == "not json" else _hostile(HOSTILE[case])
    with pytest.raises(CorruptCheckpointError):
        parse_local_index(text, source="test")


# --- LocalTier ----------------------------------------------------------------------


def test_local_tier_arguments():
    t = hpckpt.LocalTier("/dev/shm/run-{node}")
    assert (t.keep, t.redundancy, t.directory(2)) == (2, "partner", "/dev/shm/run-2")
    for bad in ({"keep": 0}, {"keep": True}, {"keep": 1.5}, {"redundancy": "xor"}):
        with pytest.raises(ValueError, match=r"keep|redundancy"):
            hpckpt.LocalTier("/x", **bad)
    for path in ("", "a\x00b"):
        with pytest.raises(ValueError, match="path"):
            hpckpt.LocalTier(path)
