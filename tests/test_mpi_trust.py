"""Issue 11 ("Trust") cases that run inside an MPI job (2, 3 and 4 ranks).

* ``restore_in_place=False`` is all or nothing, Python states included (item 5);
* ranks that pass different checkpoint paths fail at once, before any collective file
  open, and leave no data file behind (item 6);
* a restore running while ``write(P)`` overwrites ``P`` (item 10) is in test_overwrite.py.
"""

from __future__ import annotations

import base64
import json
import os

import numpy as np
import pytest
from conftest import Agreed, all_ranks
from mpi4py import MPI

import hpckpt
from hpckpt.io.checksum import checksum

pytestmark = pytest.mark.mpi(min_size=2)

NOT_IN_PLACE = hpckpt.CheckpointOptions(restore_in_place=False)


class Note(hpckpt.PythonState):
    """A Python state; ``fail_on`` makes deserialize raise on that rank."""

    def __init__(self, value: str, fail_on: int | None = None) -> None:
        super().__init__()
        self.value = value
        self.fail_on = fail_on

    def serialize(self) -> str:
        return self.value

    def deserialize(self, s: str) -> None:
        self.value = s  # changed before failing: the rollback must undo it
        if MPI.COMM_WORLD.rank == self.fail_on:
            raise ValueError(f"cannot take {s!r}")


def model(k: float, note: str = "n", fail_on: int | None = None):
    comm = MPI.COMM_WORLD
    mesh = hpckpt.create_mesh([("x", comm.size)])
    w = hpckpt.Variable(
        np.arange(10 * 3, dtype=np.float64).reshape(10, 3) + k,
        hpckpt.Layout(["x", hpckpt.UNSHARDED], mesh),
    )
    b = hpckpt.Variable(np.full(5, k), hpckpt.Layout.replicated(mesh, 1))
    first, second = Note(note + "-1", fail_on), Note(note + "-2")
    return {"w": w, "b": b, "first": first, "second": second}


def snapshot(vs):
    return (
        vs["w"].local.copy(),
        vs["b"].local.copy(),
        vs["first"].value,
        vs["second"].value,
    )


def unchanged(vs, before) -> bool:
    now = snapshot(vs)
    return (
        np.array_equal(now[0], before[0])
        and np.array_equal(now[1], before[1])
        and now[2:] == before[2:]
    )


def test_not_in_place_deserialize_failing_on_one_rank_changes_nothing(shared_dir):
    comm = MPI.COMM_WORLD
    p = hpckpt.Checkpoint(**model(1.0, "saved")).write(os.path.join(shared_dir, "c"))
    bad = comm.size - 1
    vs = model(7.0, "live", fail_on=bad)
    before = snapshot(vs)
    msg = None
    try:
        hpckpt.Checkpoint(**vs).read(p, options=NOT_IN_PLACE)
    except hpckpt.CheckpointError as e:
        msg = str(e)
    assert all_ranks(msg is not None and f"rank {bad}: ValueError: cannot take" in (msg or ""))
    # every variable and every Python state as before, on every rank
    assert all_ranks(unchanged(vs, before))
    # and the same restore without the failure works
    good = model(7.0, "live")
    hpckpt.Checkpoint(**good).read(p, options=NOT_IN_PLACE).assert_consumed()
    assert all_ranks(good["first"].value == "saved-1" and good["b"].local[0] == 1.0)


def _corrupt_state_text(prefix: str, key: str, new: bytes) -> None:
    """Replace a Python state's bytes (same length) and give them a valid checksum: the
    bytes are intact as far as the checksum goes, but they are not UTF-8 text."""
    index = prefix + ".index.json"
    with open(index) as f:
        doc = json.load(f)
    entry = doc["tensors"][key]
    assert entry["shape"] == [len(new)]
    data = os.path.join(os.path.dirname(prefix), doc["data_file"]["name"])
    with open(data, "r+b") as f:
        f.seek(entry["offset"])
        f.write(new)
    crc = checksum(np.frombuffer(new, dtype=np.uint8))
    entry["checksums"] = base64.b64encode(np.array([crc], dtype="<u4").tobytes()).decode()
    with open(index, "w") as f:
        json.dump(doc, f)


