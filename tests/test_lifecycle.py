"""A job's life around its saves, with real mpirun jobs, real signals and real exits.

* an asynchronous save followed by the end of the program is completed before the
  interpreter exits, or its error is printed by every rank and the exit status is
  non-zero (issue 11, item 2);
* ``sync()`` waits for the background removal of dropped checkpoints (item 2);
* a signal whose handler raises (``sys.exit`` in a SIGTERM handler) on one rank in the
  middle of a save or a restore is agreed on: that rank raises ``SystemExit``, the
  others ``CheckpointError``; the job ends, the previous checkpoint is intact (item 8);
* SIGTERM to every rank at a random moment of a loop of saves: the job ends, and the
  last checkpoint the job acknowledged loads with its values (item 8).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time

import numpy as np
import pytest
from launch import mpi_env, mpirun_cmd, run_mpi

import hpckpt

PROGRAM = os.path.join(os.path.dirname(__file__), "programs", "lifecycle.py")


def values(k):
    return {
        "w": (np.arange(64 * 33, dtype=np.float64).reshape(64, 33) + 1) * k,
        "b": (np.arange(7, dtype=np.int32) + 3) * k,
    }


def assert_holds(path, k):
    """``path`` loads (checksums verified) and holds the values of step ``k``."""
    reader = hpckpt.load_checkpoint(path)
    for name, want in values(k).items():
        got = reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE")
        assert np.array_equal(got, want), (path, name)


def test_async_save_then_exit_without_sync_is_on_disk(tmp_path):
    d = str(tmp_path)
    r = run_mpi(2, PROGRAM, "async-exit", d, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    returned = set(re.findall(r"RETURNED rank=\d (\S+)", r.stdout))
    assert returned == {os.path.join(d, "ckpt-2")}, r.stdout
    assert hpckpt.latest_checkpoint(d) == os.path.join(d, "ckpt-2")
    assert_holds(os.path.join(d, "ckpt-2"), 2)
    assert ".hpckpt.lock" not in os.listdir(d)  # the lease went at exit


def test_async_failure_at_exit_is_printed_by_every_rank(tmp_path):
    d, n = str(tmp_path), 3
    r = run_mpi(n, PROGRAM, "async-fail", d, timeout=120)
    assert r.returncode != 0, r.stdout + r.stderr
    for rank in range(n):
        assert re.search(
            rf"hpckpt: rank {rank}: the asynchronous save of '.*ckpt-2' did not complete.*"
            rf"rank {n - 1}: RuntimeError: injected fault",
            r.stderr,
        ), r.stderr
    assert hpckpt.latest_checkpoint(d) == os.path.join(d, "ckpt-1")
    assert_holds(os.path.join(d, "ckpt-1"), 1)


def test_sync_waits_for_the_removal_of_dropped_checkpoints(tmp_path):
    d = str(tmp_path)
    r = run_mpi(2, PROGRAM, "sync-removals", d, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    files = re.search(r"FILES (.*)", r.stdout).group(1).split()
    data = [f for f in files if ".data-" in f]
    assert [f for f in files if f.endswith(".index.json")] == ["ckpt-3.index.json"], files
    assert len(data) == 1 and data[0].startswith("ckpt-3.data-"), files


# (operation, fault phase where the signal arrives, rank): a few points of a save and a restore
SIGNAL_CASES = [
    ("save", "plan", 2),
    ("save", "mid_data", 1),
    ("save", "before_commit", 0),
    ("save", "after_commit", 0),
    ("restore", "read_data", 1),
]


@pytest.mark.parametrize("op,phase,rank", SIGNAL_CASES)
def test_sigterm_handler_exiting_on_one_rank_is_agreed(tmp_path, op, phase, rank):
    d, n = str(tmp_path), 3
    r = run_mpi(n, PROGRAM, "interrupt", d, op, phase, str(rank), timeout=90)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "TRUNCATE" not in out and "NO-ERROR" not in out, out
    assert f"SYSTEMEXIT rank={rank}" in r.stdout, out
    agreed = re.findall(r"AGREED rank=(\d) untouched=(\w+) \[\[(.*?)\]\]", r.stdout, re.S)
    assert sorted(int(a[0]) for a in agreed) == sorted(set(range(n)) - {rank}), out
    assert all(a[1] == "True" and f"rank {rank}: SystemExit" in a[2] for a in agreed), agreed
    # the previous checkpoint is intact and still the latest
    assert hpckpt.latest_checkpoint(d) == os.path.join(d, "ckpt-1")
    assert_holds(os.path.join(d, "ckpt-1"), 1)


def test_a_signal_whose_agreement_never_comes_ends_the_job(tmp_path):
    """A SIGTERM during a save whose handler raises at the save's agreement, while the
    other ranks have left (they exited outside any operation): the rank does not wait for
    them forever. After the grace it ends the job with the handler's status, naming the
    signal. (It hung before: the handler had run, so no signal was pending any more, and
    only pending signals had a way out. The random-moment test below hit it rarely: once in
    about 210 trials on an idle machine, once in 16 with its cores loaded.)"""
    started = time.monotonic()
    r = run_mpi(
        3, PROGRAM, "signal-alone", str(tmp_path), timeout=90, env={"HPCKPT_SIGNAL_GRACE": "2"}
    )
    out = r.stdout + r.stderr
    assert time.monotonic() - started < 90
    assert "RETURNED" not in r.stdout, out  # rank 0's save cannot have completed
    assert "signal SIGTERM arrived during a checkpoint operation" in out, out
    assert "did not come to agree on it within 2.0 s" in out, out
    assert "EXITING rank=1" in r.stdout and "EXITING rank=2" in r.stdout, out
    assert not os.path.exists(os.path.join(str(tmp_path), "p.index.json"))


@pytest.mark.parametrize("seed", [3, 4])
def test_sigterm_to_every_rank_at_a_random_moment(tmp_path, seed):
    """Like Slurm ending a job: every rank's SIGTERM handler calls sys.exit(0), at a random
    moment of a loop of saves (synchronous and asynchronous)."""
    d, n = str(tmp_path), 3
    env = mpi_env({"HPCKPT_SIGNAL_GRACE": "3"})
    job = subprocess.Popen(
        mpirun_cmd(n, PROGRAM, "sigterm-loop", d),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids = []
    try:
        end = time.monotonic() + 60
        while len(pids) < n and time.monotonic() < end and job.poll() is None:
            pids = [
                int(open(os.path.join(d, f"pid-{r}")).read())
                for r in range(n)
                if os.path.exists(os.path.join(d, f"pid-{r}"))
            ]
            time.sleep(0.01)
        assert len(pids) == n, job.communicate(timeout=30)[0]
        time.sleep(random.Random(seed).uniform(0.1, 1.5))
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        out = job.communicate(timeout=60)[0]  # the job ends
    finally:
        if job.poll() is None:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            job.kill()
            job.communicate()
    assert "TRUNCATE" not in out, out
    acked = re.findall(r"ACK (\S+) (\d+)", out)
    if acked:
        path, k = acked[-1]
        assert_holds(path, int(k))
        latest = hpckpt.latest_checkpoint(d)
        assert latest is not None and int(latest.rsplit("-", 1)[1]) >= int(k)


def test_a_second_job_is_refused_at_once_naming_the_holder(tmp_path):
    d, flag = str(tmp_path / "run"), str(tmp_path / "flag")
    holder = subprocess.Popen(
        mpirun_cmd(2, PROGRAM, "hold", d, flag),
        env=mpi_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        line = ""
        while "HOLDING rank=0" not in line and holder.poll() is None:
            line = holder.stdout.readline()
        pid = int(re.search(r"HOLDING rank=0 pid=(\d+)", line).group(1))
        # the holder is idle between two saves: the other job is refused all the same
        t0 = time.monotonic()
        r = run_mpi(2, PROGRAM, "contend", d, timeout=120)
        refused = re.findall(r"REFUSED rank=\d \[\[(.*?)\]\]", r.stdout, re.S)
        assert len(refused) == 2 and "SAVED" not in r.stdout, r.stdout + r.stderr
        assert all(f"pid {pid}, since " in m and "job id none" in m for m in refused), refused
        assert time.monotonic() - t0 < 60  # at once (no waiting for the holder)
        open(flag, "w").close()
        out = holder.communicate(timeout=120)[0]
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
    assert holder.returncode == 0 and "RELEASED rank=0" in out, out
    # the holder's checkpoints are its own, and its lease is gone
    assert_holds(os.path.join(d, "ckpt-1"), 1)
    assert_holds(os.path.join(d, "ckpt-2"), 2)
    assert not os.path.exists(os.path.join(d, "ckpt-100.index.json"))
    assert ".hpckpt.lock" not in os.listdir(d)
    r = run_mpi(2, PROGRAM, "contend", d, timeout=120)
    assert len(re.findall(r"SAVED rank=\d", r.stdout)) == 2, r.stdout + r.stderr
    assert_holds(os.path.join(d, "ckpt-100"), 9)


def test_a_garbage_index_is_validated_before_it_is_broadcast(tmp_path):
    """A 300 MiB index of garbage (sparse): rank 0 reads it (bounded) and refuses it; the
    other ranks never receive it."""
    prefix = str(tmp_path / "p")
    w, b = hpckpt.Variable(np.zeros((64, 33))), hpckpt.Variable(np.zeros(7, np.int32))
    hpckpt.Checkpoint(w=w, b=b).write(prefix)
    os.truncate(prefix + ".index.json", 300 << 20)
    n = 3
    r = run_mpi(n, PROGRAM, "restore-mem", prefix, timeout=120)
    got = re.findall(r"RESTORE rank=(\d) maxrss_kib=(\d+) \[\[(.*?)\]\]", r.stdout, re.S)
    assert len(got) == n, r.stdout + r.stderr
    for rank, kib, outcome in got:
        assert outcome.startswith("CorruptCheckpointError") and "not valid JSON" in outcome
        if rank != "0":
            assert int(kib) < 200 << 10, (rank, kib)  # it would be 300 MiB more
