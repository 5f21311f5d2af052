"""The object graph, pure: building it from live objects, storing it, parsing it back.

Runs in the serial pass (a Variable needs a mesh: MPI's singleton world, no mpirun).
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hpckpt
from hpckpt.errors import CorruptCheckpointError
from hpckpt.graph import build_save_graph, escape_name, parse_graph


def V(x: float = 0.0) -> hpckpt.Variable:
    return hpckpt.Variable(np.float64(x))


class Owner(hpckpt.Module):
    def __init__(self) -> None:
        super().__init__()
        self.count = V()


def _round_trip(root: object):
    g = build_save_graph(root)
    doc = g.to_json()
    keys = {k for k, _ in g.variables} | {k for k, _ in g.python_states}
    parsed = parse_graph(doc, keys)
    assert parsed.to_json() == doc
    return g, parsed


def test_keys_follow_tf_and_shared_objects_are_saved_once() -> None:
    m = hpckpt.Module()
    m.l1 = hpckpt.Module()
    m.l1.kernel = V(1)
    m.again = m.l1  # a second path to the same object
    m.items = [V(2), {"a.b/c": V(3)}]
    m.pair = collections.namedtuple("P", "x y")(V(4), 5)
    opt = Owner()
    slot = V(6)
    opt._add_slot(m.l1.kernel, "m", slot)
    root = hpckpt.Checkpoint(net=m, opt=opt)
    g, parsed = _round_trip(root)
    keys = [k for k, _ in g.variables]
    assert "net/l1/kernel/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "net/items/0/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "net/items/1/a..b.Sc/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "net/pair/x/.ATTRIBUTES/VARIABLE_VALUE" in keys
    assert "net/l1/kernel/.OPTIMIZER_SLOT/opt/m" in keys
    assert len(keys) == len(set(keys)) == 6  # the shared l1 once, its kernel once
    assert sum(1 for n in parsed.nodes if n.kind == "variable") == 6


def test_slot_saved_only_with_variable_and_owner() -> None:
    v, opt = V(1), Owner()
    opt._add_slot(v, "m", V(2))
    keys = [k for k, _ in build_save_graph(hpckpt.Checkpoint(opt=opt)).variables]
    assert not any("OPTIMIZER_SLOT" in k for k in keys)


def test_escape_name() -> None:
    assert escape_name("a.b/c") == "a..b.Sc"
    assert escape_name(".") == ".D"  # never a ".." path component (keys refuse them)
    assert escape_name("..") == "...."


trees = st.recursive(
    st.just("var"),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text("ab./", min_size=1, max_size=3), children, max_size=3),
        st.dictionaries(st.sampled_from(["p", "q", "r"]), children, max_size=3).map(
            lambda d: ("module", d)
        ),
    ),
    max_leaves=12,
)


def _build(t):
    if t == "var":
        return V()
    if isinstance(t, tuple):
        m = hpckpt.Module()
        for k, c in t[1].items():
            setattr(m, k, _build(c))
        return m
    if isinstance(t, list):
        return [_build(c) for c in t]
    return {k: _build(c) for k, c in t.items()}


@settings(max_examples=60, deadline=None)
@given(trees)
def test_any_graph_round_trips_and_names_each_variable_once(tree) -> None:
    root = hpckpt.Module()
    root.tree = _build(tree)
    g, _ = _round_trip(root)
    keys = [k for k, _ in g.variables]
    assert len(keys) == len(set(keys))
    assert len(keys) == str(tree).count("var")


@pytest.mark.parametrize(
    "doc,message",
    [
        ({}, "no node list"),
        ({"nodes": []}, "no node list"),
        ({"nodes": [{"kind": "alien", "children": [], "slots": []}]}, "bad kind"),
        ({"nodes": [{"kind": "object", "children": [["a", 5]], "slots": []}]}, "bad node"),
        ({"nodes": [{"kind": "object", "children": [["a", True]], "slots": []}]}, "bad node"),
        ({"nodes": [{"kind": "object", "children": [[1, 0]], "slots": []}]}, "bad edge"),
        ({"nodes": [{"kind": "object", "children": [], "slots": [[0, 1]]}]}, "bad slot"),
        ({"nodes": [{"kind": "object", "children": [], "slots": [], "key": "k"}]}, "with a value"),
        (
            {"nodes": [{"kind": "variable", "children": [], "slots": [], "key": "nope"}]},
            "does not have",
        ),
        ({"nodes": ["x"]}, "not an object"),
    ],
)
def test_hostile_graphs_are_refused(doc, message) -> None:
    with pytest.raises(CorruptCheckpointError, match=message):
        parse_graph(doc, {"k"})
