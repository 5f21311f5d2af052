"""``hpckpt inspect PATH``: a checkpoint's object graph as a tree, with its tensors."""

from __future__ import annotations

import argparse
import collections
import os
from typing import Any

from .. import io
from ..graph import SavedGraph
from ..io.index import TensorEntry
from .common import (
    EXIT_OK,
    Loaded,
    dump_json,
    emit,
    fmt_bytes,
    fmt_layout,
    fmt_mesh,
    fmt_shape,
    fmt_time,
    iso_time,
    load,
    table,
    tensor_json,
)
from .values import PREVIEW_CHARS, is_scalar, kind_of, read_scalar, read_state

__all__ = ["add_parser", "inspect_checkpoint", "run"]


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``inspect``."""
    p = sub.add_parser(
        "inspect",
        parents=parents,
        help="show a checkpoint's object graph and tensors",
        description=(
            "Show the object graph of a checkpoint as an indented tree (edge names; for "
            "variables: shape, dtype, layout and mesh at save, bytes; slot variables under "
            "their variable) and totals. PATH is a checkpoint prefix, its .index.json, or a "
            "directory (its latest checkpoint)."
        ),
    )
    p.add_argument("path", metavar="PATH", help="checkpoint prefix, .index.json or directory")
    p.add_argument(
        "--flat", action="store_true", help="list the tensors as a table instead of the tree"
    )
    p.set_defaults(run=run)


MAX_DEPTH = 100
"""The tree shows nodes this deep at most (a hostile graph may be a chain of millions)."""


def _cap(path: str, limit: int = 1024) -> str:
    """A path shown at most ``limit`` characters long (memory stays linear in the nodes)."""
    return path if len(path) <= limit else path[: limit - 3] + "..."


def _first_paths(graph: SavedGraph) -> dict[int, str]:
    """Each reachable node's first path from the root (breadth-first, like the save), for
    nodes at most :data:`MAX_DEPTH` edges deep.

    A slot variable's path is ``<variable>/.OPTIMIZER_SLOT/<owner>/<slot name>``.
    """
    slots = _slots_by_var(graph)
    by_owner: dict[int, list[tuple[int, str, int]]] = {}
    for var, lst in slots.items():
        for owner, slot_name, s in lst:
            by_owner.setdefault(owner, []).append((var, slot_name, s))
    paths = {0: ""}
    depth = {0: 0}
    queue = collections.deque([0])

    def add_slot(var: int, owner: int, slot_name: str, s: int) -> None:
        if s not in paths and var in paths and owner in paths:
            paths[s] = _cap(f"{paths[var]}/.OPTIMIZER_SLOT/{paths[owner]}/{slot_name}")
            depth[s] = max(depth[var], depth[owner]) + 1
            queue.append(s)

    while queue:
        n = queue.popleft()
        if depth[n] >= MAX_DEPTH:
            continue
        for name, c in graph.nodes[n].children:
            if c not in paths:
                paths[c] = _cap(f"{paths[n]}/{name}" if paths[n] else name)
                depth[c] = depth[n] + 1
                queue.append(c)
        for owner, slot_name, s in slots.get(n, []):
            add_slot(n, owner, slot_name, s)
        for var, slot_name, s in by_owner.get(n, []):
            add_slot(var, n, slot_name, s)
    return paths


def _slots_by_var(graph: SavedGraph) -> dict[int, list[tuple[int, str, int]]]:
    out: dict[int, list[tuple[int, str, int]]] = {}
    for owner, node in enumerate(graph.nodes):
        for var, slot_name, slot in node.slots:
            out.setdefault(var, []).append((owner, slot_name, slot))
    return out


def _value_doc(loaded: Loaded, e: TensorEntry, kind: str, binary: bool) -> dict[str, Any]:
    """What a node's value shows: a scalar's value, a Python state's text (truncated)."""
    if kind == "variable":
        return {"value": read_scalar(loaded, e)} if is_scalar(e) else {}
    st = read_state(loaded, e, kind)
    limit = 60 if kind == "rank_state" else PREVIEW_CHARS
    doc: dict[str, Any] = {"binary": binary, "text": st.texts(binary, limit)}
    if st.ranks is not None:
        doc["nranks"] = len(st.ranks)
    return doc


