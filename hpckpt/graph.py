"""The trackable object graph.

Objects that hold checkpointable state form a graph with named edges:
:class:`Module` attributes, tracked lists and dicts, tuples and namedtuples,
:class:`~hpckpt.variable.Variable` leaves, :class:`PythonState` leaves, and slot
edges from an owner (an optimizer) to per-variable slot variables. This module
walks that graph into a serializable description (:func:`build_save_graph`),
validates a stored description (:func:`parse_graph`) and matches a stored graph
against live objects (:class:`Matcher`), deferring what does not exist yet.

Pure logic: no MPI, no files. The IO of deferred restores is done by a callback.
"""

from __future__ import annotations

import collections
import collections.abc as abc
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import CorruptCheckpointError
from .variable import Variable

__all__ = [
    "Module",
    "PythonState",
    "SaveGraph",
    "SavedGraph",
    "Trackable",
    "TrackedDict",
    "TrackedList",
    "build_save_graph",
    "children_of",
    "escape_name",
    "is_trackable",
    "parse_graph",
    "wrap",
]

VARIABLE_SUFFIX = ".ATTRIBUTES/VARIABLE_VALUE"
PYSTATE_SUFFIX = ".ATTRIBUTES/py_state"
SLOT_MARKER = ".OPTIMIZER_SLOT"


# --- tracking state -------------------------------------------------------------


@dataclass
class _PendingRestore:
    """A saved node waiting for its live object: ``restorer(node, obj)`` restores it."""

    node: int
    restorer: Callable[[int, Any], None]


@dataclass
class _TrackState:
    children: dict[str, Any] = field(default_factory=dict)
    deferred: dict[str, list[_PendingRestore]] = field(default_factory=dict)
    slots: dict[int, tuple[Variable, dict[str, Variable]]] = field(default_factory=dict)
    deferred_slots: dict[tuple[int, str], list[_PendingRestore]] = field(default_factory=dict)


class Trackable:
    """Base of every object with checkpointable dependencies.

    Subclasses name their dependencies with :meth:`_track_child`; :class:`Module`
    does it on attribute assignment. A trackable can own slot variables
    (:meth:`_add_slot`), as optimizers do.
    """

    def _hpckpt(self) -> _TrackState:
        st = self.__dict__.get("_hpckpt_state")
        if st is None:
            st = _TrackState()
            object.__setattr__(self, "_hpckpt_state", st)
        return st

    def _checkpoint_children(self) -> list[tuple[str, Any]]:
        """The named dependencies, in a deterministic order."""
        return list(self._hpckpt().children.items())

    def _track_child(self, name: str, value: Any) -> None:
        """Add (or replace) dependency ``name``; run a pending restore for it."""
        st = self._hpckpt()
        st.children[name] = value
        self._run_deferred(name, value)

    def _untrack_child(self, name: str) -> None:
        self._hpckpt().children.pop(name, None)

    def _run_deferred(self, name: str, value: Any) -> None:
        pending = self._hpckpt().deferred.pop(name, None)
        for p in pending or ():
            p.restorer(p.node, value)

    def _defer(self, name: str, pending: _PendingRestore) -> None:
        self._hpckpt().deferred.setdefault(name, []).append(pending)

    # -- slots --

    def _add_slot(self, variable: Variable, slot_name: str, slot: Variable) -> Variable:
        """Register ``slot`` as this object's slot ``slot_name`` for ``variable``.

        A checkpointed value waiting for this slot is restored into it at once
        (collective in that case, like every restore).
        """
        if not isinstance(variable, Variable) or not isinstance(slot, Variable):
            raise TypeError("slots map an hpckpt.Variable to an hpckpt.Variable")
        st = self._hpckpt()
        st.slots.setdefault(id(variable), (variable, {}))[1][slot_name] = slot
        for p in st.deferred_slots.pop((id(variable), slot_name), None) or ():
            p.restorer(p.node, slot)
        return slot

    def _get_slot(self, variable: Variable, slot_name: str) -> Variable | None:
        entry = self._hpckpt().slots.get(id(variable))
        return None if entry is None else entry[1].get(slot_name)

    def _slot_items(self) -> list[tuple[Variable, str, Variable]]:
        """``(variable, slot_name, slot)`` for every slot this object owns."""
        return [
            (var, name, slot)
            for var, slots in self._hpckpt().slots.values()
            for name, slot in slots.items()
        ]

    def _defer_slot(self, variable: Variable, slot_name: str, pending: _PendingRestore) -> None:
        self._hpckpt().deferred_slots.setdefault((id(variable), slot_name), []).append(pending)


