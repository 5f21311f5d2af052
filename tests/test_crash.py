"""Crash consistency with real process death (SIGKILL) at every phase of a save,
hangs bounded by the timeout, and a reader running while a writer commits.

Each case runs real mpirun jobs with an outer time limit: the job that dies must
end (no hang), the next job must restore the previous checkpoint bit-identically,
and its next save must succeed and leave a clean directory.
"""

from __future__ import annotations

import os
import random
import subprocess
import time

import numpy as np
import pytest
from killing import check_acked, kill_trial
from launch import mpi_env, mpirun_cmd, run_mpi

import hpckpt

PROGRAM = os.path.join(os.path.dirname(__file__), "programs", "crash.py")
ENV = mpi_env()


def mpirun(n, *args, timeout=90):
    return run_mpi(n, PROGRAM, *args, timeout=timeout)


ROOT_PHASES = {"before_commit", "after_commit", "state"}
# (phase, ranks): every phase on an odd rank count, a few on 2 and 4 as well
CASES = [
    (p, 3)
    for p in [
        "plan",
        "create",
        "before_data",
        "mid_data",
        "after_data",
        "before_commit",
        "after_commit",
        "state",
    ]
]
CASES += [("mid_data", 2), ("after_commit", 2), ("after_data", 4), ("state", 4)]


@pytest.mark.parametrize("phase,n", CASES)
def test_sigkill_at_phase(tmp_path, phase, n):
    rank = 0 if phase in ROOT_PHASES else n - 1
    d = str(tmp_path)
    r = mpirun(n, "save", d, phase, str(rank), "kill")
    assert r.returncode != 0 and "SURVIVED" not in r.stdout, r.stdout + r.stderr
    # what the state file says after the crash
    expect = "ckpt-2" if phase == "state" else "ckpt-1"
    assert os.path.basename(hpckpt.latest_checkpoint(d)) == expect
    r = mpirun(n, "check", d)
    assert r.returncode == 0, r.stdout + r.stderr
    counter = 2 if phase == "state" else 1
    assert f"RESTORED-OK counter={counter} latest={expect}" in r.stdout, r.stdout + r.stderr
    assert "CLEAN-OK" in r.stdout, r.stdout


def test_os_exit_mid_data_on_rank_zero(tmp_path):
    d = str(tmp_path)
    r = mpirun(3, "save", d, "mid_data", "0", "exit")
    assert r.returncode != 0 and "SURVIVED" not in r.stdout
    r = mpirun(2, "check", d)  # resume on another rank count too
    assert "RESTORED-OK counter=1 latest=ckpt-1" in r.stdout, r.stdout + r.stderr
    assert "CLEAN-OK" in r.stdout, r.stdout


@pytest.mark.parametrize("n", [2, 3])
def test_hang_is_bounded_by_timeout_and_named(tmp_path, n):
    t0 = time.monotonic()
    r = mpirun(n, "hang", str(tmp_path), timeout=60)
    elapsed = time.monotonic() - t0
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("AGREED")]
    assert len(lines) == n - 1, r.stdout + r.stderr
    assert all(f"rank(s) [{n - 1}] did not arrive" in ln for ln in lines), lines
    assert elapsed < 45


def test_reader_never_sees_a_half_written_checkpoint(tmp_path):
    d = str(tmp_path)
    writer = subprocess.Popen(
        mpirun_cmd(2, PROGRAM, "writer", d, "25"),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen, errors = set(), []
    try:
        while writer.poll() is None:
            time.sleep(0.01)  # leave the writer's two ranks the machine's cores
            latest = hpckpt.latest_checkpoint(d)
            if latest is None:
                continue
            try:
                reader = hpckpt.load_checkpoint(latest)
                k = int(os.path.basename(latest).split("-")[1])
                w = reader.get_tensor("w/.ATTRIBUTES/VARIABLE_VALUE")
                if not np.array_equal(w, (np.arange(66.0).reshape(11, 6) + 1) * k):
                    errors.append(f"wrong values in {latest}")
                seen.add(k)
            except Exception as e:
                errors.append(f"{latest}: {type(e).__name__}: {e}")
        out = writer.communicate(timeout=60)[0]
    finally:
        if writer.poll() is None:
            writer.kill()
    assert "WRITER-DONE" in out, out
    assert not errors, errors[:5]
    assert len(seen) >= 2


def test_sigkill_at_random_moments_of_a_training_job(tmp_path):
    """SIGKILL of one rank or of every rank at random moments of a loop of saves
    (synchronous and asynchronous), on 2, 3 and 4 ranks, resuming each time in the same
    directory: the last acknowledged checkpoint always loads with its values, and so does
    the latest; every resume finds correct values (the next trial checks it)."""
    d = str(tmp_path / "run")
    rng = random.Random(11)
    plan = [(2, False), (3, True), (4, False)]
    for i, (n, kill_all) in enumerate(plan):
        trial = kill_trial(d, n, seed=100 + i, kill_all=kill_all, delay=rng.uniform(0.5, 3.0))
        assert trial.ended, trial.output[-2000:]
        assert trial.resumed_ok, trial.output[-2000:]
        check_acked(d)
    # a last job resumes (checks the values), saves, and is killed
    assert kill_trial(d, 2, seed=1, kill_all=True, delay=0.5).resumed_ok
