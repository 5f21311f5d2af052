"""``hpckpt verify PATH``: read every tensor and check every saved slice's checksum.

PATH may also name a local checkpoint of a multi-level tier (``'/dev/shm/run-{node}/ckpt-8'``):
then every present copy of every node's data (its own and its partner copy) is checked."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import io
from ..errors import CheckpointChangedError, CorruptCheckpointError, NotFoundError
from ..graph import parse_graph
from ..io.checksum import checksum_function
from ..io.index import TensorEntry
from ..io.load import read_index_file
from ..io.local_check import find_local, is_local_path, verify_local_copy
from .common import (
    EXIT_DAMAGED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    dump_json,
    emit,
    fmt_bytes,
    resolve,
    slice_byte_range,
)
from .ls import list_directory
from .progress import Progress

__all__ = ["add_parser", "run", "verify_checkpoint"]


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``verify``."""
    p = sub.add_parser(
        "verify",
        parents=parents,
        help="read every tensor and check its checksums",
        description=(
            "Validate the index, the data file's structure and the object graph, then read "
            "every tensor and check the checksum (CRC-32C) of every saved slice. Exit 0 "
            "when everything is intact, 1 on any damage (naming the tensor and file byte "
            "range), 2 when there is no checkpoint at PATH. A local checkpoint of a "
            "multi-level tier is named by the tier's path and its name, {node} standing for "
            "the node index ('/dev/shm/run-{node}/ckpt-8'): every node's own and partner "
            "copies present are checked; a missing copy is a warning while another one is "
            "intact."
        ),
    )
    p.add_argument(
        "path",
        metavar="PATH",
        help="checkpoint prefix, .index.json, directory, or local checkpoint PATTERN/NAME",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="PATH is a directory: verify every checkpoint in it, not only the latest",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="list every tensor checked")
    p.set_defaults(run=run)


def _distinct_elements(e: TensorEntry) -> int:
    return sum(math.prod(s.shape) for s in {(s.start, s.shape): s for s in e.slices}.values())


