"""The restore plan, pure: for any saved layout and any restore layout (or boxes) on any
rank count, every needed saved slice is read whole by exactly one rank (so it is
verified whole), and every element of every rank's new slice comes from exactly one
verified slice: kept by its reader or sent by it to exactly that rank.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hpckpt.io.index import REPLICA_SPLIT_BYTES, TensorEntry
from hpckpt.io.read import ReadRequest, _plan
from hpckpt.io.slicing import DerivedSlicing, box_intersection
from hpckpt.layout import LayoutSpec


@st.composite
def layout_on(draw: st.DrawFn, shape: tuple[int, ...], nprocs: int) -> LayoutSpec:
    if nprocs > 1 and draw(st.booleans()):
        a = draw(st.sampled_from([d for d in range(1, nprocs + 1) if nprocs % d == 0]))
        names, mshape = ("x", "y"), (a, nprocs // a)
    else:
        names, mshape = ("x",), (nprocs,)
    free = list(names)
    specs = []
    for _ in shape:
        s = draw(st.sampled_from(["unsharded", *free]))
        if s != "unsharded":
            free.remove(s)
        specs.append(s)
    splits = []
    for d, s in enumerate(specs):
        if s != "unsharded" and draw(st.booleans()):
            k = mshape[names.index(s)]
            inner = sorted(draw(st.lists(st.integers(0, shape[d]), min_size=k - 1, max_size=k - 1)))
            splits.append((s, (0, *inner, shape[d])))
    return LayoutSpec(tuple(specs), names, mshape, tuple(sorted(splits)))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_element_comes_from_exactly_one_verified_slice(data: st.DataObject) -> None:
    saved_p = data.draw(st.integers(1, 6), label="saving ranks")
    p = data.draw(st.integers(1, 6), label="restoring ranks")
    shape = tuple(data.draw(st.lists(st.integers(0, 7), max_size=3), label="shape"))
    saved = data.draw(layout_on(shape, saved_p), label="saved layout")
    split = data.draw(st.sampled_from([1, 64, REPLICA_SPLIT_BYTES]))
    rows = data.draw(st.booleans(), label="row bands")
    slicing = DerivedSlicing(shape, saved, 8, split, rows)
    entry = TensorEntry(
        "t", "t", np.dtype("<f8"), shape, 0, saved, slicing, np.zeros(len(slicing), np.uint32)
    )
    use_boxes = data.draw(st.booleans(), label="per-rank boxes")
    if data.draw(st.booleans(), label="restore on the saved layout"):
        p, target = saved_p, saved
    else:
        target = data.draw(layout_on(shape, p), label="restore layout")

    def box(r: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        coords = [int(c) for c in np.unravel_index(r, target.mesh_shape)]
        sl = target.shard(shape, coords)
        return tuple(s.start for s in sl), tuple(s.stop - s.start for s in sl)

    boxes = {0: [box(r) for r in range(p)]} if use_boxes else {}
    reads = np.zeros(len(slicing), dtype=np.int64)
    received = {r: np.zeros(shape, dtype=np.int64) for r in range(p)}
    sent: dict[tuple[int, int, int], tuple] = {}  # (owner, dest, slice) -> part
    plans = {}
    for r in range(p):
        start, sh = box(r)
        req = ReadRequest(entry, start, sh, layout=None if use_boxes else target, mesh_rank=r)
        (plans[r],) = _plan([req], boxes, not use_boxes, r)
        for o in plans[r].owned:
            reads[o.i] += 1
            assert o.box == slicing.box(o.i)
            assert o.local_part == box_intersection(o.box, (start, sh))
            received[r][tuple(slice(a, a + n) for a, n in zip(*o.local_part, strict=True))] += 1
            for dest, part in o.sends:
                assert dest != r
                sent[(r, dest, o.i)] = part
    # every non-empty slice that some rank needs is read by exactly one rank
    needed = set()
    for r in range(p):
        start, sh = box(r)
        if math.prod(sh) or not shape:
            needed.update(slicing.query((start, sh)))
    assert all(reads[i] == 1 for i in needed)
    assert all(reads[i] == 0 for i in range(len(slicing)) if i not in needed)
    # each receive matches exactly one send of the same part, from the slice's reader
    matched = 0
    for r in range(p):
        for _, owner, part in plans[r].recvs:
            owners = [k for k in sent if k[0] == owner and k[1] == r and sent[k] == part]
            assert len(owners) == 1, (r, owner, part)
            matched += 1
            received[r][tuple(slice(a, a + n) for a, n in zip(*part, strict=True))] += 1
    assert matched == len(sent)
    # every element of every rank's new slice arrives exactly once
    for r in range(p):
        start, sh = box(r)
        region = received[r][tuple(slice(a, a + n) for a, n in zip(start, sh, strict=True))]
        assert (region == 1).all()
        outside = received[r].copy()
        outside[tuple(slice(a, a + n) for a, n in zip(start, sh, strict=True))] = 0
        assert not outside.any()
