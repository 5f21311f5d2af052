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
    "all_ranks",
    "bcast_from_rank0",
    "capture_warnings",
    "chdir",
    "checkpoint_keys",
    "deferred_names",
    "list_objects",
    "listdir0",
    "on_rank0",
    "trackable_children",
    "value",
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


def value(v: hpckpt.Variable) -> np.ndarray:
    """``self.evaluate(v)``: the global value (collective for sharded variables)."""
    return v.numpy()


def bcast_from_rank0(obj: Any) -> Any:
    return COMM.bcast(obj, root=0)


def on_rank0(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only; every rank returns its result or raises its error.

    For TF's process-local file helpers (a TF test is one process): running them on
    every rank at once would race on the same files.
    """
    result, err = None, None
    if COMM.rank == 0:
        try:
            result = fn()
        except BaseException as e:  # re-raised on every rank below
            err = e
    err = COMM.bcast(err if err is None else _portable(err), root=0)
    if err is not None:
        raise err
    return COMM.bcast(result, root=0)


def _portable(e: BaseException) -> BaseException:
    try:
        import pickle

        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return RuntimeError(f"{type(e).__name__}: {e}")


def listdir0(path: str) -> list[str]:
    """``os.listdir`` as rank 0 sees it (after a barrier), on every rank."""
    COMM.Barrier()
    if COMM.rank == 0:
        from hpckpt.io._fsutil import wait_removals

        wait_removals()  # rank 0 deletes old data files in the background
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
