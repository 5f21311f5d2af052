"""SIGKILL at random moments of a training job's saves (tests/test_crash.py, benchmarks/soak.py).

A trial runs ``tests/programs/crash.py train DIR SEED`` on N ranks: the job resumes from
DIR's latest checkpoint (and checks its values), then saves in a loop (synchronous and
asynchronous saves at random), appending ``K PATH`` to ``DIR/acks`` each time a save is
acknowledged (``save()`` returned; for an asynchronous save, ``sync()`` returned). After a
random delay, one rank or every rank is killed with SIGKILL. Then :func:`check_acked`
checks that the last acknowledged checkpoint, and the latest one, load with exactly the
values of their step.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass

import numpy as np
from launch import mpi_env, mpirun_cmd

import hpckpt

PROGRAM = os.path.join(os.path.dirname(__file__), "programs", "crash.py")

__all__ = ["Trial", "big_values", "check_acked", "kill_trial"]


def big_values(k: int) -> dict[str, np.ndarray]:
    """The values the training program saves at step ``k`` (as in programs/crash.py)."""
    return {
        "w": (np.arange(256 * 512, dtype=np.float64).reshape(256, 512) + 1) * k,
        "b": (np.arange(1000, dtype=np.int32) + 3) * k,
    }


@dataclass
class Trial:
    """What one trial did and saw."""

    ranks: int
    killed: list[int]
    delay: float
    resumed_ok: bool
    ended: bool
    output: str


def kill_trial(d: str, n: int, seed: int, *, kill_all: bool, delay: float) -> Trial:
    """Run the training job on ``n`` ranks, SIGKILL one rank (chosen by ``seed``) or all
    ranks ``delay`` seconds after every rank runs, and wait for the job to end."""
    os.makedirs(d, exist_ok=True)
    for r in range(8):
        if os.path.exists(os.path.join(d, f"pid-{r}")):
            os.remove(os.path.join(d, f"pid-{r}"))
    job = subprocess.Popen(
        mpirun_cmd(n, PROGRAM, "train", d, str(seed)),
        env=mpi_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pids: list[int] = []
    killed: list[int] = []
    try:
        end = time.monotonic() + 120
        while len(pids) < n and job.poll() is None and time.monotonic() < end:
            files = [os.path.join(d, f"pid-{r}") for r in range(n)]
            if all(os.path.exists(f) for f in files):
                pids = [int(open(f).read()) for f in files]
            else:
                time.sleep(0.01)
        if len(pids) == n:
            time.sleep(delay)
            killed = list(range(n)) if kill_all else [random.Random(seed).randrange(n)]
            for r in killed:
                try:
                    os.kill(pids[r], signal.SIGKILL)
                except ProcessLookupError:
                    pass
        out = job.communicate(timeout=120)[0]
        ended = True
    except subprocess.TimeoutExpired:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        job.kill()
        out = job.communicate()[0]
        ended = False
    return Trial(n, killed, delay, "RESUMED-OK" in out, ended, out)


def _holds(path: str, k: int) -> bool:
    reader = hpckpt.load_checkpoint(path)
    return all(
        np.array_equal(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE"), want)
        for name, want in big_values(k).items()
    )


def check_acked(d: str) -> tuple[int, str] | None:
    """Check DIR after a kill: the last acknowledged checkpoint loads with the values of its
    step, and so does the latest checkpoint, which is at least as recent.

    Returns:
        The last acknowledged ``(step, path)``, or ``None`` if nothing was acknowledged.

    Raises:
        AssertionError: A check failed.
    """
    acks_path = os.path.join(d, "acks")
    lines = open(acks_path).read().split("\n") if os.path.exists(acks_path) else []
    complete = [ln for ln in lines if ln.strip()]
    if not complete:
        return None
    k_text, path = complete[-1].split(" ", 1)
    k = int(k_text)
    assert _holds(path, k), f"acknowledged checkpoint {path} (step {k}) does not hold its values"
    latest = hpckpt.latest_checkpoint(d)
    assert latest is not None, "no latest checkpoint after an acknowledged save"
    n = int(latest.rsplit("-", 1)[1])
    assert n >= k, f"latest {latest} is older than the acknowledged step {k}"
    assert _holds(latest, n), f"latest checkpoint {latest} does not hold its values"
    return k, path