@pytest.mark.parametrize("in_place", [False, True])
def test_non_utf8_state_is_a_damaged_checkpoint(shared_dir, in_place):
    comm = MPI.COMM_WORLD
    p = hpckpt.Checkpoint(**model(1.0, "saved")).write(os.path.join(shared_dir, "u"))
    with Agreed():  # (a failure here on rank 0 must not leave the others waiting)
        if comm.rank == 0:
            _corrupt_state_text(p, "first/.ATTRIBUTES/py_state", b"\xff\xfe\xfa\x80\x81\x82\x83")
    vs = model(7.0, "live")
    before = snapshot(vs)
    with Agreed():
        with pytest.raises(hpckpt.CorruptCheckpointError, match="not UTF-8"):
            hpckpt.Checkpoint(**vs).read(
                p, options=hpckpt.CheckpointOptions(restore_in_place=in_place)
            )
        # the states are untouched; with restore_in_place=False the variables too
        assert vs["first"].value == "live-1" and vs["second"].value == "live-2"
        if not in_place:
            assert unchanged(vs, before)


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_ranks_passing_different_paths_fail_before_opening_a_file(shared_dir, timeout):
    comm = MPI.COMM_WORLD
    vs = model(2.0)
    ck = hpckpt.Checkpoint(**vs)
    mgr = hpckpt.CheckpointManager(ck, shared_dir, max_to_keep=None)
    opts = hpckpt.CheckpointOptions(timeout=timeout)
    msg = None
    try:
        mgr.save(checkpoint_number=10 + comm.rank, options=opts)
    except hpckpt.CheckpointError as e:
        msg = str(e)
    assert all_ranks(msg is not None and "different checkpoint paths" in (msg or ""))
    assert len(set(comm.allgather(msg))) == 1
    comm.Barrier()
    # nothing was created: no data file, no index
    names = os.listdir(shared_dir)
    assert all_ranks(not any(".data-" in n or n.endswith(".index.json") for n in names))
    # the same for a restore of different paths
    p1 = ck.write(os.path.join(shared_dir, "a"))
    p2 = ck.write(os.path.join(shared_dir, "b"))
    with Agreed():
        with pytest.raises(hpckpt.CheckpointError, match="different checkpoint paths"):
            hpckpt.Checkpoint(**model(0.0)).read(p1 if comm.rank == 0 else p2, options=opts)
    # and the manager still saves afterwards
    assert mgr.save(options=opts).endswith("ckpt-1")


@pytest.mark.parametrize("timeout", [None, 5.0])
def test_a_fifo_never_hangs_a_collective_reader_or_the_manager(shared_dir, timeout):
    comm = MPI.COMM_WORLD
    opts = hpckpt.CheckpointOptions(timeout=timeout)
    vs = model(3.0)
    ck = hpckpt.Checkpoint(**vs)
    mgr = hpckpt.CheckpointManager(ck, shared_dir, max_to_keep=None)
    p = mgr.save(options=opts)
    mgr.close()

    def fifo(name: str) -> None:
        comm.Barrier()
        if comm.rank == 0:
            path = os.path.join(shared_dir, name)
            if os.path.exists(path):
                os.rename(path, path + ".away")
            os.mkfifo(path)
        comm.Barrier()

    def restore(name: str) -> None:
        comm.Barrier()
        if comm.rank == 0:
            path = os.path.join(shared_dir, name)
            os.remove(path)
            if os.path.exists(path + ".away"):
                os.rename(path + ".away", path)
        comm.Barrier()

    fifo("ckpt-1.index.json")
    with Agreed():
        with pytest.raises(hpckpt.CorruptCheckpointError, match="not a regular file"):
            hpckpt.Checkpoint(**model(0.0)).restore(p, options=opts)
    restore("ckpt-1.index.json")
    fifo("checkpoint")  # the state file
    with Agreed():
        with pytest.raises(hpckpt.CorruptCheckpointError, match="not a regular file"):
            hpckpt.CheckpointManager(ck, shared_dir, max_to_keep=None)
        with pytest.raises(hpckpt.CorruptCheckpointError, match="not a regular file"):
            hpckpt.latest_checkpoint(shared_dir)
    restore("checkpoint")
    fifo(".hpckpt.lock")  # the lease
    mgr = hpckpt.CheckpointManager(ck, shared_dir, max_to_keep=None)
    with Agreed():
        with pytest.raises(hpckpt.CorruptCheckpointError, match=r"lease file .* not a regular"):
            mgr.save(options=opts)
    restore(".hpckpt.lock")
    assert mgr.save(options=opts).endswith("ckpt-2")
    mgr.close()