class PythonState(Trackable):
    """Python state saved as a string (data-iterator position, RNG state, counters).

    Subclasses implement :meth:`serialize` and :meth:`deserialize`. The string of
    rank 0 is saved; on restore every rank deserializes it.
    """

    def serialize(self) -> str:
        """Return the state as a string."""
        raise NotImplementedError

    def deserialize(self, string_value: str) -> None:
        """Restore the state from a string made by :meth:`serialize`."""
        raise NotImplementedError


class Module(Trackable):
    """A container of state that tracks its attributes, like ``tf.Module``.

    Assigning a Variable, a trackable, a list, a dict, a tuple or a namedtuple to
    an attribute makes it a named dependency; lists and dicts are wrapped so that
    later ``append``/``[k] = v`` are tracked too (and restore values waiting for
    them). Sets and other containers raise ``ValueError``; other values (numbers,
    strings, arrays, callables) are ignored by checkpoints.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_hpckpt"):
            object.__setattr__(self, name, value)
            return
        value = wrap(value)
        object.__setattr__(self, name, value)
        if is_trackable(value):
            self._track_child(name, value)
        else:
            self._untrack_child(name)

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        self._untrack_child(name)


# --- containers -------------------------------------------------------------------

_REJECTED = (abc.Set, collections.deque)


def wrap(value: Any) -> Any:
    """Wrap lists and dicts for tracking; rebuild tuples with wrapped contents.

    Plain ``list`` becomes :class:`TrackedList`; ``dict`` and ``OrderedDict`` become
    :class:`TrackedDict` (insertion-ordered). Subclasses of list or dict are left as
    they are when they hold no trackables, and rejected when they do.

    Raises:
        ValueError: ``value`` is a set or another container that cannot be tracked.
    """
    if isinstance(value, (Trackable, Variable)):
        return value
    if type(value) is list:
        return TrackedList(value)
    if type(value) in (dict, collections.OrderedDict):
        return TrackedDict(value)
    if isinstance(value, (list, dict)):
        # Subclasses (defaultdict, Counter, ...) keep their behaviour untouched; they
        # may not hold trackables, which their mutations could not track.
        items = value.values() if isinstance(value, dict) else value
        if any(is_trackable(v) for v in items):
            raise ValueError(
                f"cannot track a {type(value).__name__}: use a plain list or dict for "
                "Variables and trackables"
            )
        return value
    if isinstance(value, tuple):
        items = [wrap(v) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)._make(items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, _REJECTED) or (
        isinstance(value, (abc.Mapping, abc.MutableSequence))
        and not isinstance(value, (str, bytes))
    ):
        raise ValueError(
            f"cannot track a {type(value).__name__} ({value!r:.60}): checkpoints track "
            "Variables, trackables, lists, dicts, tuples and namedtuples"
        )
    return value


def is_trackable(value: Any) -> bool:
    """Whether ``value`` is a node of the object graph."""
    if isinstance(value, (Trackable, Variable)):
        return True
    if isinstance(value, tuple):
        return any(is_trackable(v) for v in value)
    return False


class TrackedList(Trackable, list):
    """A list whose trackable items are dependencies named by their index."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        list.__init__(self, (wrap(v) for v in items))

    def _checkpoint_children(self) -> list[tuple[str, Any]]:
        return [(str(i), v) for i, v in enumerate(self) if is_trackable(v)]

    def _after_change(self) -> None:
        st = self._hpckpt()
        for name in list(st.deferred):
            i = int(name) if name.isdigit() else -1
            if 0 <= i < len(self) and is_trackable(self[i]):
                self._run_deferred(name, self[i])

    def append(self, value: Any) -> None:
        list.append(self, wrap(value))
        self._after_change()

    def extend(self, values: Iterable[Any]) -> None:
        list.extend(self, [wrap(v) for v in values])
        self._after_change()

    def insert(self, index: Any, value: Any) -> None:
        list.insert(self, index, wrap(value))
        self._after_change()

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            list.__setitem__(self, index, [wrap(v) for v in value])
        else:
            list.__setitem__(self, index, wrap(value))
        self._after_change()

    def __iadd__(self, values: Iterable[Any]) -> TrackedList:  # type: ignore[override, misc]
        self.extend(values)
        return self

    def __repr__(self) -> str:
        return f"TrackedList({list.__repr__(self)})"


