"""The local tier on one process (no MPI): listing and verifying local checkpoints.

For the command line (``hpckpt ls --local PATTERN``, ``hpckpt verify PATTERN/NAME``):
the node directories of a tier are found by replacing ``{node}`` in its path with
each index present on disk; each local checkpoint is judged against the node map it
was saved with (which node's data is where, in which copy).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import CorruptCheckpointError
from .checksum import checksum_function
from .local_index import LocalIndex, parse_local_index, slice_sizes
from .local_scan import LocalCandidate, judge_candidate, list_node
from .paths import NODE_FIELD, local_directory, local_marker_name

__all__ = [
    "CopyReport",
    "find_local",
    "is_local_path",
    "local_node_dirs",
    "verify_local_copy",
]

_READ = 8 << 20


def local_node_dirs(pattern: str) -> dict[int, str]:
    """The node directories of a tier present on disk: ``{node index: path}``.

    Without ``{node}`` in ``pattern``, the one directory holds every node's files
    (index ``-1``).
    """
    if NODE_FIELD not in pattern:
        return {-1: pattern} if os.path.isdir(pattern) else {}
    head, _, tail = pattern.partition(NODE_FIELD)
    rx = re.compile(re.escape(head) + r"(\d{1,9})" + re.escape(tail.replace(NODE_FIELD, "*")))
    out: dict[int, str] = {}
    for p in glob.glob(glob.escape(head) + "*" + glob.escape(tail.replace(NODE_FIELD, "*"))):
        m = rx.fullmatch(p)
        if m and os.path.isdir(p) and local_directory(pattern, int(m.group(1))) == p:
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def is_local_path(path: str) -> bool:
    """Whether ``path`` names a local checkpoint (``{node}`` in it, or a marker beside it)."""
    if NODE_FIELD in path:
        return True
    return os.path.isfile(
        os.path.join(os.path.dirname(path) or ".", local_marker_name(os.path.basename(path)))
    )


def find_local(
    pattern: str, checkpoint_name: str | None = None, names: set[str] | None = None
) -> tuple[list[LocalCandidate], dict[str, str]]:
    """The local checkpoints of a tier (newest first), and damaged markers (name -> error).

    Each checkpoint is judged against the node map it was saved with.
    """
    dirs = local_node_dirs(pattern)
    rx = re.compile(rf"^{re.escape(checkpoint_name)}-\d+$") if checkpoint_name else None
    reports: dict[int, dict] = {}
    texts: dict[str, bytes] = {}
    damaged: dict[str, str] = {}
    for node, d in dirs.items():
        rep, tx = list_node(d, rx, names)
        reports[node] = rep
        for name, m in rep["markers"].items():
            if m.get("ok"):
                texts.setdefault(name, tx[name])
            else:
                damaged.setdefault(name, m["error"])
    out = []
    for name, text in texts.items():
        li = parse_local_index(text, source=local_marker_name(name))
        if -1 in reports:
            by_node = [reports[-1]] * li.nodes.nodes
        else:
            empty: dict = {"markers": {}, "files": {}}
            by_node = [reports.get(n, empty) for n in range(li.nodes.nodes)]
        out.append(judge_candidate(pattern, li, li.nodes, by_node))
    out.sort(key=lambda c: (-c.created, c.name))
    return out, {k: v for k, v in damaged.items() if k not in texts}


@dataclass
class CopyReport:
    """The verification of one node's copy of a local checkpoint.

    Attributes:
        node: The node whose data it is.
        copy: ``"own"`` or ``"partner"``.
        path: Its file.
        slices: Slices checked.
        nbytes: Bytes read.
        problems: ``(tensor key, slice number, file byte range, message)`` of each
            damaged slice (or of an unreadable file: slice -1).
    """

    node: int
    copy: str
    path: str
    slices: int = 0
    nbytes: int = 0
    problems: list[tuple[str, int, tuple[int, int], str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_local_copy(c: LocalCandidate, node: int, copy: str) -> CopyReport:
    """Read every slice of node ``node`` from its ``copy`` file and check its checksum."""
    li: LocalIndex = c.index
    where = node if copy == "own" else li.nodes.partner_node(node)
    path = os.path.join(c.directory(where), li.data_file(node, copy))
    rep = CopyReport(node, copy, path)
    fn = checksum_function(li.index.checksum)
    node_of = np.asarray((*li.nodes.node_of, -1), dtype=np.int64)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        rep.problems.append(("", -1, (0, 0), f"cannot open {path!r}: {err}"))
        return rep
    try:
        for key, e in li.index.tensors.items():
            loc = li.locations[key]
            sizes = slice_sizes(e)
            mine = np.flatnonzero((node_of[loc.ranks] == node) & (sizes > 0))
            for i in mine.tolist():
                lo, n = int(loc.offsets[i]), int(sizes[i])
                crc, pos = 0, 0
                while pos < n:
                    chunk = os.pread(fd, min(_READ, n - pos), lo + pos)
                    if not chunk:
                        break
                    crc = fn(chunk, crc)
                    pos += len(chunk)
                rep.slices += 1
                rep.nbytes += pos
                if pos < n:
                    msg = f"short read of tensor {key!r} slice {i}: file truncated"
                    rep.problems.append((key, i, (lo, lo + n), msg))
                elif crc != int(e.checksums[i]):
                    start, shape = e.slicing.box(i)
                    msg = (
                        f"checksum mismatch in tensor {key!r}, slice start {list(start)} shape "
                        f"{list(shape)}, file bytes [{lo}, {lo + n}) of {path!r}"
                    )
                    rep.problems.append((key, i, (lo, lo + n), msg))
    except (OSError, CorruptCheckpointError) as err:
        rep.problems.append(("", -1, (0, 0), f"cannot read {path!r}: {err}"))
    finally:
        os.close(fd)
    return rep
