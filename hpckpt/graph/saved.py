"""The object graph as saved: built from live objects, parsed back from an index.

:func:`build_save_graph` walks the live graph into a serializable description;
:func:`parse_graph` validates a stored description (pure: no MPI, no files).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import CorruptCheckpointError
from ..variable import Variable
from .base import PythonState, Trackable
from .containers import children_of

__all__ = [
    "PYSTATE_SUFFIX",
    "SLOT_MARKER",
    "VARIABLE_SUFFIX",
    "SaveGraph",
    "SaveNode",
    "SavedGraph",
    "SavedNode",
    "build_save_graph",
    "escape_name",
    "parse_graph",
]

VARIABLE_SUFFIX = ".ATTRIBUTES/VARIABLE_VALUE"
PYSTATE_SUFFIX = ".ATTRIBUTES/py_state"
SLOT_MARKER = ".OPTIMIZER_SLOT"


def escape_name(name: str) -> str:
    """Escape one edge name for a key (TF's rule: ``.`` -> ``..``, ``/`` -> ``.S``)."""
    out = name.replace(".", "..").replace("/", ".S")
    return ".D" if out == ".." else out


# --- the graph to save --------------------------------------------------------------


@dataclass
class SaveNode:
    obj: Any
    path: str
    children: list[tuple[str, int]] = field(default_factory=list)
    slots: list[tuple[int, str, int]] = field(default_factory=list)
    key: str | None = None
    is_slot: bool = False
    binary: bool = False  # a Python state saved as bytes (not str)


@dataclass
class SaveGraph:
    """The live graph flattened for a save.

    Attributes:
        nodes: Node 0 is the root; each records its object, first path and edges.
        variables: ``(key, Variable)`` of every variable node, in node order.
        python_states: ``(key, PythonState)`` of every python-state node.
    """

    nodes: list[SaveNode]
    variables: list[tuple[str, Variable]]
    python_states: list[tuple[str, PythonState]]

    def to_json(self) -> dict[str, Any]:
        out = []
        for node in self.nodes:
            d: dict[str, Any] = {
                "children": [[n, c] for n, c in node.children],
                "slots": [[v, s, n] for v, s, n in node.slots],
                "key": node.key,
                "kind": _kind(node.obj),
            }
            if node.binary:
                d["binary"] = True
            out.append(d)
        return {"nodes": out}


def _kind(obj: Any) -> str:
    if isinstance(obj, Variable):
        return "variable"
    if isinstance(obj, PythonState):
        return "python_state"
    return "object"


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def build_save_graph(root: Any, *, check: bool = True) -> SaveGraph:
    """Walk the live graph from ``root`` breadth-first.

    Every object gets one node (the first path to it names its values), and slot
    variables are included when both their variable and their owner are in the graph.

    Raises:
        ValueError: With ``check``, a container cannot be saved (see
            :func:`~.containers.children_of`).
    """
    nodes: list[SaveNode] = [SaveNode(root, "")]
    ids: dict[int, int] = {id(root): 0}
    queue: collections.deque[int] = collections.deque([0])

    def visit_all() -> None:
        while queue:
            n = queue.popleft()
            node = nodes[n]
            for name, child in children_of(node.obj, check=check):
                c = ids.get(id(child))
                if c is None:
                    c = ids[id(child)] = len(nodes)
                    nodes.append(SaveNode(child, _join(node.path, escape_name(name))))
                    queue.append(c)
                node.children.append((name, c))

    visit_all()
    # Slots: only where both the variable and the owner are saved.
    done = 0
    while done < len(nodes):
        end = len(nodes)
        for n in range(done, end):
            owner = nodes[n].obj
            if not isinstance(owner, Trackable):
                continue
            for var, slot_name, slot in owner._slot_items():
                v = ids.get(id(var))
                if v is None:
                    continue
                s = ids.get(id(slot))
                if s is None:
                    s = ids[id(slot)] = len(nodes)
                    path = f"{nodes[v].path}/{SLOT_MARKER}/{nodes[n].path}/{escape_name(slot_name)}"
                    nodes.append(SaveNode(slot, path, is_slot=True))
                    queue.append(s)
                nodes[n].slots.append((v, slot_name, s))
        visit_all()
        done = end
    variables: list[tuple[str, Variable]] = []
    states: list[tuple[str, PythonState]] = []
    for node in nodes:
        if isinstance(node.obj, Variable):
            node.key = node.path if node.is_slot else _join(node.path, VARIABLE_SUFFIX)
            variables.append((node.key, node.obj))
        elif isinstance(node.obj, PythonState):
            node.key = _join(node.path, PYSTATE_SUFFIX)
            states.append((node.key, node.obj))
    return SaveGraph(nodes, variables, states)


# --- the saved graph ----------------------------------------------------------------


@dataclass(frozen=True)
class SavedNode:
    kind: str
    children: tuple[tuple[str, int], ...]
    slots: tuple[tuple[int, str, int], ...]
    key: str | None
    binary: bool = False  # a Python state saved as bytes: deserialize() gets bytes


@dataclass(frozen=True)
class SavedGraph:
    """A validated object graph read from an index."""

    nodes: tuple[SavedNode, ...]

    def to_json(self) -> dict[str, Any]:
        """The graph as stored in an index (``parse_graph(g.to_json(), keys) == g``)."""
        out = []
        for n in self.nodes:
            d: dict[str, Any] = {
                "children": [[name, c] for name, c in n.children],
                "slots": [[v, s, x] for v, s, x in n.slots],
                "key": n.key,
                "kind": n.kind,
            }
            if n.binary:
                d["binary"] = True
            out.append(d)
        return {"nodes": out}

    def keys(self) -> Iterator[tuple[int, str]]:
        for i, n in enumerate(self.nodes):
            if n.key is not None:
                yield i, n.key

    def with_values(self) -> frozenset[int]:
        """The nodes that hold a value or reach one through their edges (slots included).

        A restore defers only these: a saved branch without values has nothing to
        restore (as in TensorFlow).
        """
        parents: dict[int, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for _, c in n.children:
                parents.setdefault(c, []).append(i)
            for _, _, s in n.slots:
                parents.setdefault(s, []).append(i)
        found = {i for i, n in enumerate(self.nodes) if n.key is not None}
        todo = list(found)
        while todo:
            for p in parents.get(todo.pop(), ()):
                if p not in found:
                    found.add(p)
                    todo.append(p)
        return frozenset(found)


def parse_graph(doc: Any, tensor_keys: set[str]) -> SavedGraph:
    """Validate a stored graph against the tensors of its index.

    Raises:
        CorruptCheckpointError: The graph is malformed or names unknown tensors.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not doc["nodes"]:
        raise CorruptCheckpointError("index: graph has no node list")
    raw = doc["nodes"]
    n = len(raw)

    def node_id(x: Any) -> int:
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < n:
            raise CorruptCheckpointError(f"index: graph refers to a bad node {x!r}")
        return x

    nodes = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict):
            raise CorruptCheckpointError(f"index: graph node {i} is not an object")
        kind = d.get("kind")
        if kind not in ("object", "variable", "python_state"):
            raise CorruptCheckpointError(f"index: graph node {i} has a bad kind {kind!r}")
        children = d.get("children")
        slots = d.get("slots")
        if not isinstance(children, list) or not isinstance(slots, list):
            raise CorruptCheckpointError(f"index: graph node {i} is malformed")
        ch = []
        for e in children:
            if not (isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)):
                raise CorruptCheckpointError(f"index: graph node {i} has a bad edge {e!r:.80}")
            ch.append((e[0], node_id(e[1])))
        sl = []
        for e in slots:
            if not (isinstance(e, list) and len(e) == 3 and isinstance(e[1], str)):
                raise CorruptCheckpointError(f"index: graph node {i} has a bad slot {e!r:.80}")
            sl.append((node_id(e[0]), e[1], node_id(e[2])))
        key = d.get("key")
        binary = d.get("binary", False)
        if not isinstance(binary, bool) or (binary and kind != "python_state"):
            raise CorruptCheckpointError(f"index: graph node {i} has a bad binary flag")
        if kind == "object":
            if key is not None:
                raise CorruptCheckpointError(f"index: graph node {i} is an object with a value")
        elif not isinstance(key, str) or key not in tensor_keys:
            raise CorruptCheckpointError(
                f"index: graph node {i} names a tensor {key!r:.120} the index does not have"
            )
        nodes.append(SavedNode(kind, tuple(ch), tuple(sl), key, binary))
    return SavedGraph(tuple(nodes))