class TrackedDict(Trackable, dict):
    """A dict whose trackable values are dependencies named by their (string) keys."""

    def __init__(self, items: Any = (), **kwargs: Any) -> None:
        dict.__init__(self)
        for k, v in dict(items, **kwargs).items():
            self[k] = v

    def _checkpoint_children(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self.items() if is_trackable(v)]

    def __setitem__(self, key: Any, value: Any) -> None:
        value = wrap(value)
        if is_trackable(value) and not isinstance(key, str):
            raise ValueError(
                f"a tracked dict needs string keys for trackable values, got key {key!r}"
            )
        dict.__setitem__(self, key, value)
        if isinstance(key, str) and is_trackable(value):
            self._run_deferred(key, value)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __repr__(self) -> str:
        return f"TrackedDict({dict.__repr__(self)})"


def children_of(obj: Any) -> list[tuple[str, Any]]:
    """The named dependencies of a graph node, in a deterministic order."""
    if isinstance(obj, Trackable):
        return obj._checkpoint_children()
    if isinstance(obj, tuple):
        names = obj._fields if hasattr(obj, "_fields") else [str(i) for i in range(len(obj))]
        return [(n, v) for n, v in zip(names, obj, strict=True) if is_trackable(v)]
    return []


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
        return {
            "nodes": [
                {
                    "children": [[n, c] for n, c in node.children],
                    "slots": [[v, s, n] for v, s, n in node.slots],
                    "key": node.key,
                    "kind": _kind(node.obj),
                }
                for node in self.nodes
            ]
        }


def _kind(obj: Any) -> str:
    if isinstance(obj, Variable):
        return "variable"
    if isinstance(obj, PythonState):
        return "python_state"
    return "object"


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def build_save_graph(root: Any) -> SaveGraph:
    """Walk the live graph from ``root`` breadth-first.

    Every object gets one node (the first path to it names its values), and slot
    variables are included when both their variable and their owner are in the graph.
    """
    nodes: list[SaveNode] = [SaveNode(root, "")]
    ids: dict[int, int] = {id(root): 0}
    queue: collections.deque[int] = collections.deque([0])

    def visit_all() -> None:
        while queue:
            n = queue.popleft()
            node = nodes[n]
            for name, child in children_of(node.obj):
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


@dataclass(frozen=True)
class SavedGraph:
    """A validated object graph read from an index."""

    nodes: tuple[SavedNode, ...]

    def keys(self) -> Iterator[tuple[int, str]]:
        for i, n in enumerate(self.nodes):
            if n.key is not None:
                yield i, n.key


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
        if kind == "object":
            if key is not None:
                raise CorruptCheckpointError(f"index: graph node {i} is an object with a value")
        elif not isinstance(key, str) or key not in tensor_keys:
            raise CorruptCheckpointError(
                f"index: graph node {i} names a tensor {key!r:.120} the index does not have"
            )
        nodes.append(SavedNode(kind, tuple(ch), tuple(sl), key))
    return SavedGraph(tuple(nodes))
