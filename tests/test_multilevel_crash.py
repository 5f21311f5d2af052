"""Multi-level checkpointing survives real process death (issue 16).

Real mpirun jobs on emulated nodes (4 ranks as 2 nodes, 3 ranks as 3 nodes) are
SIGKILLed during a local save (while the partner copy streams, before any marker
is written, after one node's marker) and during a background flush to the parallel
file system. The next job must restore the newest complete checkpoint
bit-identically, from the local tier, or from the parallel file system when the
local directories are gone or the job has another rank count; and its own next
save must leave no leftovers.
"""

from __future__ import annotations

import glob
import os
import shutil

import pytest
from launch import run_mpi

PROGRAM = os.path.join(os.path.dirname(__file__), "programs", "multilevel.py")
LAYOUTS = {4: "2", 3: "1", 2: "1"}  # ranks -> HPCKPT_RANKS_PER_NODE (2, 3 and 2 nodes)


def job(n: int, *args: str, timeout: float = 120):
    return run_mpi(n, PROGRAM, *args, timeout=timeout, env={"HPCKPT_RANKS_PER_NODE": LAYOUTS[n]})


def check(n: int, d: str, k: int, tier: str) -> None:
    r = job(n, "check", d)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert f"RESTORED-OK k={k} tier={tier}" in r.stdout, out
    assert "CLEAN-OK" in r.stdout, out


# (ranks, phase, rank that dies, the checkpoint restored afterwards)
LOCAL_CASES = [
    (4, "partner", 3, 2),  # while node 1 streams its partner copy: save 3 incomplete
    (3, "local_commit", 0, 2),  # every byte durable, no marker yet: save 3 not committed
    (4, "local_marker", 2, 3),  # node 1's marker written: save 3 is complete
]


@pytest.mark.parametrize("n,phase,rank,expect", LOCAL_CASES)
def test_sigkill_during_a_local_save(tmp_path, n, phase, rank, expect):
    d = str(tmp_path)
    r = job(n, "save", d, "3", phase, str(rank), "kill")
    assert r.returncode != 0 and "SURVIVED" not in r.stdout, r.stdout + r.stderr
    check(n, d, expect, "local")


@pytest.mark.parametrize("n,other", [(4, 3), (3, 2)])
def test_sigkill_during_a_background_flush(tmp_path, n, other):
    d = str(tmp_path)
    # saves 1..4; save 4's flush to the parallel file system is killed mid-data
    r = job(n, "save", d, "4", "mid_data", str(n - 1), "kill")
    assert r.returncode != 0 and "SURVIVED" not in r.stdout, r.stdout + r.stderr
    assert not os.path.exists(os.path.join(d, "pfs", "ckpt-4.index.json"))
    snapshot = str(tmp_path / "snapshot")
    shutil.copytree(d, snapshot)
    # the newest complete checkpoint is save 4, in the local tier
    check(n, d, 4, "local")
    # another rank count cannot use the local tier: the newest persisted save
    d2 = str(tmp_path / "other")
    shutil.copytree(snapshot, d2)
    check(other, d2, 2, "pfs")
    # the job's nodes are gone: the newest persisted save
    for p in glob.glob(os.path.join(snapshot, "local-*")):
        shutil.rmtree(p)
    check(n, snapshot, 2, "pfs")


def test_a_flush_still_running_at_exit_is_finished_or_its_error_printed(tmp_path):
    d = str(tmp_path / "ok")
    r = job(2, "exit", d)
    assert r.returncode == 0 and r.stdout.count("EXITING") == 2, r.stdout + r.stderr
    assert os.path.exists(os.path.join(d, "pfs", "ckpt-1.index.json")), r.stderr
    d = str(tmp_path / "fail")
    r = job(2, "exit", d, "fail")
    assert r.stdout.count("EXITING") == 2, r.stdout + r.stderr
    msg = "failed and no save() or sync() collected the error"
    assert r.stderr.count(msg) == 2 and "injected fault at after_data on rank 1" in r.stderr
    assert not os.path.exists(os.path.join(d, "pfs", "ckpt-1.index.json"))
