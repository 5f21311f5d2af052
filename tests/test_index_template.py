"""Rank 0's index template for saves of an unchanged structure, pure: for any layouts,
rank counts, per-rank-box tensors and checksums, the rendered text is the text that the
entries built one by one give (``CheckpointIndex.to_json``), and a rank that sends
another number of checksums than its layouts say fails the save."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpckpt.errors import CheckpointError
from hpckpt.io.index import CheckpointIndex, dataset_name_for_key
from hpckpt.io.index_template import IndexTemplate
from hpckpt.io.records import index_entries, rows_from_layouts
from hpckpt.io.save_tensor import SaveTensor, derived_slicing
from hpckpt.io.slicing import mesh_coords
from hpckpt.layout import LayoutSpec


def _structure(data: st.DataObject) -> tuple[list[SaveTensor], int]:
    nranks = data.draw(st.sampled_from([1, 2, 3, 4, 6, 70]))
    a = data.draw(st.sampled_from([d for d in range(1, nranks + 1) if nranks % d == 0]))
    mesh = (("x", "y"), (a, nranks // a))
    tensors = []
    for n in range(data.draw(st.integers(1, 6))):
        key = data.draw(st.sampled_from(["w", "b", 'q"uote', "ünï/çødé", "s p\\a"])) + f"/{n}"
        if data.draw(st.integers(0, 4)) == 0:  # per-rank boxes: one box, written by rank 0
            shape = (data.draw(st.integers(0, 9)),)
            tensors.append(SaveTensor(key, np.dtype("|u1"), shape, None, [], ordinal=n))
            continue
        shape = tuple(data.draw(st.lists(st.integers(0, 300), min_size=0, max_size=2)))
        specs = tuple(data.draw(st.sampled_from(["x", "y", "unsharded"])) for _ in shape)
        if len(specs) == 2 and specs[0] == specs[1] != "unsharded":
            specs = (specs[0], "unsharded")
        spec = LayoutSpec(specs, *mesh)
        dt = np.dtype(data.draw(st.sampled_from(["<f8", "|u1", "<u2"])))
        logical = "bfloat16" if dt == np.dtype("<u2") else None
        rows = bool(shape) and data.draw(st.booleans())
        tensors.append(
            SaveTensor(key, dt, shape, spec, [], ordinal=n, rows=rows, logical_dtype=logical)
        )
    tensors.sort(key=lambda t: t.key)
    return tensors, nranks


def _sent(tensors: list[SaveTensor], nranks: int, seed: int) -> list[np.ndarray]:
    """Each rank's packed checksums: one per slice it writes, in tensor order."""
    rng = np.random.default_rng(seed)
    sent = []
    for r in range(nranks):
        n = 0
        for t in tensors:
            if t.layout is None:
                continue
            sl = derived_slicing(t.shape, t.layout, t.dtype, t.rows)
            n += sl.written_by(mesh_coords(r, t.layout.mesh_shape), t.ordinal) is not None
        sent.append(rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32))
    return sent


def _listed(tensors: list[SaveTensor], seed: int) -> np.ndarray:
    """Rank 0's records of the per-rank-box tensors: ``[tensor, crc, rank, start, shape]``."""
    rows = [[i, seed * 7 + i, 0, 0, t.shape[0]] for i, t in enumerate(tensors) if t.layout is None]
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), 5)


def _slow(tensors, names, offsets, sent, listed, meta) -> tuple[str, dict, np.ndarray]:
    derived = rows_from_layouts(tensors, sent, "test")
    entries = index_entries(tensors, names, offsets, derived, listed, "test")
    return CheckpointIndex(tensors=entries, **meta).to_json(), entries, derived


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_rendered_index_is_the_index_built_entry_by_entry(data: st.DataObject) -> None:
    tensors, nranks = _structure(data)
    names = [dataset_name_for_key(t.key) for t in tensors]
    offsets = [4096 * (i + 1) for i in range(len(tensors))]
    meta = {
        "data_file": "ck.data-1.h5",
        "data_size": 123,
        "nprocs": nranks,
        "created": 1.5,
        "graph": {"nodes": [{"key": "ü", "children": []}]},
        "library": {"hpckpt": "test"},
        "structure_checksum": 77,
    }
    first, entries, rows = _slow(
        tensors, names, offsets, _sent(tensors, nranks, 1), _listed(tensors, 1), meta
    )
    template = IndexTemplate.build(tensors, entries, rows, nranks)
    # later saves: other checksums, other per-save fields, the same or another graph
    graphs = [{"nodes": []}, {"nodes": []}, meta["graph"], None, None]
    for n, graph in enumerate(graphs):
        sent = _sent(tensors, nranks, 2 + n)
        listed = _listed(tensors, 2 + n)
        meta2 = dict(meta, data_file=f"ck.data-{n}.h5", created=2.25 + n, graph=graph)
        want, _, _ = _slow(tensors, names, offsets, sent, listed, meta2)
        only = index_entries(
            tensors, names, offsets, np.zeros((0, 4), np.int64), listed, "t", listed_only=True
        )
        got = template.render(
            CheckpointIndex(tensors={}, **meta2), sent, only, [t.key for t in tensors], "test"
        )
        assert got == want, n
        assert json.loads(got)["data_file"]["name"] == f"ck.data-{n}.h5"
        assert json.loads(got)["graph"] == graph
        if any(len(s) for s in sent):
            assert got != first


def test_the_index_text_is_one_json_document_in_the_format_order() -> None:
    spec = LayoutSpec(("x",), ("x",), (2,))
    t = SaveTensor("a", np.dtype("<f4"), (4,), spec, [], ordinal=0)
    entries = index_entries(
        [t],
        ["a"],
        [0],
        rows_from_layouts([t], [np.array([1], np.uint32), np.array([2], np.uint32)], "t"),
        np.zeros((0, 3), np.int64),
        "t",
    )
    index = CheckpointIndex(data_file="d", data_size=1, tensors=entries, nprocs=2, created=0.0)
    doc = json.loads(index.to_json())
    assert list(doc) == [
        "format",
        "version",
        "created",
        "nprocs",
        "library",
        "checksum",
        "replica_split_bytes",
        "data_file",
        "layouts",
        "tensors",
        "graph",
    ]
    layouts = CheckpointIndex.layout_table(entries.values())
    assert doc["tensors"] == {"a": entries["a"].to_json(layouts)}


def test_a_rank_that_sends_another_number_of_checksums_fails_the_save() -> None:
    spec = LayoutSpec(("x",), ("x",), (2,))
    tensors = [SaveTensor(f"t{i}", np.dtype("<f4"), (8,), spec, [], ordinal=i) for i in range(3)]
    sent = _sent(tensors, 2, 0)
    _, entries, rows = _slow(
        tensors,
        ["a", "b", "c"],
        [0, 64, 128],
        sent,
        _listed(tensors, 0),
        {"data_file": "d", "data_size": 1, "nprocs": 2, "created": 0.0},
    )
    template = IndexTemplate.build(tensors, entries, rows, 2)
    index = CheckpointIndex(data_file="d", data_size=1, tensors={}, nprocs=2, created=0.0)
    keys = [t.key for t in tensors]
    for bad in ([sent[0], sent[1][:-1]], [sent[0], np.append(sent[1], 5).astype(np.uint32)]):
        with pytest.raises(CheckpointError, match="rank 1 sent"):
            template.render(index, bad, {}, keys, "test")
    with pytest.raises(CheckpointError, match="from 1 ranks"):
        template.render(index, sent[:1], {}, keys, "test")
