"""Asynchronous saves: snapshot, background write, agreed errors on the next call."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from conftest import all_ranks
from mpi4py import MPI

import hpckpt
from hpckpt import Layout, _faults

pytestmark = pytest.mark.mpi(min_size=2)

ASYNC = hpckpt.CheckpointOptions(enable_async=True)


def model():
    mesh = hpckpt.create_mesh([("x", MPI.COMM_WORLD.size)])
    return hpckpt.Variable(np.arange(40.0).reshape(8, 5), Layout(["x", "unsharded"], mesh))


def test_async_save_snapshots_state(shared_dir):
    v = model()
    ck = hpckpt.Checkpoint(v=v)
    mgr = hpckpt.CheckpointManager(ck, shared_dir, max_to_keep=2)
    p1 = mgr.save(options=ASYNC)
    want = v.numpy()
    v.local[...] = -1  # changed while the save runs: the snapshot is what is saved
    p2 = mgr.save(options=ASYNC)  # waits for the first one
    ck.sync()
    assert mgr.checkpoints == [p1, p2]
    w = model()
    w.local[...] = 0
    hpckpt.Checkpoint(v=w).restore(p1).assert_consumed()
    assert all_ranks(np.array_equal(w.numpy(), want))
    hpckpt.Checkpoint(v=w).restore(p2).assert_consumed()
    assert all_ranks((w.local == -1).all())
    assert hpckpt.latest_checkpoint(shared_dir) == p2


def test_async_failure_surfaces_on_next_call_everywhere(shared_dir):
    comm = MPI.COMM_WORLD
    v = model()
    ck = hpckpt.Checkpoint(v=v)
    first = ck.save(os.path.join(shared_dir, "c"))
    bad = comm.size - 1
    if comm.rank == bad:
        _faults.inject("after_data", bad, "raise")
    try:
        ck.save(os.path.join(shared_dir, "c"), options=ASYNC)  # returns at once
        msg = None
        try:
            ck.sync()
        except hpckpt.CheckpointError as e:
            msg = str(e)
    finally:
        _faults.clear()
    assert all_ranks(msg is not None and f"rank {bad}: RuntimeError: injected fault" in msg)
    assert len(set(comm.allgather(msg))) == 1
    assert all_ranks(int(ck.save_counter.local) == 1)  # rolled back
    assert hpckpt.latest_checkpoint(shared_dir) == first
    assert ck.save(os.path.join(shared_dir, "c")).endswith("c-2")


def test_memory_budget_falls_back_to_synchronous(shared_dir):
    v = model()
    ck = hpckpt.Checkpoint(v=v)
    opts = hpckpt.CheckpointOptions(enable_async=True, async_memory_budget=8)
    p = ck.write(os.path.join(shared_dir, "b"), options=opts)
    # synchronous: committed on return, before any sync()
    assert all_ranks(os.path.exists(p + ".index.json"))
    # and no background writer was started for it
    assert all_ranks(not any(t.name == "hpckpt-async-save" for t in threading.enumerate()))
