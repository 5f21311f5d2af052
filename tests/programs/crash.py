"""Crash-consistency workloads run under mpirun by tests/test_crash.py.

usage:
  crash.py save DIR PHASE RANK ACTION   save #1, then die at PHASE of save #2
  crash.py check DIR                    restore the latest, compare, save again, check files
  crash.py hang DIR                     the last rank hangs; the others must agree on a timeout
  crash.py writer DIR N                 N quick saves (for a concurrent reader)
  crash.py train DIR SEED               resume from DIR's latest checkpoint (check it), then save
                                        in a loop, synchronously or asynchronously at random;
                                        after each save returns (sync() for an asynchronous
                                        one) rank 0 appends "K PATH" to DIR/acks. Killed from
                                        outside at a random moment (tests/test_crash.py,
                                        benchmarks/soak.py)
"""

import os
import sys

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import Layout, _faults

comm = MPI.COMM_WORLD


def values(k):
    return {
        "w": (np.arange(11 * 6, dtype=np.float64).reshape(11, 6) + 1) * k,
        "b": (np.arange(7, dtype=np.int32) + 3) * k,
    }


def model():
    mesh = hpckpt.create_mesh([("x", comm.size)])
    vs = {
        "w": hpckpt.Variable(np.zeros((11, 6)), Layout(["x", "unsharded"], mesh)),
        "b": hpckpt.Variable(np.zeros(7, np.int32), Layout(["x"], mesh)),
    }
    return vs, hpckpt.Checkpoint(**vs)


def assign(vs, k):
    for name, v in values(k).items():
        vs[name].assign(v)


def say(*args):
    # one write per line: with unbuffered output print() writes the text and the newline
    # separately, and mpirun may then put another rank's line between them
    sys.stdout.write(" ".join(str(a) for a in args) + "\n")
    sys.stdout.flush()


def big_values(k):
    return {
        "w": (np.arange(256 * 512, dtype=np.float64).reshape(256, 512) + 1) * k,
        "b": (np.arange(1000, dtype=np.int32) + 3) * k,
    }


def train(d, seed):
    """Resume, check, then save for ever (until killed); acknowledge each save in DIR/acks."""
    mesh = hpckpt.create_mesh([("x", comm.size)])
    vs = {
        "w": hpckpt.Variable(np.zeros((256, 512)), Layout(["x", "unsharded"], mesh)),
        "b": hpckpt.Variable(np.zeros(1000, np.int32), Layout(["x"], mesh)),
    }
    ckpt = hpckpt.Checkpoint(**vs)
    mgr = hpckpt.CheckpointManager(ckpt, d, max_to_keep=3)
    latest = mgr.restore_or_initialize()
    k = int(ckpt.save_counter.local)
    ok = latest is None or all(
        np.array_equal(vs[n].numpy(), want) for n, want in big_values(k).items()
    )
    ok = comm.allreduce(ok, op=MPI.LAND)
    if comm.rank == 0:
        say(f"RESUMED-{'OK' if ok else 'WRONG'} k={k} latest={latest}")
    pidfile = os.path.join(d, f"pid-{comm.rank}")
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(pidfile + ".tmp", pidfile)
    rng = np.random.default_rng(seed)
    acks = os.open(os.path.join(d, "acks"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    async_opts = hpckpt.CheckpointOptions(enable_async=True)
    for _ in range(100000):
        k += 1
        for name, v in big_values(k).items():
            vs[name].assign(v)
        if rng.random() < 0.5:
            path = mgr.save()
        else:
            path = mgr.save(options=async_opts)
            mgr.sync()
        if comm.rank == 0:
            os.write(acks, f"{k} {path}\n".encode())


def main():
    mode, d = sys.argv[1], sys.argv[2]
    if mode == "train":
        train(d, int(sys.argv[3]))
        return
    vs, ckpt = model()
    if mode == "save":
        phase, rank, action = sys.argv[3], int(sys.argv[4]), sys.argv[5]
        mgr = hpckpt.CheckpointManager(ckpt, d, max_to_keep=2)
        assign(vs, 1)
        mgr.save()
        if comm.rank == rank:
            _faults.inject(phase, rank, action)
        assign(vs, 2)
        mgr.save()
        say(f"SURVIVED rank={comm.rank}")
    elif mode == "check":
        mgr = hpckpt.CheckpointManager(ckpt, d, max_to_keep=2)
        latest = mgr.restore_or_initialize()
        k = int(ckpt.save_counter.local)
        ok = latest is not None and all(
            np.array_equal(vs[n].numpy(), want) for n, want in values(k).items()
        )
        ok = comm.allreduce(ok, op=MPI.LAND)
        if comm.rank == 0:
            say(f"RESTORED-{'OK' if ok else 'WRONG'} counter={k} latest={os.path.basename(latest)}")
        assign(vs, k + 1)
        new = mgr.save()
        mgr.close()  # waits for the removal of old files, gives the directory's lease up
        if comm.rank == 0:
            names = sorted(os.listdir(d))
            committed = {n[: -len(".index.json")] for n in names if n.endswith(".index.json")}
            data = [n for n in names if ".data-" in n]
            clean = (
                all(sum(n.startswith(c + ".data-") for n in data) == 1 for c in committed)
                and len(data) == len(committed)
                and not any(".tmp-" in n for n in names)
                and ".hpckpt.lock" not in names
                and hpckpt.latest_checkpoint(d) == new
            )
            say(f"CLEAN-{'OK' if clean else 'DIRTY'} {names}")
    elif mode == "hang":
        late = comm.size - 1
        if comm.rank == late:
            _faults.inject("plan", late, "hang", "60")
        try:
            ckpt.write(os.path.join(d, "h"), options=hpckpt.CheckpointOptions(timeout=2))
        except hpckpt.CheckpointError as e:
            say(f"AGREED rank={comm.rank} {e}")
        if comm.rank == 0:
            comm.Abort(3)
        else:
            import time

            time.sleep(60)
    elif mode == "writer":
        mgr = hpckpt.CheckpointManager(ckpt, d, max_to_keep=None)
        for k in range(1, int(sys.argv[3]) + 1):
            assign(vs, k)
            mgr.save()
        if comm.rank == 0:
            say("WRITER-DONE")


if __name__ == "__main__":
    main()
