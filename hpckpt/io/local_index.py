"""The index of a local checkpoint (``P.local.json``): records, serialization, validation.

A local checkpoint (multi-level checkpointing, see :mod:`.local_tier`) is one raw
data file per node, ``P.node-<i>.own-<token>.bin``, holding the slices the node's
ranks wrote (each slice's bytes contiguous, C order), plus, with partner
redundancy, a byte-identical copy ``P.node-<i>.partner-<token>.bin`` on node
``i + 1``. Its index is ONE document, written into every node's directory after
all data and partner copies are durable: its presence anywhere commits the
checkpoint. It holds

* the standard index (format version 2: tensors, layouts, slicing, the save-time
  checksum of every slice, the object graph) describing the tensors as if they
  were stored in one virtual data file;
* where each slice really is: the rank that wrote it (so its node, and its
  partner node) and its byte offset in that node's file;
* the node map of the job that saved (a local checkpoint is restored by a job with
  the same ranks on the same nodes) and each node file's size.

Pure logic: no MPI, no files.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CorruptCheckpointError
from ..topology import NodeMap
from .index import MAX_INDEX_BYTES, MAX_RANKS, CheckpointIndex, TensorEntry
from .index_parse import parse_index_document
from .paths import local_data_name
from .slicing import ListedSlicing

__all__ = [
    "LOCAL_FORMAT",
    "REDUNDANCIES",
    "LocalIndex",
    "SliceLocations",
    "parse_local_index",
    "slice_sizes",
]

LOCAL_FORMAT = "hpckpt-local"
LOCAL_VERSION = 1
REDUNDANCIES = ("partner", "none")
_TOKEN_RE = re.compile(r"^[0-9a-f]{8,64}$")
_NAME_RE = re.compile(r"^[^/\\\x00]{1,255}$")


def _pack(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.asarray(a, dtype=dtype).tobytes()).decode("ascii")


def _unpack(s: Any, dtype: str, count: int, where: str) -> np.ndarray:
    if type(s) is not str:
        raise CorruptCheckpointError(f"local index: {where} is not a packed array")
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise CorruptCheckpointError(f"local index: {where} is not valid base64") from None
    item = np.dtype(dtype).itemsize
    if len(raw) != item * count:
        raise CorruptCheckpointError(
            f"local index: {where} holds {len(raw) // item} values for {count} slices"
        )
    return np.frombuffer(raw, dtype=dtype).astype(np.int64)


def slice_sizes(entry: TensorEntry) -> np.ndarray:
    """Bytes of each saved slice of ``entry`` (int64, one per slice)."""
    s = entry.slicing
    isz = entry.dtype.itemsize
    if isinstance(s, ListedSlicing):
        if not entry.shape:
            return np.full(len(s), isz, dtype=np.int64)
        return np.prod(s.shapes, axis=1, dtype=np.int64) * isz
    return np.asarray([math.prod(s.box(i)[1]) * isz for i in range(len(s))], dtype=np.int64)


@dataclass
class SliceLocations:
    """Where the saved slices of one tensor are.

    Attributes:
        ranks: The rank that wrote each slice (``-1`` for empty slices).
        offsets: Each slice's byte offset in the file of its writer's node.
    """

    ranks: np.ndarray
    offsets: np.ndarray


@dataclass
class LocalIndex:
    """The parsed content of ``P.local.json``.

    Attributes:
        name: The checkpoint's name (``ckpt-3``).
        created: The save time (seconds since the epoch, the saving job's clock).
        token: The save's unique token (in every data file's name).
        nodes: The node map of the job that saved.
        redundancy: ``"partner"`` or ``"none"``.
        file_sizes: The size of each node's data file.
        locations: Per tensor key, where its slices are.
        index: The standard index of the checkpoint's tensors and object graph.
    """

    name: str
    created: float
    token: str
    nodes: NodeMap
    redundancy: str
    file_sizes: list[int]
    locations: dict[str, SliceLocations]
    index: CheckpointIndex

    @property
    def has_partner_copies(self) -> bool:
        """Whether every node's data has a copy on its partner node."""
        return self.redundancy == "partner" and self.nodes.nodes > 1

    def data_file(self, node: int, copy: str) -> str:
        """The name of node ``node``'s data file (``copy``: ``"own"`` or ``"partner"``)."""
        return local_data_name(self.name, node, copy, self.token)

    def to_json(self) -> str:
        """The text of ``P.local.json``."""
        head = {
            "format": LOCAL_FORMAT,
            "version": LOCAL_VERSION,
            "name": self.name,
            "created": self.created,
            "token": self.token,
            "nprocs": self.nodes.nprocs,
            "node_of": list(self.nodes.node_of),
            "redundancy": self.redundancy,
            "files": [int(x) for x in self.file_sizes],
            "locations": {
                k: {"ranks": _pack(v.ranks, "<i4"), "offsets": _pack(v.offsets, "<i8")}
                for k, v in self.locations.items()
            },
        }
        text = json.dumps(head, separators=(",", ":"))
        return text[:-1] + ',"index":' + self.index.to_json() + "}"


def _req(doc: dict, name: str, typ: type | tuple[type, ...], source: str) -> Any:
    v = doc.get(name)
    if isinstance(v, bool) or not isinstance(v, typ):
        raise CorruptCheckpointError(f"{source}: {name!r} is missing or has the wrong type")
    return v


