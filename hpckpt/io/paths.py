"""File names of a checkpoint directory and the rules that read them.

The one place that knows how checkpoint files are named:

* ``P.index.json`` commits checkpoint ``P``; ``P.data-<token>.h5`` holds its data
  (``<token>`` is unique per write);
* ``DIR/checkpoint`` is the state file, ``DIR/.hpckpt.lock`` the writer lease;
* ``<file>.tmp-<hex>`` is a file being replaced atomically;
* the local tier (multi-level checkpointing), in each node's directory (the tier's
  path with ``{node}`` replaced by the node's index): ``P.local.json`` commits local
  checkpoint ``P`` (the same document on every node), ``P.node-<i>.own-<token>.bin``
  holds node ``i``'s data, ``P.node-<i>.partner-<token>.bin`` its partner copy (on
  node ``i + 1``).

and the rules built on the names: which files of a directory are leftovers of an
interrupted save (:func:`find_leftovers`), and which relative paths stay inside a
directory (:func:`check_relative`, :func:`check_inside`, :func:`relative_to`). Pure
logic apart from :func:`checkpoint_exists`, :func:`own_data_files`,
:func:`find_leftovers` and :func:`check_inside`, which list, stat or resolve links.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import CorruptCheckpointError

__all__ = [
    "INDEX_SUFFIX",
    "LOCAL_COPIES",
    "LOCAL_SUFFIX",
    "LOCK_NAME",
    "NODE_FIELD",
    "STATE_FILE",
    "Leftover",
    "LocalName",
    "NameInfo",
    "check_inside",
    "check_relative",
    "checkpoint_exists",
    "data_file_name",
    "data_file_path",
    "find_leftovers",
    "index_path",
    "is_data_file_name",
    "local_data_name",
    "local_directory",
    "local_marker_name",
    "local_prefix",
    "new_token",
    "normalize_prefix",
    "own_data_files",
    "parse_local_name",
    "parse_name",
    "relative_to",
    "step_of",
    "tmp_path",
]

INDEX_SUFFIX = ".index.json"
STATE_FILE = "checkpoint"
LOCK_NAME = ".hpckpt.lock"

_DATA_RE = re.compile(r"^(?P<prefix>[^/\\\x00]+)\.data-(?P<token>[0-9a-f]{8,64})\.h5$")
_TMP_RE = re.compile(r"^(?P<target>[^/\\\x00]+)\.tmp-[0-9a-f]+$")
_STEP_RE = re.compile(r"-(\d+)$")

LOCAL_SUFFIX = ".local.json"
LOCAL_COPIES = ("own", "partner")
NODE_FIELD = "{node}"
_LOCAL_DATA_RE = re.compile(
    r"^(?P<ckpt>[^/\\\x00]+)\.node-(?P<node>[0-9]{1,9})\.(?P<copy>own|partner)"
    r"-(?P<token>[0-9a-f]{8,64})\.bin$"
)
_LOCAL_TMP_RE = re.compile(r"^(?P<ckpt>[^/\\\x00]+)\.local\.json\.tmp-[0-9a-f]+$")


def normalize_prefix(path: str | os.PathLike) -> str:
    """The checkpoint prefix ``P`` for a path given as ``P`` or ``P.index.json``.

    Raises:
        ValueError: The path is empty, not a string, or contains NUL.
    """
    p = os.fspath(path)
    if not isinstance(p, str) or not p:
        raise ValueError(f"checkpoint path must be a non-empty string, got {path!r}")
    if "\x00" in p:
        raise ValueError(f"checkpoint path {p!r} contains NUL")
    return p[: -len(INDEX_SUFFIX)] if p.endswith(INDEX_SUFFIX) else p


def index_path(prefix: str) -> str:
    """``P.index.json``."""
    return prefix + INDEX_SUFFIX


def new_token() -> str:
    """A fresh data-file token (16 hex digits)."""
    return secrets.token_hex(8)


def data_file_name(prefix: str, token: str) -> str:
    """``basename(P).data-<token>.h5``."""
    return f"{os.path.basename(prefix)}.data-{token}.h5"


def data_file_path(prefix: str, name: str) -> str:
    """The path of data file ``name`` beside checkpoint ``prefix``."""
    return os.path.join(os.path.dirname(prefix), name)


def tmp_path(path: str, suffix: str) -> str:
    """The temporary file an atomic replacement of ``path`` writes first."""
    return f"{path}.tmp-{suffix}"


def is_data_file_name(name: str) -> bool:
    """Whether ``name`` is a valid data file name (``X.data-<hex>.h5``, no directory)."""
    return bool(_DATA_RE.match(name)) and not name.startswith(".")


def step_of(prefix: str) -> int | None:
    """The N of a checkpoint named ``name-N``, else ``None``."""
    m = _STEP_RE.search(os.path.basename(prefix))
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class NameInfo:
    """What a file name in a checkpoint directory is.

    Attributes:
        kind: ``"index"``, ``"data"``, ``"tmp"`` (an atomic replacement in progress
            of an index or the state file), ``"state"``, ``"lock"`` or ``"other"``.
        checkpoint: For ``index`` and ``data``: the checkpoint's name (``ckpt-3``).
        target: For ``tmp``: the name of the file being replaced.
    """

    kind: str
    checkpoint: str | None = None
    target: str | None = None


def parse_name(name: str) -> NameInfo:
    """Classify one file name of a checkpoint directory."""
    if name == STATE_FILE:
        return NameInfo("state")
    if name == LOCK_NAME or name.startswith(LOCK_NAME + "."):  # the lease, its takeover markers
        return NameInfo("lock")
    if name.endswith(INDEX_SUFFIX) and not name.startswith(".") and len(name) > len(INDEX_SUFFIX):
        return NameInfo("index", checkpoint=name[: -len(INDEX_SUFFIX)])
    m = _DATA_RE.match(name)
    if m and not name.startswith("."):
        return NameInfo("data", checkpoint=m.group("prefix"))
    t = _TMP_RE.match(name)
    if t and (t.group("target").endswith(INDEX_SUFFIX) or t.group("target") == STATE_FILE):
        return NameInfo("tmp", target=t.group("target"))
    return NameInfo("other")


def checkpoint_exists(prefix: str) -> bool:
    """Whether ``P.index.json`` exists as a regular file (a committed checkpoint)."""
    return os.path.isfile(index_path(prefix))


def own_data_files(prefix: str) -> list[str]:
    """Names of the data files of checkpoint ``prefix`` present in its directory."""
    d = os.path.dirname(prefix) or "."
    base = os.path.basename(prefix)
    try:
        names = os.listdir(d)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [n for n in names if parse_name(n) == NameInfo("data", checkpoint=base)]


@dataclass(frozen=True)
class Leftover:
    """A file of an interrupted save: no reader looks at it; the next save removes it.

    Attributes:
        name: The file name (in the directory).
        kind: ``"data"`` or ``"tmp"``.
        reason: Why it is a leftover, for people.
    """

    name: str
    kind: str
    reason: str


def find_leftovers(
    names: Iterable[str],
    named_data_file: Callable[[str], str | None],
    *,
    checkpoint_name: str | None = None,
) -> list[Leftover]:
    """The leftovers among the file names of one directory (THE orphan rule).

    A data file is a leftover when its checkpoint has no committed index, or its
    index names another data file; a temporary file of an index or of the state
    file is a leftover of an interrupted atomic replacement.

    Args:
        names: The directory's file names.
        named_data_file: For a checkpoint name, the data file its committed index
            names, or ``None`` when there is no (readable) index.
        checkpoint_name: Only consider checkpoints named ``{checkpoint_name}-N``
            (a manager cleans up its own saves only).
    """
    own = (
        re.compile(rf"^{re.escape(checkpoint_name)}-\d+$") if checkpoint_name is not None else None
    )
    out: list[Leftover] = []
    named: dict[str, str | None] = {}
    for name in sorted(names):
        info = parse_name(name)
        if info.kind == "data":
            ck = info.checkpoint
            assert ck is not None
            if own is not None and not own.match(ck):
                continue
            if ck not in named:
                named[ck] = named_data_file(ck)
            if named[ck] == name:
                continue
            reason = (
                f"no index: an interrupted save of {ck}"
                if named[ck] is None
                else f"stale data file of {ck} (not named by its index)"
            )
            out.append(Leftover(name, "data", reason))
        elif info.kind == "tmp":
            target = info.target or ""
            if own is not None and target != STATE_FILE:
                if not own.match(target[: -len(INDEX_SUFFIX)]):
                    continue
            out.append(
                Leftover(name, "tmp", f"temporary file of an interrupted commit of {target}")
            )
    return out


def check_relative(p: object, what: str = "state file") -> str:
    """Validate a checkpoint path relative to its directory, read from disk.

    Raises:
        CorruptCheckpointError: Not a non-empty string, absolute, with a backslash,
            NUL or a ``..`` component.
    """
    if not isinstance(p, str) or not p or "\x00" in p or os.path.isabs(p) or "\\" in p:
        raise CorruptCheckpointError(f"{what}: bad checkpoint path {p!r:.120}")
    if ".." in p.split("/"):
        raise CorruptCheckpointError(f"{what}: checkpoint path {p!r:.120} leaves the directory")
    return p


def check_inside(directory: str, rel: str, what: str = "state file") -> str:
    """``rel`` (checked by :func:`check_relative`) names a checkpoint inside ``directory``
    once symbolic links are resolved: a subdirectory that is a link to elsewhere does not
    count as inside.

    Raises:
        CorruptCheckpointError: It leads outside ``directory``.
    """
    check_relative(rel, what)
    root = os.path.realpath(directory)
    parent = os.path.realpath(os.path.join(directory, os.path.dirname(rel)))
    if parent != root and not parent.startswith(root.rstrip(os.sep) + os.sep):
        raise CorruptCheckpointError(
            f"{what}: checkpoint path {rel!r:.120} leads outside the directory (to {parent!r})"
        )
    return rel


def relative_to(directory: str, path: str) -> str:
    """``path`` relative to ``directory`` (it must lie inside it).

    Raises:
        ValueError: ``path`` lies outside ``directory``.
    """
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(directory))
    if rel == ".." or rel.startswith("../"):
        raise ValueError(f"checkpoint {path!r} is not inside directory {directory!r}")
    return rel


# --- the local tier (multi-level checkpointing) ---------------------------------------


def local_directory(pattern: str, node: int) -> str:
    """Node ``node``'s directory of a local tier: ``{node}`` in ``pattern`` replaced."""
    return pattern.replace(NODE_FIELD, str(int(node)))


