"""Rank 0's reconstruction of who wrote which slice from packed checksum arrays, pure:
for any layouts and rank counts (both the loop for small jobs and the vectorized path),
every rank's checksums land on the slices that rank wrote."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hpckpt.io.records import rows_from_layouts as _rows_from_layouts
from hpckpt.io.save_tensor import SaveTensor, derived_slicing
from hpckpt.io.slicing import mesh_coords
from hpckpt.layout import LayoutSpec


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_checksums_land_on_the_slices_their_rank_wrote(data: st.DataObject) -> None:
    nranks = data.draw(st.sampled_from([1, 3, 4, 12, 70, 96]))
    a = data.draw(st.sampled_from([d for d in range(1, nranks + 1) if nranks % d == 0]))
    mesh = (("x", "y"), (a, nranks // a))
    tensors = []
    for n in range(data.draw(st.integers(1, 5))):
        shape = tuple(data.draw(st.lists(st.integers(0, 300), min_size=1, max_size=2)))
        specs = tuple(data.draw(st.sampled_from(["x", "y", "unsharded"])) for _ in shape)
        if len(specs) == 2 and specs[0] == specs[1] != "unsharded":
            specs = (specs[0], "unsharded")
        spec = LayoutSpec(specs, *mesh)
        dt = np.dtype(data.draw(st.sampled_from(["<f8", "|u1"])))
        tensors.append(
            SaveTensor(f"t{n}", dt, shape, spec, [], ordinal=n, rows=data.draw(st.booleans()))
        )
    # what each rank would send: the crc of each slice it writes, in tensor order
    sent = []
    for r in range(nranks):
        mine = []
        for t in tensors:
            sl = derived_slicing(t.shape, t.layout, t.dtype, t.rows)
            i = sl.written_by(mesh_coords(r, mesh[1]), t.ordinal)
            if i is not None:
                mine.append(hash((t.key, i, r)) & 0xFFFFFFFF)
        sent.append(np.asarray(mine, dtype=np.uint32))
    rows = _rows_from_layouts(tensors, sent, "test")
    for ti, k, crc, r in rows.tolist():
        assert crc == hash((tensors[ti].key, k, r)) & 0xFFFFFFFF
    assert len(rows) == sum(len(x) for x in sent)


def test_the_structure_hash_kept_in_a_tensors_memo_follows_its_key_and_rows() -> None:
    """A tensor's text in the structure hash is kept in its memo for the next save, and
    made again when its key or its ``rows`` differ: the hash is the memo-less one."""
    import dataclasses

    from hpckpt.io.save_tensor import structure_hash

    spec = LayoutSpec(("x", "unsharded"), ("x",), (2,))

    def tensors(memos, key="a", rows=False):
        return [
            SaveTensor(key, np.dtype("<f4"), (8, 4), spec, [], ordinal=0, rows=rows, memo=memos[0]),
            SaveTensor("b", np.dtype("<f8"), (3,), None, [], memo=memos[1]),
        ]

    memos = [{}, {}]
    plain = structure_hash(tensors([None, None]))
    assert structure_hash(tensors(memos)) == plain  # fills the memos
    assert all("structure" in m for m in memos)
    assert structure_hash(tensors(memos)) == plain  # from the memos
    for kw in ({"key": "renamed"}, {"rows": True}):
        assert structure_hash(tensors(memos, **kw)) == structure_hash(tensors([None, None], **kw))
        assert structure_hash(tensors(memos, **kw)) != plain
    t = tensors(memos)
    assert structure_hash([dataclasses.replace(t[0], rows=True), t[1]]) != plain
