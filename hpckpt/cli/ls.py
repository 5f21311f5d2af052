"""``hpckpt ls DIR [--local PATTERN]``: the checkpoints of a directory, its state file and
leftovers; with ``--local``, the local checkpoints of a multi-level tier too."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .. import io
from ..errors import CorruptCheckpointError, NotFoundError
from ..io.load import read_index_file
from ..io.local_check import find_local, local_node_dirs
from ..io.paths import STATE_FILE, find_leftovers, parse_name
from ..io.statefile import CheckpointState, read_state, resolve_latest
from .common import (
    EXIT_DAMAGED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    CliError,
    dump_json,
    emit,
    fmt_bytes,
    fmt_time,
    iso_time,
    step_of,
    table,
)

__all__ = ["add_parser", "list_directory", "run"]


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``ls``."""
    p = sub.add_parser(
        "ls",
        parents=parents,
        help="list the checkpoints of a directory",
        description=(
            "List the checkpoints named by DIR's state file (DIR/checkpoint) and any other "
            "committed checkpoint in DIR: name, step, size (index + data file), save time, "
            "number of tensors, which is latest; and uncommitted leftovers."
        ),
    )
    p.add_argument("directory", metavar="DIR", help="a checkpoint directory")
    p.add_argument(
        "--local",
        metavar="PATTERN",
        help="also list the local checkpoints of a multi-level tier: its path as given to "
        "hpckpt.LocalTier, with {node} standing for the node index (quote it), e.g. "
        "'/dev/shm/run-{node}'; its node directories are those present here",
    )
    p.set_defaults(run=run)


def _checkpoint_info(directory: str, rel: str) -> dict[str, Any]:
    prefix = os.path.join(directory, rel)
    info: dict[str, Any] = {
        "name": rel,
        "path": prefix,
        "tier": "persisted",
        "step": step_of(rel),
        "in_state_file": False,
        "state_time": None,
        "latest": False,
        "committed": False,
        "status": "ok",
        "error": None,
        "saved": None,
        "saved_iso": None,
        "tensors": None,
        "index_bytes": None,
        "data_file": None,
        "data_bytes": None,
        "size": None,
    }
    try:
        index, isize = read_index_file(prefix)
    except NotFoundError:
        info["status"] = "missing"
        info["error"] = f"no index {os.path.basename(io.index_path(prefix))!r}"
        return info
    except (CorruptCheckpointError, OSError) as e:
        info["committed"] = True
        info["status"] = "damaged"
        info["error"] = str(e) if isinstance(e, CorruptCheckpointError) else f"unreadable: {e}"
        try:
            info["index_bytes"] = os.path.getsize(io.index_path(prefix))
        except OSError:
            pass
        return info
    info.update(
        committed=True,
        saved=index.created,
        saved_iso=iso_time(index.created),
        tensors=len(index.tensors),
        index_bytes=isize,
        data_file=index.data_file,
    )
    try:
        dsize = os.path.getsize(io.data_file_path(prefix, index.data_file))
    except FileNotFoundError:
        info["status"] = "damaged"
        info["error"] = f"data file {index.data_file!r} is missing"
        info["size"] = isize
        return info
    info["data_bytes"] = dsize
    info["size"] = isize + dsize
    if dsize != index.data_size:
        info["status"] = "damaged"
        how = "truncated" if dsize < index.data_size else "grown"
        info["error"] = (
            f"data file {index.data_file!r} has {dsize} bytes, the index says "
            f"{index.data_size} ({how})"
        )
    return info


def _leftovers(directory: str, names: list[str], ckpts: dict[str, dict[str, Any]]) -> list[dict]:
    def named(ck: str) -> str | None:
        # A damaged index keeps its data file: report the damage, not an orphan.
        info = ckpts.get(ck)
        if info is None or not info["committed"]:
            return None
        return info["data_file"] or "\x00damaged"

    out = []
    for lo in find_leftovers(names, named):
        if lo.kind == "data":
            owner = ckpts.get(parse_name(lo.name).checkpoint or "")
            if owner is not None and owner["committed"] and owner["data_file"] is None:
                continue  # owned by a damaged index
        try:
            size = os.path.getsize(os.path.join(directory, lo.name))
        except OSError:
            continue
        out.append({"file": lo.name, "size": size, "reason": lo.reason})
    return out


