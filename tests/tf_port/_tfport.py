"""Helpers shared by the ports of TensorFlow's checkpoint test suites.

The ports translate TF's tests to hpckpt's public API. Where a TF test reads a
TF-internal attribute (``_trackable_children()``, ``_deferred_dependencies``,
``util.list_objects``), the translation goes through the few functions at the
end of this module, which are the only places that touch hpckpt internals.

Everything here that touches files or variables is collective: call it on every
rank, in the same order.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from conftest import Agreed, all_ranks  # tests/conftest.py (on sys.path via pytest)
from mpi4py import MPI

import hpckpt

__all__ = [
    "Agreed",
    "V",
    "agreed_call",
    "all_ranks",
    "capture_warnings",
    "chdir",
    "checkpoint_keys",
    "deferred_names",
    "list_objects",
    "listdir0",
    "trackable_children",
]

COMM = MPI.COMM_WORLD


def V(initial_value: Any, dtype: Any = None, layout: hpckpt.Layout | None = None):
    """``tf.Variable(initial_value)``: float values default to float32 as in TF."""
    arr = np.asarray(initial_value)
    if dtype is None and arr.dtype.kind == "f":
        dtype = np.float32
    if dtype is None and arr.dtype.kind in "iu":
        dtype = np.int32  # tf.Variable(1) is int32
    return hpckpt.Variable(np.asarray(arr, dtype=dtype), layout=layout)


def agreed_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` on every rank; if it raises on any rank, raise on every rank.

    For file helpers whose collectiveness is not known yet (``update_checkpoint_state``,
    ``remove_checkpoint``): a rank-local implementation that fails on some ranks only
    (say, two ranks removing the same file) must not leave the others waiting. It starts
    with a barrier: no rank changes the files while another is still reading them (TF's
    test is one process, where every read precedes the next write).
    """
    COMM.Barrier()
    result, err = None, None
    try:
        result = fn(*args, **kwargs)
    except Exception as e:
        err = e
    failed = COMM.allgather(None if err is None else f"{type(err).__name__}: {err}")
    if err is not None:
        raise err
    others = [f"rank {r}: {m}" for r, m in enumerate(failed) if m]
    if others:
        raise AssertionError(f"{getattr(fn, '__name__', fn)} failed on " + "; ".join(others))
    return result


def listdir0(path: str) -> list[str]:
    """``os.listdir`` as rank 0 sees it (after a barrier), on every rank."""
    COMM.Barrier()
    return COMM.bcast(sorted(os.listdir(path)) if COMM.rank == 0 else None, root=0)


@contextlib.contextmanager
def chdir(path: str) -> Iterator[None]:
    """``os.chdir`` on every rank, restored afterwards (TF tests never restore it)."""
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


class _ListHandler(logging.Handler):
    def __init__(self, out: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.out = out

    def emit(self, record: logging.LogRecord) -> None:
        self.out.append(record.getMessage())


@contextlib.contextmanager
def capture_warnings() -> Iterator[list[str]]:
    """TF's ``mock.patch.object(logging, "warning")``: collect warning messages.

    hpckpt may report through ``warnings.warn`` or through ``logging``; both are
    collected (this rank's only).
    """
    out: list[str] = []
    handler = _ListHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            yield out
            out.extend(str(w.message) for w in rec)
    finally:
        root.removeHandler(handler)


def checkpoint_keys(root: Any, directory: str, name: str = "keys") -> list[str]:
    """TF's ``_get_all_checkpoint_names(root)``: the keys of ``root``'s values.

    Public-API translation: write ``Checkpoint(root=root)`` (no save counter) and
    list its tensors. Collective.
    """
    path = hpckpt.Checkpoint(root=root).write(os.path.join(directory, name))
    return [k for k, _ in hpckpt.list_variables(path)]


# --- the only functions that read hpckpt internals ---------------------------------


def trackable_children(obj: Any) -> dict[str, Any]:
    """TF's ``obj._trackable_children()``: the named dependencies of a node."""
    from hpckpt.graph import children_of

    return dict(children_of(obj))


def list_objects(root: Any) -> list[Any]:
    """TF's ``util.list_objects(root)``: every object reachable from ``root``."""
    seen: dict[int, Any] = {id(root): root}
    queue: deque[Any] = deque([root])
    while queue:
        for _, child in trackable_children(queue.popleft()).items():
            if id(child) not in seen:
                seen[id(child)] = child
                queue.append(child)
    return list(seen.values())


def deferred_names(obj: Any) -> list[str]:
    """TF's ``obj._deferred_dependencies``: names with a restore waiting for them."""
    return [n for n, pending in obj._hpckpt().deferred.items() if pending]