def parse_local_index(
    text: str | bytes, *, source: str = "local index", trusted: bool = False
) -> LocalIndex:
    """Parse the text of ``P.local.json``, validating it unless ``trusted``.

    Validation covers the embedded standard index (as :func:`parse_index` does), the
    node map, and every slice's location: its writer is a rank of the job, and its
    bytes lie inside its node's file.

    Raises:
        CorruptCheckpointError: The text is not a valid local index.
    """
    if not trusted and len(text) > MAX_INDEX_BYTES:
        raise CorruptCheckpointError(f"{source}: larger than {MAX_INDEX_BYTES} bytes")
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CorruptCheckpointError(f"{source}: not valid JSON") from None
    if trusted:
        return _build(doc, source, trusted=True)
    if not isinstance(doc, dict) or doc.get("format") != LOCAL_FORMAT:
        raise CorruptCheckpointError(f"{source}: not an hpckpt local checkpoint index")
    if doc.get("version") != LOCAL_VERSION:
        raise CorruptCheckpointError(
            f"{source}: local index version {doc.get('version')!r} is not supported "
            f"(this hpckpt reads version {LOCAL_VERSION})"
        )
    return _build(doc, source, trusted=False)


def _build(doc: Any, source: str, *, trusted: bool) -> LocalIndex:
    v = not trusted
    name = _req(doc, "name", str, source) if v else doc["name"]
    if v and (not _NAME_RE.match(name) or name in (".", "..")):
        raise CorruptCheckpointError(f"{source}: bad checkpoint name {name!r:.80}")
    token = _req(doc, "token", str, source) if v else doc["token"]
    if v and not _TOKEN_RE.match(token):
        raise CorruptCheckpointError(f"{source}: bad token {token!r:.80}")
    created = float(_req(doc, "created", (int, float), source) if v else doc["created"])
    nprocs = _req(doc, "nprocs", int, source) if v else doc["nprocs"]
    if v and not 1 <= nprocs <= MAX_RANKS:
        raise CorruptCheckpointError(f"{source}: bad rank count {nprocs!r}")
    raw_nodes = _req(doc, "node_of", list, source) if v else doc["node_of"]
    if v and (
        len(raw_nodes) != nprocs or not all(type(x) is int and 0 <= x < nprocs for x in raw_nodes)
    ):
        raise CorruptCheckpointError(f"{source}: bad node map")
    try:
        nodes = NodeMap(tuple(raw_nodes))
    except ValueError as err:
        raise CorruptCheckpointError(f"{source}: {err}") from None
    redundancy = _req(doc, "redundancy", str, source) if v else doc["redundancy"]
    if v and redundancy not in REDUNDANCIES:
        raise CorruptCheckpointError(f"{source}: unknown redundancy {redundancy!r:.40}")
    sizes = _req(doc, "files", list, source) if v else doc["files"]
    if v and (
        len(sizes) != nodes.nodes or not all(type(x) is int and 0 <= x < 1 << 62 for x in sizes)
    ):
        raise CorruptCheckpointError(f"{source}: bad node file sizes")
    raw_index = doc.get("index")
    index = parse_index_document(raw_index, source=f"{source} (index)", trusted=trusted)
    if v and index.nprocs != nprocs:
        raise CorruptCheckpointError(
            f"{source}: the index was saved by {index.nprocs} ranks, the node map has {nprocs}"
        )
    raw_loc = _req(doc, "locations", dict, source) if v else doc["locations"]
    if v and set(raw_loc) != set(index.tensors):
        raise CorruptCheckpointError(f"{source}: the slice locations do not match the tensors")
    node_of = np.asarray(nodes.node_of, dtype=np.int64)
    file_sizes = np.asarray(sizes, dtype=np.int64)
    locations: dict[str, SliceLocations] = {}
    for key, entry in index.tensors.items():
        d = raw_loc[key]
        if v and type(d) is not dict:
            raise CorruptCheckpointError(f"{source}: bad locations of tensor {key!r:.80}")
        n = len(entry.slicing)
        where = f"tensor {key!r:.80}"
        ranks = _unpack(d.get("ranks"), "<i4", n, f"{where} ranks")
        offsets = _unpack(d.get("offsets"), "<i8", n, f"{where} offsets")
        if v:
            _check_locations(entry, ranks, offsets, node_of, file_sizes, source)
        locations[key] = SliceLocations(ranks, offsets)
    return LocalIndex(
        name, created, token, nodes, redundancy, [int(x) for x in sizes], locations, index
    )


def _check_locations(
    e: TensorEntry,
    ranks: np.ndarray,
    offsets: np.ndarray,
    node_of: np.ndarray,
    file_sizes: np.ndarray,
    source: str,
) -> None:
    """Every non-empty slice has a writer and lies inside its node's file."""
    sizes = slice_sizes(e)
    used = sizes > 0
    if np.any(ranks[used] < 0) or np.any(ranks >= len(node_of)) or np.any(ranks < -1):
        raise CorruptCheckpointError(f"{source}: tensor {e.key!r:.80} names a bad writer rank")
    if np.any(offsets[used] < 0):
        raise CorruptCheckpointError(f"{source}: tensor {e.key!r:.80} has a negative offset")
    limit = file_sizes[node_of[np.maximum(ranks, 0)]]
    if np.any((offsets > limit - sizes) & used):  # no overflow for hostile offsets
        raise CorruptCheckpointError(
            f"{source}: tensor {e.key!r:.80} has a slice outside its node's data file"
        )
