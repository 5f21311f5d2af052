"""Removing checkpoint files: old checkpoints, stale data files, leftovers of crashes.

Called by rank 0 only (the writer), after a commit. Data files go in the
background (:func:`~.fsutil.remove_later`): once no committed index names them,
no reader looks at them.
"""

from __future__ import annotations

import os

from .fsutil import remove_later, remove_quietly
from .load import named_data_file
from .paths import find_leftovers, index_path, own_data_files, parse_name

__all__ = [
    "delete_checkpoint_files",
    "remove_checkpoint_files",
    "remove_orphans",
    "remove_stale_files",
]


def remove_stale_files(prefix: str, keep: str) -> None:
    """After committing ``prefix`` with data file ``keep``: remove its other data files
    and temporary index files."""
    d = os.path.dirname(prefix) or "."
    for name in own_data_files(prefix):
        if name != keep:
            remove_later(os.path.join(d, name))  # unreferenced: off the critical path
    tmp_target = os.path.basename(index_path(prefix))
    try:
        names = os.listdir(d)
    except OSError:
        return
    for name in names:
        info = parse_name(name)
        if info.kind == "tmp" and info.target == tmp_target:
            remove_quietly(os.path.join(d, name))


def delete_checkpoint_files(prefix: str) -> None:
    """Remove every file of checkpoint ``prefix``: the index first (uncommitting it), then data."""
    remove_quietly(index_path(prefix))
    d = os.path.dirname(prefix) or "."
    for name in own_data_files(prefix):
        remove_later(os.path.join(d, name))


def remove_checkpoint_files(prefix: str) -> None:
    """Remove every file of checkpoint ``prefix`` before returning.

    The index goes first (uncommitting the checkpoint), then its data files and
    temporary index files. Idempotent, and safe when several processes run it at
    once: a file another one removed first is skipped.
    """
    remove_quietly(index_path(prefix))
    d = os.path.dirname(prefix) or "."
    for name in own_data_files(prefix):
        remove_quietly(os.path.join(d, name))
    target = os.path.basename(index_path(prefix))
    try:
        names = os.listdir(d)
    except OSError:
        return
    for name in names:
        info = parse_name(name)
        if info.kind == "tmp" and info.target == target:
            remove_quietly(os.path.join(d, name))


def remove_orphans(directory: str, checkpoint_name: str) -> list[str]:
    """Remove leftovers of crashed saves of ``{checkpoint_name}-N`` checkpoints.

    Returns the names removed (see :func:`~.paths.find_leftovers` for the rule).
    """
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = find_leftovers(
        names,
        lambda ck: named_data_file(os.path.join(directory, ck)),
        checkpoint_name=checkpoint_name,
    )
    for lo in found:
        path = os.path.join(directory, lo.name)
        if lo.kind == "data":
            remove_later(path)
        else:
            remove_quietly(path)
    return [lo.name for lo in found]