def _tree(loaded: Loaded) -> tuple[dict[str, Any], dict[str, int]]:
    graph = loaded.graph
    assert graph is not None
    tensors = loaded.index.tensors
    paths = _first_paths(graph)
    slots_by_var = _slots_by_var(graph)
    shown: set[int] = set()
    counts: collections.Counter[str] = collections.Counter()

    def node_doc(
        n: int, name: str, depth: int, slot: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        node = graph.nodes[n]
        doc: dict[str, Any] = {"name": name, "node": n, "kind": node.kind, "path": paths.get(n)}
        if slot is not None:
            doc.update(slot)
        if n in shown:
            doc["ref"] = paths.get(n)
            return doc
        shown.add(n)
        counts[node.kind] += 1
        doc["key"] = node.key
        doc["tensor"] = tensor_json(tensors[node.key]) if node.key is not None else None
        if node.key is not None:
            doc.update(_value_doc(loaded, tensors[node.key], node.kind, node.binary))
        if depth >= MAX_DEPTH:  # not shown deeper (counted as "too_deep")
            doc["children"], doc["slots"] = [], []
            doc["truncated"] = bool(node.children or slots_by_var.get(n))
            return doc
        doc["children"] = [node_doc(c, cname, depth + 1) for cname, c in node.children]
        doc["slots"] = [
            node_doc(
                s,
                slot_name,
                depth + 1,
                {"slot": slot_name, "owner": paths.get(owner, "?") or "(root)"},
            )
            for owner, slot_name, s in slots_by_var.get(n, [])
        ]
        if slot is not None:
            counts["slot"] += 1
        return doc

    root = node_doc(0, "(root)", 0)
    counts["unreachable"] = len(graph.nodes) - len(shown)  # or deeper than MAX_DEPTH
    return root, dict(counts)


def inspect_checkpoint(path: str) -> dict[str, Any]:
    """The report of ``inspect`` as a JSON-able dict.

    Raises:
        NotFoundError: No checkpoint at ``path``.
        CorruptCheckpointError: The checkpoint is damaged.
    """
    loaded = load(path)
    index = loaded.index
    ip = io.index_path(loaded.prefix)
    in_graph: set[str] = set()
    tree = None
    counts: dict[str, int] = {}
    warnings = []
    if loaded.graph is not None:
        try:
            tree, counts = _tree(loaded)
        except RecursionError:
            tree, counts = None, {}
            warnings.append("the object graph is too deep to draw; tensors listed flat")
        in_graph = {n.key for n in loaded.graph.nodes if n.key is not None}
    return {
        "checkpoint": loaded.prefix,
        "index": {"path": ip, "bytes": os.path.getsize(ip), "format_version": index.version},
        "data_file": {"name": index.data_file, "bytes": index.data_size},
        "saved": index.created,
        "saved_iso": iso_time(index.created),
        "nprocs": index.nprocs,
        "library": index.library,
        "tree": tree,
        "warnings": warnings,
        "tensors": [
            {**tensor_json(t), **_value_doc(loaded, t, *kind_of(loaded, t.key))}
            for t in index.tensors.values()
        ],
        "totals": {
            "nodes": len(loaded.graph.nodes) if loaded.graph is not None else 0,
            "objects": counts.get("object", 0),
            "variables": counts.get("variable", 0),
            "python_states": counts.get("python_state", 0),
            "rank_states": counts.get("rank_state", 0),
            "slot_variables": counts.get("slot", 0),
            "unreachable_nodes": counts.get("unreachable", 0),
            "tensors": len(index.tensors),
            "tensors_outside_graph": sorted(set(index.tensors) - in_graph),
            "tensor_bytes": sum(t.nbytes for t in index.tensors.values()),
            "data_file_bytes": index.data_size,
        },
    }


def _tensor_text(t: dict[str, Any]) -> str:
    if t["per_rank_boxes"]:
        return f"{t['dtype']} {fmt_shape(t['shape'])}  per-rank boxes  {t['nbytes']} B"
    return (
        f"{t['dtype']} {fmt_shape(t['shape'])}  layout {fmt_layout(t['sharding_specs'])}  "
        f"mesh {fmt_mesh(t['mesh']['dim_names'], t['mesh']['shape'])}  {t['nbytes']} B"
    )


def _value_text(doc: dict[str, Any]) -> str:
    return f"  = {doc['value']}" if "value" in doc else ""


def _state_text(doc: dict[str, Any]) -> str:
    """``python state, 176 B: {"pos": 160}`` / ``per-rank state of 4 ranks, ...``."""
    n = doc["tensor"]["nbytes"]
    text = doc.get("text")
    if doc["kind"] == "python_state":
        head = f"python state, {n} B"
        return head + (": (too large to show)" if text is None else f": {text}")
    head = f"per-rank state of {doc.get('nranks', '?')} ranks, {n} B"
    if text is None:
        return head + ": (too large to show)"
    shown = [f"[{r}] {t}" for r, t in enumerate(text[:4])]
    more = f", ... ({len(text) - 4} more)" if len(text) > 4 else ""
    return f"{head}: " + ", ".join(shown) + more


def _render_node(doc: dict[str, Any], depth: int, out: list[str]) -> None:
    pad = "  " * depth
    label = doc["name"] if "slot" not in doc else f"[slot {doc['slot']} of {doc['owner']}]"
    if "ref" in doc:
        out.append(f"{pad}{label} -> same object as {doc['ref'] or '(root)'}")
        return
    if doc["kind"] == "variable":
        out.append(f"{pad}{label}: {_tensor_text(doc['tensor'])}{_value_text(doc)}")
    elif doc["kind"] in ("python_state", "rank_state"):
        out.append(f"{pad}{label}: {_state_text(doc)}")
    else:
        out.append(f"{pad}{label}" + ("" if depth == 0 else "/"))
    if doc.get("truncated"):
        out.append(f"{pad}  ... (deeper than {MAX_DEPTH} levels: not shown)")
    for s in doc["slots"]:
        _render_node(s, depth + 1, out)
    for c in doc["children"]:
        _render_node(c, depth + 1, out)


def _flat_value(t: dict[str, Any]) -> str:
    if "value" in t:
        return str(t["value"])
    text = t.get("text")
    if isinstance(text, list):
        text = f"{len(text)} ranks: " + ", ".join(text[:2]) + (", ..." if len(text) > 2 else "")
    if isinstance(text, str):
        return text if len(text) <= 40 else text[:40] + "..."
    return ""


def render(report: dict[str, Any], *, flat: bool = False) -> list[str]:
    """The human-readable ``inspect`` output."""
    lib = report["library"]
    tot = report["totals"]
    lines = [
        f"checkpoint  {report['checkpoint']}",
        f"index       {os.path.basename(report['index']['path'])} ({report['index']['bytes']} "
        f"bytes, format version {report['index']['format_version']})",
        f"data file   {report['data_file']['name']} ({report['data_file']['bytes']} bytes)",
        f"saved       {fmt_time(report['saved'])} by {report['nprocs']} process(es)"
        + (f", hpckpt {lib['hpckpt']}" if "hpckpt" in lib else ""),
        "",
    ]
    lines += [f"warning: {w}" for w in report["warnings"]]
    if flat or report["tree"] is None:
        if report["tree"] is None and not report["warnings"]:
            lines.append("(the index has no object graph)")
        rows = [
            [
                t["key"],
                t["dtype"],
                fmt_shape(t["shape"]),
                fmt_layout(t["sharding_specs"]),
                fmt_mesh(t["mesh"]["dim_names"], t["mesh"]["shape"]),
                str(t["nbytes"]),
                _flat_value(t),
            ]
            for t in sorted(report["tensors"], key=lambda t: t["key"])
        ]
        lines += table(["KEY", "DTYPE", "SHAPE", "LAYOUT", "MESH", "BYTES", "VALUE"], rows, {5})
    else:
        _render_node(report["tree"], 0, lines)
    lines.append("")
    lines.append(
        f"{tot['tensors']} tensors, {tot['tensor_bytes']} bytes "
        f"({fmt_bytes(tot['tensor_bytes'])}); "
        f"{tot['variables']} variables ({tot['slot_variables']} slots), "
        f"{tot['python_states']} python state(s), {tot['rank_states']} per-rank state(s), "
        f"{tot['objects']} objects; "
        f"data file {tot['data_file_bytes']} bytes"
    )
    if tot["unreachable_nodes"]:
        lines.append(f"{tot['unreachable_nodes']} graph node(s) unreachable from the root")
    if report["tree"] is not None and tot["tensors_outside_graph"]:
        lines.append(f"tensors outside the graph: {', '.join(tot['tensors_outside_graph'])}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Run ``inspect``."""
    report = inspect_checkpoint(args.path)
    if args.json:
        dump_json(report)
    else:
        emit(render(report, flat=args.flat))
    return EXIT_OK