def list_local(pattern: str) -> dict[str, Any]:
    """The local checkpoints of the tier at ``pattern``, as a JSON-able dict."""
    found, damaged = find_local(pattern)
    rows: list[dict[str, Any]] = []
    newest = True
    for c in found:
        li = c.index
        sizes = li.file_sizes
        present = sum(sizes[n] * (int(c.own[n]) + int(c.partner[n])) for n in range(li.nodes.nodes))
        complete = all(a or b for a, b in zip(c.own, c.partner, strict=True))
        rows.append(
            {
                "name": c.name,
                "path": c.path,
                "tier": "local",
                "step": step_of(c.name),
                "saved": c.created,
                "saved_iso": iso_time(c.created),
                "tensors": len(li.index.tensors),
                "ranks": li.nodes.nprocs,
                "nodes": li.nodes.nodes,
                "redundancy": li.redundancy,
                "own": c.own,
                "partner": c.partner if li.has_partner_copies else None,
                "complete": complete,
                "latest": complete and newest,
                "status": "ok" if complete else "incomplete",
                "error": None if complete else "; ".join(c.notes),
                "size": present,
            }
        )
        newest = newest and not complete
    for name, err in sorted(damaged.items(), reverse=True):
        rows.append(
            {
                "name": name,
                "path": io.local_prefix(pattern, name),
                "tier": "local",
                "step": step_of(name),
                "saved": None,
                "saved_iso": None,
                "tensors": None,
                "status": "damaged",
                "error": err,
                "complete": False,
                "latest": False,
                "size": None,
            }
        )
    rows.reverse()  # oldest first, as the persisted ones
    return {
        "pattern": pattern,
        "node_directories": {str(k): v for k, v in local_node_dirs(pattern).items()},
        "checkpoints": rows,
    }


def list_directory(directory: str, local: str | None = None) -> dict[str, Any]:
    """The report of ``ls`` as a JSON-able dict (with ``local``: the tier's checkpoints too).

    Raises:
        CliError: ``directory`` does not exist or is not a directory (without ``local``).
    """
    if local is not None and not os.path.exists(directory):
        report = _empty_report(directory)
        report["local"] = list_local(local)
        return report
    if not os.path.exists(directory):
        raise CliError(f"directory {directory!r} does not exist", EXIT_NOT_FOUND, "not_found")
    if not os.path.isdir(directory):
        raise CliError(f"{directory!r} is not a directory", EXIT_NOT_FOUND, "not_found")
    names = os.listdir(directory)
    state_path = os.path.join(directory, STATE_FILE)
    state_error = None
    state: CheckpointState | None = None
    try:
        state = read_state(directory)
    except CorruptCheckpointError as e:
        state_error = str(e)
    ckpts: dict[str, dict[str, Any]] = {}
    if state is not None:
        for rel, t in state.checkpoints:
            info = ckpts.get(rel) or _checkpoint_info(directory, rel)
            info["in_state_file"] = True
            info["state_time"] = t
            ckpts[rel] = info
        if state.latest is not None and state.latest not in ckpts:
            info = _checkpoint_info(directory, state.latest)
            info["in_state_file"] = True
            ckpts[state.latest] = info
    for n in names:
        name_info = parse_name(n)
        ck = name_info.checkpoint
        if name_info.kind == "index" and ck and ck not in ckpts:
            ckpts[ck] = _checkpoint_info(directory, ck)
    latest = resolve_latest(directory, state)
    if latest is not None and latest in ckpts:
        ckpts[latest]["latest"] = True

    def order(c: dict[str, Any]) -> tuple:
        t = c["saved"] if c["saved"] is not None else c["state_time"]
        return (t is None, t or 0.0, c["step"] if c["step"] is not None else -1, c["name"])

    rows = sorted(ckpts.values(), key=order)
    report = {
        "directory": directory,
        "state_file": {
            "path": state_path,
            "present": state is not None or state_error is not None,
            "latest": state.latest if state is not None else None,
            "error": state_error,
        },
        "latest": latest,
        "checkpoints": rows,
        "leftovers": _leftovers(directory, names, ckpts),
        "total_bytes": sum(c["size"] or 0 for c in rows),
    }
    if local is not None:
        report["local"] = list_local(local)
    return report


def _empty_report(directory: str) -> dict[str, Any]:
    return {
        "directory": directory,
        "state_file": {
            "path": os.path.join(directory, STATE_FILE),
            "present": False,
            "latest": None,
            "error": None,
        },
        "latest": None,
        "checkpoints": [],
        "leftovers": [],
        "total_bytes": 0,
    }


def _note(c: dict[str, Any]) -> str:
    notes = []
    if c["latest"]:
        notes.append("latest")
    if not c["in_state_file"] and c["committed"]:
        notes.append("not in state file")
    if c["status"] == "missing":
        notes.append(f"MISSING ({c['error']})")
    elif c["status"] == "damaged":
        notes.append(f"DAMAGED: {c['error']}")
    return "; ".join(notes)


