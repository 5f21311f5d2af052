"""Shared fixtures: a directory common to all ranks, agreement helpers."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from mpi4py import MPI


@pytest.fixture
def comm() -> MPI.Comm:
    return MPI.COMM_WORLD


@pytest.fixture
def shared_dir(request):
    """A fresh directory, the same path on every rank; removed afterwards.

    Collective: every rank of COMM_WORLD must run the test.
    """
    comm = MPI.COMM_WORLD
    path = None
    if comm.rank == 0:
        base = os.environ.get("HPCKPT_TEST_TMP") or None
        path = tempfile.mkdtemp(prefix="hpckpt-test-", dir=base)
    path = comm.bcast(path, root=0)
    yield path
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def all_ranks(ok: bool) -> bool:
    """True when ``ok`` holds on every rank (agree before asserting)."""
    return MPI.COMM_WORLD.allreduce(bool(ok), op=MPI.LAND)


class Agreed:
    """Collect a per-rank failure, then assert on every rank together.

    Usage::

        with Agreed() as a:
            ...  # assertions that may fail on some ranks only
    """

    def __enter__(self):
        self.error = None
        return self

    def __exit__(self, typ, exc, tb):
        comm = MPI.COMM_WORLD
        msg = None if exc is None else f"rank {comm.rank}: {typ.__name__}: {exc}"
        msgs = [m for m in comm.allgather(msg) if m]
        if msgs:
            raise AssertionError("; ".join(msgs)) from exc
        return False


def record_preadv(monkeypatch, module) -> list[tuple[int, int, int]]:
    """Record ``(destination address, file offset, bytes)`` of every buffer of every
    ``os.preadv`` that ``module`` makes (the real call still runs)."""
    import numpy as np

    seen: list[tuple[int, int, int]] = []
    real = os.preadv

    def spy(fd, buffers, offset, *a):
        at = offset
        for b in buffers:
            arr = np.frombuffer(b, dtype=np.uint8)
            seen.append((arr.ctypes.data, at, arr.size))
            at += arr.size
        return real(fd, buffers, offset, *a)

    monkeypatch.setattr(module.os, "preadv", spy)
    return seen
