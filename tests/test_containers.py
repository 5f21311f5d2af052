"""Tracked lists, dicts and tuples, pure: TensorFlow's wrapper semantics (issue 12).

A list or dict assigned to a tracked attribute wraps the caller's object (changes
show through both); a change that renames list items, or one made around the
wrapper, makes the container refuse to be saved instead of saving values under
names that no longer identify their objects. Runs in the serial pass.
"""

from __future__ import annotations

import collections
import copy
import json
import pickle

import numpy as np
import pytest

import hpckpt
from hpckpt.graph import TrackedDict, TrackedList, build_save_graph, children_of


def V(x: float = 0.0) -> hpckpt.Variable:
    return hpckpt.Variable(np.float64(x))


def keys_of(obj: object) -> list[str]:
    return [k for k, _ in build_save_graph(hpckpt.Checkpoint(x=obj)).variables]


def unsaveable(obj: object, match: str = "Unable to save") -> None:
    with pytest.raises(ValueError, match=match):
        build_save_graph(hpckpt.Checkpoint(x=obj))


def test_a_list_wraps_the_callers_list_both_ways() -> None:
    raw: list = []
    m = hpckpt.Module()
    m.l = raw
    assert isinstance(m.l, TrackedList) and isinstance(m.l, list)
    m.l.append(1)  # through the wrapper
    assert raw == [1]
    v = V()
    m.l.append(v)
    assert raw[1] is v and children_of(m.l) == [("1", v)]
    inner: list = [2]
    m.l.append(inner)  # a nested list is wrapped around the caller's list too
    assert isinstance(raw[2], TrackedList) and raw[2]._hpckpt_storage is inner


@pytest.mark.parametrize(
    "mutate",
    [
        lambda x: x.__delitem__(0),
        lambda x: x.__delitem__(slice(0, 1)),
        lambda x: x.__setitem__(0, V()),
        lambda x: x.__setitem__(slice(None), [1, 2]),
        lambda x: x.insert(0, 5),
        lambda x: x.pop(),
        lambda x: x.pop(0),
        lambda x: x.remove(x[0]),
        lambda x: x.clear(),
        lambda x: x.reverse(),
        lambda x: x.sort(key=id),
        lambda x: x.__imul__(0),
    ],
    ids=[
        "del",
        "del-slice",
        "set",
        "set-slice",
        "insert",
        "pop",
        "pop0",
        "remove",
        "clear",
        "reverse",
        "sort",
        "imul0",
    ],
)
def test_renaming_a_trackable_item_makes_the_list_unsaveable(mutate) -> None:
    m = hpckpt.Module()
    m.l = [V(1), V(2)]
    mutate(m.l)
    unsaveable(m.l)


def test_append_extend_and_positive_imul_keep_names() -> None:
    a, b = V(1), V(2)
    m = hpckpt.Module()
    m.l = [a]
    m.l.append(b)
    m.l.extend([3])
    m.l += [4]
    m.l *= 2
    assert m.l == [a, b, 3, 4, a, b, 3, 4]
    assert [n for n, _ in children_of(m.l)] == ["0", "1", "4", "5"]
    # a list of plain values may be changed in any way
    m.p = [3, 1, 2]
    m.p.sort()
    del m.p[0]
    m.p.insert(0, 7)
    assert keys_of(m.p) == [] and m.p == [7, 2, 3]


def test_a_change_around_the_wrapper_makes_it_unsaveable_and_copies_inherit_it() -> None:
    raw = [V(1)]
    m = hpckpt.Module()
    m.l = raw
    assert len(keys_of(m.l)) == 1
    raw.append(V(2))  # not through the wrapper
    assert len(m.l) == 2 and m.l[1] is raw[1]  # the wrapper sees it
    unsaveable(m.l, "modified outside the wrapper")
    unsaveable(copy.copy(m.l), "modified outside the wrapper")
    unsaveable(copy.deepcopy(m.l), "modified outside the wrapper")


def test_dicts_wrap_the_callers_dict_and_notice_changes_around_it() -> None:
    raw: dict = {"a": V(1)}
    m = hpckpt.Module()
    m.d = raw
    assert isinstance(m.d, TrackedDict) and isinstance(m.d, dict)
    m.d["b"] = V(2)
    assert set(raw) == {"a", "b"}
    del m.d["a"]  # through the wrapper: fine, names are keys
    assert [n for n, _ in children_of(m.d)] == ["b"]
    assert m.d.pop("b") is not None and m.d == {} and raw == {}
    m.d.update(c=V(3))
    assert dict(m.d) == raw and json.loads(json.dumps({k: 1 for k in m.d})) == {"c": 1}
    raw["e"] = V(4)  # around the wrapper
    with pytest.raises(ValueError, match="modified outside the wrapper"):
        build_save_graph(hpckpt.Checkpoint(x=m.d))


def test_builtin_readers_see_the_wrapped_contents() -> None:
    m = hpckpt.Module()
    m.l = [1, 2]
    m.d = {"k": 1}
    m.l.append(3)
    assert json.dumps(m.l) == "[1, 2, 3]" and json.dumps(m.d) == '{"k": 1}'
    assert list(m.l) == [1, 2, 3] and tuple(m.l) == (1, 2, 3) and sorted(m.l) == [1, 2, 3]
    assert np.asarray(m.l).tolist() == [1, 2, 3]
    assert {**m.d} == {"k": 1} and dict(m.d) == {"k": 1}
    assert pickle.loads(pickle.dumps(m.l)) == [1, 2, 3]
    assert pickle.loads(pickle.dumps(m.d)) == {"k": 1}
    with pytest.raises(TypeError):
        hash(m.l)
    with pytest.raises(TypeError):
        hash(m.d)


def test_namedtuples_are_tracked_by_field_and_by_index() -> None:
    P = collections.namedtuple("P", "x y")
    v = V(1)
    m = hpckpt.Module()
    m.p = P(v, [V(2)])
    names = [n for n, _ in children_of(m.p)]
    assert names == ["x", "y", "0", "1"]
    # values are named by the first path (the field), once each
    assert keys_of(m.p) == ["x/x/.ATTRIBUTES/VARIABLE_VALUE", "x/y/0/.ATTRIBUTES/VARIABLE_VALUE"]


def test_a_namedtuple_that_cannot_be_rebuilt_is_unsaveable() -> None:
    class Custom(collections.namedtuple("Custom", ["x"])):
        def __new__(cls):
            return super().__new__(cls, [])

    m = hpckpt.Module()
    m.nt = Custom()
    m.nt.x.append(V(1.0))  # the raw list: its changes cannot be tracked
    unsaveable(m.nt, "cannot be rebuilt")


def test_deepcopy_gives_new_buffers_on_the_same_mesh() -> None:
    m = hpckpt.Module()
    m.v = V(1.0)
    m.items = [m.v, {"w": V(2.0)}]
    c = copy.deepcopy(m)
    assert c.v is not m.v and c.items[0] is c.v  # aliasing kept
    assert c.v.local is not m.v.local and np.shares_memory(c.v.local, m.v.local) is False
    assert c.v.layout.mesh is m.v.layout.mesh
    assert copy.deepcopy(m.v.layout.mesh) is m.v.layout.mesh
    c.v.assign(5.0)
    assert float(m.v.local) == 1.0
    assert keys_of(c) == keys_of(m)