def render(report: dict[str, Any]) -> list[str]:
    """The human-readable ``ls`` output."""
    sf = report["state_file"]
    if sf["error"]:
        head = f"state file DAMAGED: {sf['error']}"
    elif not sf["present"]:
        head = "no state file"
    else:
        head = f"state file: {STATE_FILE}, latest: {sf['latest'] or '-'}"
    lines = [f"{report['directory']}  ({head})"]
    ck = report["checkpoints"]
    if sf["present"] and not sf["error"] and sf["latest"] and report["latest"] != sf["latest"]:
        lines.append(
            f"warning: the state file's latest {sf['latest']!r} is not committed; "
            f"readers use {report['latest'] or 'nothing'}"
        )
    if ck:
        rows = [
            [
                c["name"],
                "-" if c["step"] is None else str(c["step"]),
                "-" if c["size"] is None else str(c["size"]),
                fmt_time(c["saved"] if c["saved"] is not None else c["state_time"]),
                "-" if c["tensors"] is None else str(c["tensors"]),
                _note(c),
            ]
            for c in ck
        ]
        lines.append("")
        lines += table(["NAME", "STEP", "BYTES", "SAVED", "TENSORS", "NOTE"], rows, {1, 2, 4})
    lines += _render_local(report.get("local"))
    lines.append("")
    committed = sum(1 for c in ck if c["committed"])
    lines.append(
        f"{committed} committed checkpoint(s), {report['total_bytes']} bytes "
        f"({fmt_bytes(report['total_bytes'])})"
    )
    if "local" in report:
        local = report["local"]["checkpoints"]
        complete = sum(1 for c in local if c["complete"])
        lines.append(f"{complete} complete local checkpoint(s) of {len(local)} found")
    if report["leftovers"]:
        lines.append("uncommitted leftovers (ignored by readers, removed by the next save):")
        for lo in report["leftovers"]:
            lines.append(f"  {lo['file']}  {lo['size']} bytes  {lo['reason']}")
    return lines


def _local_note(c: dict[str, Any]) -> str:
    if c["status"] == "damaged":
        return f"DAMAGED: {c['error']}"
    notes = ["latest local"] if c["latest"] else []
    n = c["nodes"]
    if c["status"] == "incomplete":
        notes.append(f"INCOMPLETE: {c['error']}")
    else:
        lost = [i for i in range(n) if not c["own"][i]]
        single = [i for i in range(n) if c["partner"] is None or not c["partner"][i]]
        if lost:
            notes.append(f"node(s) {lost} only in their partner copy")
        elif c["partner"] is not None and single:
            notes.append(f"node(s) {single} without partner copy")
    notes.append(f"{c['ranks']} ranks on {n} node(s), redundancy {c['redundancy']}")
    return "; ".join(notes)


def _render_local(local: dict[str, Any] | None) -> list[str]:
    if local is None:
        return []
    dirs = local["node_directories"]
    where = ", ".join(dirs.values()) if dirs else "none found"
    lines = ["", f"local tier {local['pattern']}  (node directories: {where})"]
    ck = local["checkpoints"]
    if not ck:
        return [*lines, "no local checkpoints"]
    rows = [
        [
            c["name"],
            "-" if c["step"] is None else str(c["step"]),
            "-" if c["size"] is None else str(c["size"]),
            fmt_time(c["saved"]),
            "-" if c["tensors"] is None else str(c["tensors"]),
            _local_note(c),
        ]
        for c in ck
    ]
    return lines + table(["NAME", "STEP", "BYTES", "SAVED", "TENSORS", "NOTE"], rows, {1, 2, 4})


def run(args: argparse.Namespace) -> int:
    """Run ``ls``: exit 0, or 1 when the state file or a committed checkpoint is damaged.

    A checkpoint the state file names but whose index is gone (a crash during
    retention) is reported as missing without failing; so is an incomplete local
    checkpoint (a lost node). A damaged local index fails.
    """
    report = list_directory(args.directory, args.local)
    local_rows = report["local"]["checkpoints"] if "local" in report else []
    damaged = bool(report["state_file"]["error"]) or any(
        c["status"] == "damaged" for c in [*report["checkpoints"], *local_rows]
    )
    report["ok"] = not damaged
    if args.json:
        dump_json(report)
    else:
        emit(render(report))
    return EXIT_DAMAGED if damaged else EXIT_OK
