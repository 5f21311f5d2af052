"""Finding the local checkpoints of a tier: which are complete, and where each node's data is.

Call order of :func:`scan_local` (collective):

1. each node's leader lists its directory: the markers (``P.local.json``, read
   bounded and validated) and the data files with their sizes; every report is
   gathered on every rank (a few entries per node);
2. for each checkpoint with a valid marker on some node, newest first, the leader
   of the lowest such node broadcasts the marker's bytes; every rank then decides,
   from the gathered listings alone (the same decision everywhere), where each
   node's data is: its own copy if its directory holds its data file at the
   recorded size, else the partner copy in node ``i + 1``'s directory, else nowhere
   (the checkpoint is incomplete).

A checkpoint saved by a job with other ranks or other nodes is *incompatible*: its
node files are not where this job's nodes look.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field

from mpi4py import MPI

from .. import _dist
from .._dist import Deadline
from ..errors import CorruptCheckpointError
from ..topology import NodeMap
from .fsutil import read_bounded
from .index import MAX_INDEX_BYTES
from .local_index import LocalIndex, parse_local_index
from .paths import local_directory, local_marker_name, local_prefix, parse_local_name

__all__ = ["LocalCandidate", "judge_candidate", "list_node", "scan_local"]


@dataclass
class LocalCandidate:
    """A local checkpoint found in a tier, as every rank of this job sees it.

    Attributes:
        name: The checkpoint's name.
        path: Its path (the tier's pattern, ``{node}`` kept, joined with the name).
        pattern: The tier's path pattern.
        created: Its save time.
        index: Its local index.
        compatible: Saved by a job with this job's ranks on this job's nodes.
        own: Per node: its own copy is present (at the recorded size).
        partner: Per node: its partner copy is present (on node ``i + 1``).
        notes: Why the checkpoint cannot be restored, for people (empty if it can).
    """

    name: str
    path: str
    pattern: str
    created: float
    index: LocalIndex
    compatible: bool
    own: list[bool] = field(default_factory=list)
    partner: list[bool] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every node's data is present in some copy (and the job matches)."""
        return self.compatible and all(a or b for a, b in zip(self.own, self.partner, strict=True))

    def directory(self, node: int) -> str:
        """Node ``node``'s directory."""
        return local_directory(self.pattern, node)

    def sources(self) -> list[str]:
        """Per node, the copy to read: ``"own"`` when present, else ``"partner"``."""
        return ["own" if a else "partner" for a in self.own]


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def list_node(
    directory: str, pattern: re.Pattern | None, names: set[str] | None
) -> tuple[dict, dict[str, bytes]]:
    """A node directory's report (markers: validity and save time; data files: sizes)
    and the bytes of its valid markers. One process, no MPI."""
    markers: dict[str, dict] = {}
    files: dict[str, int] = {}
    texts: dict[str, bytes] = {}
    try:
        entries = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return {"markers": markers, "files": files}, texts
    for n in entries:
        info = parse_local_name(n)
        if info is None or (pattern is not None and not pattern.match(info.checkpoint)):
            continue
        if names is not None and info.checkpoint not in names:
            continue
        path = os.path.join(directory, n)
        if info.kind == "data":
            try:
                st = os.stat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files[n] = int(st.st_size)
        elif info.kind == "marker":
            try:
                text = read_bounded(path, MAX_INDEX_BYTES, "local index")
                if text is None:
                    continue
                li = parse_local_index(text, source=path)
                if li.name != info.checkpoint:
                    raise CorruptCheckpointError(f"{path}: names checkpoint {li.name!r}")
            except (CorruptCheckpointError, OSError) as e:
                markers[info.checkpoint] = {"ok": False, "error": str(e)}
                continue
            markers[info.checkpoint] = {"ok": True, "created": li.created, "hash": _digest(text)}
            texts[info.checkpoint] = text
    return {"markers": markers, "files": files}, texts


def scan_local(
    comm: MPI.Comm,
    nodes: NodeMap,
    pattern: str,
    deadline: Deadline,
    *,
    checkpoint_name: str | None = None,
    names: set[str] | None = None,
) -> list[LocalCandidate]:
    """The local checkpoints of the tier at ``pattern``, newest first.

    Only checkpoints named ``{checkpoint_name}-N`` (when given) or in ``names`` (when
    given) are considered. Damaged markers are skipped (another node's copy of the
    marker serves).

    Collective: call on all ranks.
    """
    rank = comm.Get_rank()
    what = f"listing the local checkpoints of {pattern!r}"
    rx = re.compile(rf"^{re.escape(checkpoint_name)}-\d+$") if checkpoint_name else None

    def listing() -> tuple[dict, dict[str, bytes]] | None:
        if not nodes.is_leader(rank):
            return None
        return list_node(local_directory(pattern, nodes.node_of[rank]), rx, names)

    mine = _dist.run_agreed(comm, what, listing, deadline)
    reports = _dist.allgather_json(comm, mine[0] if mine is not None else None, deadline)
    texts = mine[1] if mine is not None else {}
    by_node = [reports[nodes.leader(n)] for n in range(nodes.nodes)]
    found: dict[str, tuple[float, int]] = {}  # name -> (created, holder node)
    for n, rep in enumerate(by_node):
        for name, m in rep["markers"].items():
            if m.get("ok") and name not in found:
                found[name] = (float(m["created"]), n)
    out = []
    for name, (_, holder) in sorted(found.items(), key=lambda kv: (-kv[1][0], kv[0])):
        root = nodes.leader(holder)
        text = _dist.bcast_bytes(comm, texts.get(name) if rank == root else None, root, deadline)
        source = local_marker_name(name)

        def parse(text: bytes = text, root: int = root, source: str = source) -> LocalIndex:
            # validated by the holder's leader while listing; the others trust it
            return parse_local_index(text, source=source, trusted=rank != root)

        li = _dist.run_agreed(comm, what, parse, deadline)
        out.append(judge_candidate(pattern, li, nodes, by_node))
    return out


def judge_candidate(
    pattern: str, li: LocalIndex, nodes: NodeMap, by_node: list[dict]
) -> LocalCandidate:
    """Where each node's data of ``li`` is, from each node's report (:func:`list_node`),
    for a job with node map ``nodes``."""
    c = LocalCandidate(li.name, local_prefix(pattern, li.name), pattern, li.created, li, False)
    if li.nodes != nodes:
        c.notes.append(
            f"saved by {li.nodes.describe()}, this job has {nodes.describe()} "
            "(restore it from the parallel file system)"
        )
        return c
    c.compatible = True
    for node in range(nodes.nodes):
        want = li.file_sizes[node]
        own = by_node[node]["files"].get(li.data_file(node, "own"))
        c.own.append(own == want)
        ok = False
        if li.has_partner_copies:
            p = nodes.partner_node(node)
            ok = by_node[p]["files"].get(li.data_file(node, "partner")) == want
        c.partner.append(ok)
        if not c.own[-1] and not ok:
            where = local_directory(pattern, node)
            extra = (
                f" nor its partner copy in {local_directory(pattern, nodes.partner_node(node))!r}"
                if li.has_partner_copies
                else " (no partner copies: redundancy 'none')"
            )
            c.notes.append(f"node {node} has neither its data in {where!r}{extra}")
    return c