def local_prefix(pattern: str, name: str) -> str:
    """The path naming local checkpoint ``name`` of a tier (``{node}`` kept)."""
    return os.path.join(pattern, name)


def local_marker_name(name: str) -> str:
    """``P.local.json``: the commit marker and index of local checkpoint ``P``."""
    return name + LOCAL_SUFFIX


def local_data_name(name: str, node: int, copy: str, token: str) -> str:
    """``P.node-<i>.<copy>-<token>.bin``: node ``i``'s data (``copy``: own or partner)."""
    if copy not in LOCAL_COPIES:
        raise ValueError(f"bad local copy kind {copy!r}")
    return f"{name}.node-{int(node)}.{copy}-{token}.bin"


@dataclass(frozen=True)
class LocalName:
    """What a file name in a local tier directory is.

    Attributes:
        kind: ``"marker"`` (``P.local.json``), ``"data"`` or ``"tmp"`` (a marker being
            written).
        checkpoint: The checkpoint's name (``ckpt-3``).
        node: For data: the node whose data it holds.
        copy: For data: ``"own"`` or ``"partner"``.
        token: For data: the save's token.
    """

    kind: str
    checkpoint: str
    node: int | None = None
    copy: str | None = None
    token: str | None = None


def parse_local_name(name: str) -> LocalName | None:
    """Classify one file name of a local tier directory (``None``: not a local-tier file)."""
    if name.startswith("."):
        return None
    if name.endswith(LOCAL_SUFFIX) and len(name) > len(LOCAL_SUFFIX):
        ck = name[: -len(LOCAL_SUFFIX)]
        return None if "/" in ck or "\x00" in ck else LocalName("marker", ck)
    m = _LOCAL_DATA_RE.match(name)
    if m:
        return LocalName(
            "data", m.group("ckpt"), int(m.group("node")), m.group("copy"), m.group("token")
        )
    t = _LOCAL_TMP_RE.match(name)
    if t:
        return LocalName("tmp", t.group("ckpt"))
    return None
