"""What repeat saves keep between saves is small for Python's garbage collector: per
Variable one memo tuple (its layout, array, spec), everything else in it (pieces, slice
numbers, the io layer's numbers and text) untracked, and rank 0's index template made of
untracked tuples. (The collector walks every tracked object at each full collection,
after every save and restore included: a memo of many objects slowed restores.)"""

from __future__ import annotations

import gc

import numpy as np

import hpckpt
from hpckpt.io import write as w


def test_the_save_memo_adds_one_tracked_object_per_variable(tmp_path) -> None:
    mesh = hpckpt.create_mesh([("x", 1)])
    rows = hpckpt.Layout(["x", hpckpt.UNSHARDED], mesh)
    vs = {f"v{i}": hpckpt.Variable(np.full((4, 3), float(i)), rows) for i in range(300)}
    vs.update({f"b{i}": hpckpt.Variable(np.arange(5.0) + i) for i in range(100)})
    ckpt = hpckpt.Checkpoint(**vs)
    prefix = str(tmp_path / "ck")
    for _ in range(3):  # the third save renders rank 0's index template
        ckpt.write(prefix)
    gc.collect()
    gc.collect()
    for v in vs.values():
        memo = v._save_memo
        assert memo is not None
        layout, spec = memo.layout, memo.spec
        others = [x for x in memo if x is not layout and x is not spec]
        tracked = [type(x).__name__ for x in others if gc.is_tracked(x)]
        assert tracked == [], tracked
        assert memo.io, "the io layer kept nothing"
    templates = [p.index for p in w._PLANS.values() if p.index is not None]
    assert templates
    for t in templates:
        assert not any(gc.is_tracked(p) for p in t.parts if p is not None)
    # and the memo is used: the saved values are the current ones
    vs["v7"].local[...] = 70.0
    ckpt.write(prefix)
    fresh = hpckpt.Variable(np.zeros((4, 3)), rows)
    hpckpt.Checkpoint(**{**vs, "v7": fresh}).read(prefix)
    assert np.array_equal(fresh.numpy(), np.full((4, 3), 70.0))
