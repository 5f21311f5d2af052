"""The writer lease of a checkpoint directory (issue 11, item 4), on real files and real
processes: many contenders racing to take over a dead holder's lease (exactly one wins,
every time), the rules that make a lease stale or live, a lease file that is never seen
half-written, renewal, and a FIFO in its place. The whole-job behaviour (a second job
refused at once) is in test_lifecycle.py.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from hpckpt.errors import CheckpointError, CorruptCheckpointError
from hpckpt.io import DirectoryLease

LEASE = ".hpckpt.lock"


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def write_lease(d, **fields):
    with open(os.path.join(d, LEASE), "w") as f:
        json.dump(fields, f)


def race(d: str, n: int, env: dict[str, str] | None = None) -> list[str]:
    """``n`` forked processes call ``acquire()`` at the same moment; each reports
    ``WON <pid>`` or ``REFUSED <message>``, then waits until all have reported."""
    go_r, go_w = os.pipe()
    res_r, res_w = os.pipe()
    done_r, done_w = os.pipe()
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:  # the child: no MPI, no pytest, leaves with os._exit
            code = 0
            try:
                os.close(go_w)
                os.close(done_w)
                os.environ.update(env or {})
                os.read(go_r, 1)  # everyone starts together
                try:
                    DirectoryLease(d).acquire()
                    msg = f"WON {os.getpid()}"
                except CheckpointError as e:
                    msg = f"REFUSED {e}"
                os.write(res_w, (msg.replace("\n", " ") + "\n").encode())
                os.read(done_r, 1)  # hold (a live holder) until the parent has all answers
            except BaseException:
                code = 1
            os._exit(code)
        pids.append(pid)
    os.close(go_r)
    os.close(res_w)
    os.close(done_r)
    os.write(go_w, b"x" * n)
    lines: list[str] = []
    buf = b""
    with os.fdopen(res_r, "rb") as f:
        while len(lines) < n:
            chunk = f.readline()
            if not chunk:
                break
            buf += chunk
            if buf.endswith(b"\n"):
                lines.append(buf.decode().strip())
                buf = b""
    os.write(done_w, b"x" * n)
    for p in pids:
        os.waitpid(p, 0)
    os.close(go_w)
    os.close(done_w)
    return lines


@pytest.mark.parametrize("contenders", [6, 16])
def test_many_contenders_take_over_a_dead_lease_exactly_one_wins(tmp_path, contenders):
    d = str(tmp_path)
    for _round in range(6):
        write_lease(d, host=socket.gethostname(), pid=dead_pid(), job_id=None, since=time.time())
        lines = race(d, contenders)
        won = [ln for ln in lines if ln.startswith("WON")]
        assert len(lines) == contenders, lines
        assert len(won) == 1, (_round, lines)
        winner = int(won[0].split()[1])
        # the losers were refused naming the winner, and the file names it
        assert all(f"pid {winner}," in ln for ln in lines if ln.startswith("REFUSED")), lines
        with open(os.path.join(d, LEASE)) as f:
            assert json.load(f)["pid"] == winner
        os.remove(os.path.join(d, LEASE))
        assert [n for n in os.listdir(d) if n.startswith(LEASE)] == []  # no marker left


def test_contenders_on_a_fresh_directory_exactly_one_wins(tmp_path):
    d = str(tmp_path)
    for _round in range(5):
        lines = race(d, 10)
        assert sum(ln.startswith("WON") for ln in lines) == 1, lines
        os.remove(os.path.join(d, LEASE))


def test_a_requeued_slurm_job_takes_its_own_lease_over(tmp_path):
    d = str(tmp_path)
    # a host we cannot check, but the same Slurm job id before its requeue
    write_lease(d, host="node-1", pid=1234, job_id="4242", restarts=0, since=time.time())
    env = {"SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "1"}
    lines = race(d, 6, env=env)
    assert sum(ln.startswith("WON") for ln in lines) == 1, lines
    # ... but a live process of the same incarnation (another step of the job) is a holder
    write_lease(
        d, host=socket.gethostname(), pid=os.getpid(), job_id="4242", restarts=1, since=time.time()
    )
    lines = race(d, 3, env=env)
    assert all("job id 4242" in ln for ln in lines if ln.startswith("REFUSED")), lines
    assert sum(ln.startswith("WON") for ln in lines) == 0, lines


def test_a_live_holder_is_named_and_never_shown_as_none(tmp_path):
    d = str(tmp_path)
    since = time.time() - 3600
    write_lease(d, host="other-node-17", pid=4242, job_id="998877", since=since)
    with pytest.raises(CheckpointError) as e:
        DirectoryLease(d).acquire()
    msg = str(e.value)
    assert "job id 998877, host other-node-17, pid 4242, since " in msg
    assert time.strftime("%Y-%m-%d %H:%M", time.localtime(since)) in msg
    assert "None" not in msg
    # not renewed for longer than stale_after: abandoned, taken over
    os.utime(os.path.join(d, LEASE), (time.time() - 1000, time.time() - 1000))
    lease = DirectoryLease(d, stale_after=900)
    lease.acquire()
    assert lease.held
    lease.release()
    assert not os.path.exists(os.path.join(d, LEASE))


def test_an_unreadable_lease_is_named_as_such(tmp_path):
    d = str(tmp_path)
    with open(os.path.join(d, LEASE), "w") as f:
        f.write("[" * 20000)  # a JSON nesting bomb, just written: not stale
    with pytest.raises(CheckpointError, match="unreadable lease file") as e:
        DirectoryLease(d).acquire()
    assert "None" not in str(e.value)


def test_a_fifo_in_place_of_the_lease_never_blocks(tmp_path):
    d = str(tmp_path)
    os.mkfifo(os.path.join(d, LEASE))
    t0 = time.monotonic()
    with pytest.raises(CorruptCheckpointError, match="not a regular file"):
        DirectoryLease(d).acquire()
    assert time.monotonic() - t0 < 30  # (a blocked open would never return)


def test_readers_never_see_a_half_written_lease(tmp_path):
    """A process takes and gives up the lease over and over; a reader never finds the
    file present but incomplete."""
    d = str(tmp_path)
    stop = threading.Event()
    bad: list[str] = []

    def read() -> None:
        lease = DirectoryLease(d)
        while not stop.is_set():
            h = lease.read()
            if h is not None and (not h.readable or h.pid is None):
                bad.append(repr(h))

    t = threading.Thread(target=read)
    t.start()
    try:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for _ in range(300):
                    lease = DirectoryLease(d)
                    lease.acquire()
                    lease.release()
            except BaseException:
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        stop.set()
        t.join()
    assert status == 0
    assert not bad, bad[:3]


def test_the_holder_renews_and_notices_a_takeover(tmp_path, monkeypatch):
    d = str(tmp_path)
    monkeypatch.setenv("HPCKPT_LEASE_RENEW_EVERY", "0.1")
    lease = DirectoryLease(d)
    lease.acquire()
    try:
        path = os.path.join(d, LEASE)
        os.utime(path, (time.time() - 500, time.time() - 500))
        end = time.monotonic() + 10
        while os.stat(path).st_mtime < time.time() - 100 and time.monotonic() < end:
            time.sleep(0.05)
        assert os.stat(path).st_mtime > time.time() - 100  # renewed
        lease.check()  # still ours
        # another live job took it over (say this one was stopped for too long)
        write_lease(d, host="other-node-3", pid=77, job_id="555", since=time.time(), token="f00d")
        with pytest.raises(CheckpointError, match=r"taken over by another job \(job id 555"):
            lease.check()
    finally:
        lease.release()
    assert os.path.exists(os.path.join(d, LEASE))  # not ours any more: left alone


def test_managers_of_one_process_share_the_lease(tmp_path):
    d = str(tmp_path)
    a, b = DirectoryLease(d), DirectoryLease(d)
    a.acquire()
    b.acquire()
    a.release()
    assert os.path.exists(os.path.join(d, LEASE))
    b.release()
    assert not os.path.exists(os.path.join(d, LEASE))


@pytest.mark.parametrize("marker_holder", ["dead-here", "silent-elsewhere"])
def test_a_takeover_left_half_done_by_a_dead_contender_is_taken_over(tmp_path, marker_holder):
    d = str(tmp_path)
    here = socket.gethostname()
    write_lease(d, host=here, pid=dead_pid(), job_id=None, since=time.time(), token="aaaa")
    marker = os.path.join(d, LEASE + ".takeover-aaaa")  # a contender died holding it
    if marker_holder == "dead-here":
        fields = {"host": here, "pid": dead_pid(), "token": "bbbb", "since": time.time()}
    else:
        fields = {"host": "node-9", "pid": 7, "token": "bbbb", "since": time.time() - 120}
    with open(marker, "w") as f:
        json.dump(fields, f)
    if marker_holder == "silent-elsewhere":
        os.utime(marker, (time.time() - 120, time.time() - 120))
    lines = race(d, 6)
    assert sum(ln.startswith("WON") for ln in lines) == 1, lines
    assert [n for n in os.listdir(d) if "takeover" in n] == []


def test_a_manager_gives_its_lease_up_when_closed_or_collected(tmp_path):
    import gc

    import numpy as np

    import hpckpt

    d = str(tmp_path)
    ck = hpckpt.Checkpoint(w=hpckpt.Variable(np.zeros(3)))
    with hpckpt.CheckpointManager(ck, d, max_to_keep=1) as mgr:
        mgr.save()
        assert os.path.exists(os.path.join(d, LEASE))
    assert not os.path.exists(os.path.join(d, LEASE))
    with pytest.raises(ValueError, match="closed"):
        mgr.save()
    mgr = hpckpt.CheckpointManager(ck, d, max_to_keep=1)
    mgr.save()
    assert os.path.exists(os.path.join(d, LEASE))
    del mgr
    gc.collect()
    assert not os.path.exists(os.path.join(d, LEASE))
