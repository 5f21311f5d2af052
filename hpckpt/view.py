"""A read-only view of a checkpoint's object graph (``tf.train.CheckpointView``).

Runs on one process, without an MPI launcher: it reads only the index. Node ids are
the saved graph's: 0 is the root, the others follow breadth first.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from typing import Any

from .graph import SavedGraph, children_of, is_trackable, parse_graph
from .io import read_index_file
from .reader import resolve_checkpoint

__all__ = ["CheckpointView"]


class CheckpointView:
    """The object graph of one checkpoint: its nodes, named edges and values.

    Args:
        save_path: A checkpoint path (``P`` or ``P.index.json``), or a directory (its
            latest checkpoint).

    Raises:
        NotFoundError: No checkpoint there.
        CorruptCheckpointError: The index is damaged.
        ValueError: The checkpoint has no object graph.
    """

    def __init__(self, save_path: str | os.PathLike) -> None:
        self._prefix = resolve_checkpoint(save_path)
        index, _ = read_index_file(self._prefix)
        if index.graph is None:
            raise ValueError(
                f"checkpoint {self._prefix!r} has no object graph (it was not written by "
                "Checkpoint.save or write)"
            )
        self._graph: SavedGraph = parse_graph(index.graph, set(index.tensors))

    @property
    def prefix(self) -> str:
        """The checkpoint path."""
        return self._prefix

    def _node(self, node_id: int) -> Any:
        nodes = self._graph.nodes
        if (
            isinstance(node_id, bool)
            or not isinstance(node_id, int)
            or not 0 <= node_id < len(nodes)
        ):
            raise ValueError(f"node_id must be an int in [0, {len(nodes)}), got {node_id!r}")
        return nodes[node_id]

    def children(self, node_id: int) -> dict[str, int]:
        """``{name: child node id}`` of the edges leaving node ``node_id``, in saved order."""
        return dict(self._node(node_id).children)

    def key(self, node_id: int) -> str | None:
        """The tensor key of node ``node_id``'s value, or ``None`` for an object without one."""
        return self._node(node_id).key

    def kind(self, node_id: int) -> str:
        """``"object"``, ``"variable"`` or ``"python_state"``."""
        return self._node(node_id).kind

    def descendants(self) -> list[int]:
        """Every node reachable from the root through named edges, breadth first (root first)."""
        seen = [0]
        found = {0}
        queue = deque([0])
        while queue:
            for _, c in self._graph.nodes[queue.popleft()].children:
                if c not in found:
                    found.add(c)
                    seen.append(c)
                    queue.append(c)
        return seen

    def match(self, obj: Any) -> dict[int, Any]:
        """``{node id: live object}`` of the nodes matched by the same names in ``obj``'s graph.

        Matching follows named edges from the root (node 0 is ``obj``), breadth first,
        as a restore does. When two paths of the checkpoint lead to one node but to two
        different live objects, the first one found is kept and a warning says so.

        Raises:
            ValueError: ``obj`` is not trackable.
        """
        if not is_trackable(obj):
            raise ValueError(f"expected a trackable object, got {obj!r:.80}")
        matched: dict[int, Any] = {0: obj}
        visited: set[int] = set()
        queue: deque[tuple[int, Any]] = deque([(0, obj)])
        while queue:
            node_id, live = queue.popleft()
            live_children = dict(children_of(live, check=False))
            for name, child_id in self.children(node_id).items():
                if child_id in visited or child_id == 0 or name not in live_children:
                    continue
                child = live_children[name]
                current = matched.get(child_id)
                if current is None:
                    matched[child_id] = child
                    queue.append((child_id, child))
                elif current is not child:
                    warnings.warn(
                        "Inconsistent references when matching the checkpoint into this "
                        f"object graph. The referenced objects are: ({current!r:.80} and "
                        f"{child!r:.80}).",
                        stacklevel=2,
                    )
            visited.add(node_id)
        return matched

    def diff(self, obj: Any) -> tuple[dict[int, Any], list[int], list[Any]]:
        """Compare the checkpoint with ``obj``'s graph.

        Returns:
            ``(match(obj), node ids only in the checkpoint, live objects only in obj's
            graph)``.
        """
        matched = self.match(obj)
        only_saved = [n for n in self.descendants() if n not in matched]
        ids = {id(o) for o in matched.values()}
        only_live = []
        seen = {id(obj)}
        queue: deque[Any] = deque([obj])
        while queue:
            o = queue.popleft()
            if id(o) not in ids:
                only_live.append(o)
            for _, c in children_of(o, check=False):
                if id(c) not in seen:
                    seen.add(id(c))
                    queue.append(c)
        return matched, only_saved, only_live
