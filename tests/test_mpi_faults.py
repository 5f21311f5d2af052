"""Injected failures on one rank: the same CheckpointError on every rank, nothing lost.

Faults that let the rank survive (``raise``) are tested here, in-process, on every
phase of a save and a restore; crashes (SIGKILL) and hangs are in test_crash.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

import numpy as np
import pytest
from conftest import Agreed, all_ranks
from mpi4py import MPI

import hpckpt
from hpckpt import Layout, _faults
from hpckpt.io import wait_removals

pytestmark = pytest.mark.mpi(min_size=2)

# "state" (rank 0 dies after writing the state file) is a crash-only phase: test_crash.py.
SAVE_PHASES = [
    "plan",
    "create",
    "before_data",
    "mid_data",
    "after_data",
    "before_commit",
    "after_commit",
]


def model(seed):
    mesh = hpckpt.create_mesh([("x", MPI.COMM_WORLD.size)])
    rng = np.random.default_rng(seed)
    return {
        "w": hpckpt.Variable(rng.standard_normal((9, 5)), Layout(["x", "unsharded"], mesh)),
        "b": hpckpt.Variable(rng.integers(0, 9, 7).astype(np.int32), Layout(["x"], mesh)),
    }


def values(vs):
    return {k: v.numpy() for k, v in vs.items()}


def files(d):
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        wait_removals()  # rank 0 deletes old data files in the background
    return comm.bcast(sorted(os.listdir(d)) if comm.rank == 0 else None)


def failing_rank(phase):
    size = MPI.COMM_WORLD.size
    return 0 if phase in ("before_commit", "after_commit", "create") else size - 1


@pytest.fixture(autouse=True)
def _disarm():
    yield
    _faults.clear()


@pytest.mark.parametrize("phase", SAVE_PHASES)
def test_raise_during_manager_save(shared_dir, phase):
    comm = MPI.COMM_WORLD
    vs = model(1)
    ckpt = hpckpt.Checkpoint(**vs)
    mgr = hpckpt.CheckpointManager(ckpt, shared_dir, max_to_keep=2)
    first = mgr.save()
    good = values(vs)
    for v in vs.values():
        v.local[...] += 1
    bad = failing_rank(phase)
    if comm.rank == bad:
        _faults.inject(phase, bad, "raise")
    msg = None
    try:
        mgr.save()
    except hpckpt.CheckpointError as e:
        msg = str(e)
        assert [f.rank for f in e.failures] == [bad], e.failures
    _faults.clear()
    assert all_ranks(
        msg is not None and f"rank {bad}: RuntimeError: injected fault at {phase}" in msg
    )
    assert len(set(comm.allgather(msg))) == 1  # the same error everywhere

    # The previous checkpoint restores bit-identically (the state file still names it).
    assert hpckpt.latest_checkpoint(shared_dir) == first
    fresh = model(99)
    hpckpt.Checkpoint(**fresh).restore(first).assert_consumed()
    with Agreed():
        for k, want in good.items():
            assert np.array_equal(fresh[k].numpy(), want), k

    # The next save succeeds and leaves no leftovers (nor the lease, once closed).
    again = mgr.save()
    mgr.close()
    names = files(shared_dir)
    with Agreed():
        assert hpckpt.latest_checkpoint(shared_dir) == again
        assert not [n for n in names if ".tmp-" in n], names
        for prefix in {n.split(".")[0] for n in names if n.startswith("ckpt-")}:
            data = [n for n in names if n.startswith(prefix + ".data-")]
            assert len(data) == 1 and prefix + ".index.json" in names, names
        assert ".hpckpt.lock" not in names


@pytest.mark.parametrize("phase", ["read_index", "read_data"])
def test_raise_during_restore_changes_nothing(shared_dir, phase):
    comm = MPI.COMM_WORLD
    vs = model(2)
    p = hpckpt.Checkpoint(**vs).write(os.path.join(shared_dir, "r"))
    fresh = model(3)
    before = values(fresh)
    bad = comm.size - 1
    if comm.rank == bad:
        _faults.inject(phase, bad, "raise")
    with pytest.raises(hpckpt.CheckpointError, match=f"rank {bad}: RuntimeError"):
        hpckpt.Checkpoint(**fresh).read(p)
    _faults.clear()
    assert all_ranks(all(np.array_equal(fresh[k].numpy(), before[k]) for k in before))


def test_raise_in_deferred_restore(shared_dir):
    comm = MPI.COMM_WORLD
    vs = model(4)
    p = hpckpt.Checkpoint(net=hpckpt.Module(), **vs).write(os.path.join(shared_dir, "d"))
    ck = hpckpt.Checkpoint()
    ck.read(p).expect_partial()
    bad = comm.size - 1
    if comm.rank == bad:
        _faults.inject("read_data", bad, "raise")
    w = model(5)["w"]
    with pytest.raises(hpckpt.CheckpointError, match=f"rank {bad}"):
        ck.w = w  # restore-on-create is collective and agreed too


def test_user_state_raising_on_one_rank(shared_dir):
    comm = MPI.COMM_WORLD

    class Bad(hpckpt.PythonState):
        def serialize(self):
            if comm.rank == 1:
                raise ValueError("iterator lost its place")
            return "x"

        def deserialize(self, s):
            pass

    with pytest.raises(hpckpt.CheckpointError, match="rank 1: ValueError: iterator lost its place"):
        hpckpt.CheckpointManager(hpckpt.Checkpoint(it=Bad()), shared_dir, max_to_keep=1).save()


def test_timeout_names_the_rank_that_did_not_arrive(shared_dir):
    """A rank that is late past the timeout is named by every rank that waited."""
    comm = MPI.COMM_WORLD
    late = comm.size - 1
    vs = model(6)
    opts = hpckpt.CheckpointOptions(timeout=1.0)
    if comm.rank == late:
        _faults.inject("plan", late, "hang", "3")
    msg = None
    try:
        hpckpt.Checkpoint(**vs).write(os.path.join(shared_dir, "t"), options=opts)
    except hpckpt.CheckpointError as e:
        msg = str(e)
    _faults.clear()
    # every rank, the late one included (it finds rank 0's verdict when it arrives)
    assert msg is not None and f"rank(s) [{late}] did not arrive" in msg, msg
    assert len(set(comm.allgather(msg))) == 1


def test_manager_refuses_a_directory_locked_by_another_job(shared_dir):
    comm = MPI.COMM_WORLD
    vs = model(7)
    mgr = hpckpt.CheckpointManager(hpckpt.Checkpoint(**vs), shared_dir, max_to_keep=3)
    first = mgr.save()
    if comm.rank == 0:
        with open(os.path.join(shared_dir, ".hpckpt.lock"), "w") as f:
            holder = {"host": "other-node-17", "pid": 4242, "job_id": "998877", "time": time.time()}
            f.write(json.dumps(holder))
    comm.Barrier()
    with pytest.raises(hpckpt.CheckpointError, match="job id 998877, host other-node-17"):
        mgr.save()
    assert hpckpt.latest_checkpoint(shared_dir) == first
    # a stale lock (dead process on this host) is taken over
    if comm.rank == 0:
        with open(os.path.join(shared_dir, ".hpckpt.lock"), "w") as f:
            f.write(
                f'{{"host": "{socket.gethostname()}", "pid": 999999999, "job_id": null, "time": 0}}'
            )
    comm.Barrier()
    assert mgr.save().endswith("ckpt-2")


def test_hdf5_file_locking_can_be_turned_off(shared_dir, monkeypatch):
    """HDF5_USE_FILE_LOCKING=FALSE is honoured wherever HDF5 opens a data file. With an
    exclusive lock held on it by someone else (as on a parallel file system whose locks
    misbehave), a restore that reads through HDF5 (``io="hdf5"``: every dataset is
    checked with HDF5 first) fails cleanly on every rank with locking on and restores
    with it off; a restore that reads raw bytes from a file whose structure checksum
    matches never opens it with HDF5, and restores either way."""
    comm = MPI.COMM_WORLD
    vs = model(8)
    p = hpckpt.Checkpoint(**vs).write(os.path.join(shared_dir, "l"))
    data = [n for n in os.listdir(shared_dir) if n.startswith("l.data-")]
    via_hdf5 = hpckpt.CheckpointOptions(io="hdf5")
    # HDF5 reads HDF5_USE_FILE_LOCKING once, at a process's first file open, and then
    # it overrides the per-open setting that hpckpt passes: open the file with HDF5 on
    # every rank before the variable changes (a job sets it before it starts).
    hpckpt.Checkpoint(**model(1)).read(p, options=via_hdf5).assert_consumed()
    fd = os.open(os.path.join(shared_dir, data[0]), os.O_RDONLY)
    try:
        if comm.rank == 0:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # one node: every rank conflicts
        comm.Barrier()
        monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "TRUE")
        with pytest.raises(hpckpt.CheckpointError, match=r"HDF5|lock"):
            hpckpt.Checkpoint(**model(0)).read(p, options=via_hdf5)
        raw = model(7)
        hpckpt.Checkpoint(**raw).read(p).assert_consumed()
        monkeypatch.setenv("HDF5_USE_FILE_LOCKING", "FALSE")
        fresh = model(9)
        hpckpt.Checkpoint(**fresh).read(p, options=via_hdf5).assert_consumed()
        assert all_ranks(
            np.array_equal(fresh["w"].numpy(), vs["w"].numpy())
            and np.array_equal(raw["w"].numpy(), vs["w"].numpy())
        )
    finally:
        comm.Barrier()
        os.close(fd)
