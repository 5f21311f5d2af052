"""The trackable object graph.

Objects that hold checkpointable state form a graph with named edges:
:class:`Module` attributes, tracked lists and dicts, tuples and namedtuples,
:class:`~hpckpt.variable.Variable` leaves, :class:`PythonState` leaves, and slot
edges from an owner (an optimizer) to per-variable slot variables.

* :mod:`.base` — the trackable base, deferred restores, slots, Python state;
* :mod:`.containers` — tracked lists, dicts, tuples;
* :mod:`.module` — :class:`Module`;
* :mod:`.saved` — the graph as saved (built from live objects, parsed from an index).

Pure logic: no MPI, no files.
"""

from .base import PendingRestore, PythonState, RankState, Trackable
from .containers import TrackedDict, TrackedList, children_of, is_trackable, wrap
from .module import Module
from .saved import (
    PYSTATE_SUFFIX,
    RANKSTATE_SUFFIX,
    SLOT_MARKER,
    VARIABLE_SUFFIX,
    SavedGraph,
    SavedNode,
    SaveGraph,
    SaveNode,
    build_save_graph,
    escape_name,
    parse_graph,
)

__all__ = [
    "PYSTATE_SUFFIX",
    "RANKSTATE_SUFFIX",
    "SLOT_MARKER",
    "VARIABLE_SUFFIX",
    "Module",
    "PendingRestore",
    "PythonState",
    "RankState",
    "SaveGraph",
    "SaveNode",
    "SavedGraph",
    "SavedNode",
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