def _check_tensor(
    opened: io.OpenCheckpoint,
    e: TensorEntry,
    errors: list[dict[str, Any]],
    on_bytes: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Read one tensor (from the version opened) and check each slice; append each problem
    to ``errors``."""
    doc: dict[str, Any] = {
        "key": e.key,
        "dataset": e.dataset,
        "nbytes": e.nbytes,
        "slices": len(e.slices),
        "bad_slices": 0,
        "status": "ok",
    }
    if e.nbytes == 0:  # nothing stored (numpy may not even hold its shape): checksums only
        for s in e.slices:
            if s.checksum != 0 or math.prod(s.shape) != 0:
                errors.append(_slice_error(e, s.start, s.shape))
                doc["bad_slices"] += 1
                doc["status"] = "bad"
        return doc
    try:
        arr = opened.read(e, verify=False, on_bytes=on_bytes)
    except (CorruptCheckpointError, OSError) as exc:
        lo = e.offset or 0
        errors.append(
            {
                "tensor": e.key,
                "dataset": e.dataset,
                "slice_start": None,
                "slice_shape": None,
                "byte_range": [lo, lo + e.nbytes],
                "message": (
                    str(exc)
                    if isinstance(exc, CorruptCheckpointError)
                    else f"cannot read tensor {e.key!r}: {exc}"
                ),
            }
        )
        doc["status"] = "bad"
        return doc
    fn = checksum_function(opened.index.checksum)
    for s in e.slices:
        part = arr[tuple(slice(a, a + n) for a, n in zip(s.start, s.shape, strict=True))]
        data = np.ascontiguousarray(part).reshape(-1).view(np.uint8)
        if (fn(data) if data.size else 0) != s.checksum:
            errors.append(_slice_error(e, s.start, s.shape))
            doc["bad_slices"] += 1
            doc["status"] = "bad"
    if doc["status"] == "ok" and e.nbytes and _distinct_elements(e) < math.prod(e.shape):
        doc["status"] = "unchecked" if not e.slices else "partly checked"
    return doc


def _slice_error(e: TensorEntry, start: tuple[int, ...], shape: tuple[int, ...]) -> dict[str, Any]:
    lo, hi = slice_byte_range(e, start, shape)
    return {
        "tensor": e.key,
        "dataset": e.dataset,
        "slice_start": list(start),
        "slice_shape": list(shape),
        "byte_range": [lo, hi],
        "message": (
            f"checksum mismatch in tensor {e.key!r} (dataset {e.dataset!r}), slice "
            f"start {list(start)} shape {list(shape)}, file bytes [{lo}, {hi})"
        ),
    }


def verify_checkpoint(prefix: str, *, progress: bool | None = None) -> dict[str, Any]:
    """The report of ``verify`` for one checkpoint prefix.

    Damage is reported in the result (``ok`` false, ``errors``), not raised. A
    checkpoint replaced by ``write(P)`` while it was checked is checked again: damage
    is reported only when the same version was read from start to end.

    Raises:
        NotFoundError: There is no index at ``prefix``.
        CheckpointChangedError: The checkpoint was replaced during every attempt.
    """
    for _ in range(io.READ_RETRIES + 1):
        before = io.index_identity(prefix)
        report = _verify_once(prefix, before, progress)
        if report["ok"] or io.index_identity(prefix) == before:
            return report
    raise CheckpointChangedError(
        f"checkpoint {prefix!r} was replaced while being verified, "
        f"{io.READ_RETRIES + 1} times in a row; verify it again later"
    )


def _verify_once(
    prefix: str, identity: tuple[int, int, int] | None, progress: bool | None
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "checkpoint": prefix,
        "ok": False,
        "tensors_total": None,
        "tensors_checked": 0,
        "tensors_bad": 0,
        "bytes_read": 0,
        "slices_checked": 0,
        "checksum": None,
        "errors": [],
        "warnings": [],
        "tensors": [],
    }
    errors: list[dict[str, Any]] = report["errors"]

    def fail(message: str) -> None:
        errors.append(
            {
                "tensor": None,
                "dataset": None,
                "slice_start": None,
                "slice_shape": None,
                "byte_range": None,
                "message": message,
            }
        )

    try:
        index, _ = read_index_file(prefix)
    except CorruptCheckpointError as e:
        fail(str(e))
        return report
    report["tensors_total"] = len(index.tensors)
    report["checksum"] = index.checksum
    opened: io.OpenCheckpoint | None = None
    try:
        # held open: the tensors read are this version's, even if P is replaced meanwhile
        opened = io.OpenCheckpoint.of(prefix, index, identity, check_size=False)
        io.check_data_file(prefix, index)  # the data file's HDF5 structure against the index
    except (NotFoundError, CorruptCheckpointError) as e:
        fail(str(e))  # still read what is there (a truncated file: name the tensors lost)
    if index.graph is None:
        report["warnings"].append("the index has no object graph")
    else:
        try:
            parse_graph(index.graph, set(index.tensors))
        except CorruptCheckpointError as e:
            fail(f"{io.index_path(prefix)}: {e}")
    if opened is not None:
        total = sum(t.nbytes for t in index.tensors.values())
        with Progress(total, "verify", enabled=progress) as bar:
            for entry in index.tensors.values():
                done = bar.done
                doc = _check_tensor(opened, entry, errors, bar.update)
                report["tensors"].append(doc)
                report["tensors_checked"] += 1
                report["slices_checked"] += len(entry.slices)
                report["bytes_read"] += entry.nbytes
                if doc["status"] == "bad":
                    report["tensors_bad"] += 1
                elif doc["status"] != "ok":
                    report["warnings"].append(
                        f"tensor {entry.key!r} is {doc['status']}: its saved slices do not cover it"
                    )
                bar.update(entry.nbytes - (bar.done - done))  # what a failed read skipped
        opened.close()
    report["ok"] = not errors
    return report


def _render_one(r: dict[str, Any], verbose: bool) -> list[str]:
    lines = []
    if verbose:
        lines.append(f"verifying {r['checkpoint']}")
        for t in r["tensors"]:
            lines.append(f"  {t['status'].upper():4}  {t['key']}  ({t['nbytes']} bytes)")
    for e in r["errors"]:
        lines.append(f"BAD: {e['message']}")
    for w in r["warnings"]:
        lines.append(f"warning: {w}")
    n = r["tensors_total"]
    if r["ok"]:
        lines.append(
            f"OK: {r['checkpoint']}: {r['tensors_checked']} tensors, {r['slices_checked']} "
            f"slices, {r['bytes_read']} bytes ({fmt_bytes(r['bytes_read'])}) verified "
            f"({r['checksum']})"
        )
    else:
        if n is None:
            what = "unreadable index"
        elif not r["tensors_checked"] and n:
            what = f"no tensor could be read, {len(r['errors'])} problem(s)"
        else:
            what = f"{r['tensors_bad']} of {n} tensors bad, {len(r['errors'])} problem(s)"
        lines.append(f"DAMAGED: {r['checkpoint']}: {what}")
    return lines


def verify_local(path: str) -> dict[str, Any]:
    """The report of ``verify`` for local checkpoint ``path`` (``PATTERN/NAME``).

    Raises:
        NotFoundError: No node directory holds its index.
    """
    pattern, name = os.path.split(path)
    found, damaged = find_local(pattern or ".", names={name})
    report: dict[str, Any] = {
        "checkpoint": path,
        "tier": "local",
        "ok": False,
        "tensors_total": None,
        "slices_checked": 0,
        "bytes_read": 0,
        "checksum": None,
        "nodes": [],
        "errors": [],
        "warnings": [],
    }
    if not found:
        if name in damaged:
            report["errors"].append({"message": damaged[name]})
            return report
        raise NotFoundError(f"no local checkpoint {name!r} in any node directory of {pattern!r}")
    c = found[0]
    li = c.index
    report["tensors_total"] = len(li.index.tensors)
    report["checksum"] = li.index.checksum
    report["ranks"], report["node_count"] = li.nodes.nprocs, li.nodes.nodes
    if li.index.graph is not None:
        try:
            parse_graph(li.index.graph, set(li.index.tensors))
        except CorruptCheckpointError as e:
            report["errors"].append({"message": f"{path}: {e}"})
    for node in range(li.nodes.nodes):
        entry: dict[str, Any] = {"node": node}
        intact = False
        copies = [("own", c.own[node])]
        if li.has_partner_copies:
            copies.append(("partner", c.partner[node]))
        for copy, present in copies:
            if not present:
                entry[copy] = "missing"
                report["warnings"].append(f"node {node}: its {copy} copy is missing")
                continue
            r = verify_local_copy(c, node, copy)
            report["slices_checked"] += r.slices
            report["bytes_read"] += r.nbytes
            entry[copy] = "ok" if r.ok else "damaged"
            intact = intact or r.ok
            for key, i, rng, msg in r.problems:
                report["errors"].append(
                    {"node": node, "copy": copy, "tensor": key or None, "slice": i,
                     "byte_range": list(rng), "message": msg}
                )  # fmt: skip
        if not intact:
            report["errors"].append({"node": node, "message": f"node {node}: no intact copy"})
        report["nodes"].append(entry)
    report["ok"] = not report["errors"]
    return report


def _render_local(r: dict[str, Any]) -> list[str]:
    lines = []
    for n in r["nodes"]:
        copies = ", ".join(f"{k} {v}" for k, v in n.items() if k != "node")
        lines.append(f"  node {n['node']}: {copies}")
    for e in r["errors"]:
        lines.append(f"BAD: {e['message']}")
    for w in r["warnings"]:
        lines.append(f"warning: {w}")
    if r["ok"]:
        lines.append(
            f"OK: {r['checkpoint']}: {r['tensors_total']} tensors on {r['node_count']} nodes, "
            f"{r['slices_checked']} slices, {r['bytes_read']} bytes "
            f"({fmt_bytes(r['bytes_read'])}) verified ({r['checksum']})"
        )
    else:
        lines.append(f"DAMAGED: {r['checkpoint']}: {len(r['errors'])} problem(s)")
    return lines


def _prefixes_of_directory(directory: str) -> list[str]:
    listing = list_directory(directory)
    out = [c["path"] for c in listing["checkpoints"] if c["committed"]]
    if not out:
        raise NotFoundError(f"no committed checkpoint in directory {directory!r}")
    return out


def run(args: argparse.Namespace) -> int:
    """Run ``verify``: exit 0 if intact, 1 on damage."""
    if args.all:
        if not os.path.isdir(args.path):
            raise CliError(
                f"--all needs a directory, {args.path!r} is not one", EXIT_NOT_FOUND, "usage"
            )
        prefixes = _prefixes_of_directory(args.path)
    elif is_local_path(args.path):
        report = verify_local(args.path)
        if args.json:
            dump_json(report)
        else:
            emit([f"verifying local checkpoint {args.path}", *_render_local(report)])
        return EXIT_OK if report["ok"] else EXIT_DAMAGED
    else:
        prefixes = [resolve(args.path)]
    reports = [verify_checkpoint(p, progress=args.progress) for p in prefixes]
    ok = all(r["ok"] for r in reports)
    if args.json:
        dump_json(reports[0] if not args.all else {"ok": ok, "checkpoints": reports})
    else:
        lines: list[str] = []
        for r in reports:
            lines += _render_one(r, args.verbose)
        emit(lines)
    return EXIT_OK if ok else EXIT_DAMAGED
