"""Whole-job behaviours run under mpirun by tests/test_lifecycle.py.

usage:
  lifecycle.py async-exit DIR          save, then an asynchronous save, then exit without sync()
  lifecycle.py async-fail DIR          as above, the background write failing on the last rank
  lifecycle.py sync-removals DIR       manager saves with max_to_keep=1; sync(); list the files
  lifecycle.py interrupt DIR OP PHASE RANK
                                       OP (save|restore) #2 with a SIGTERM handler calling
                                       sys.exit(0) on RANK, the signal sent at PHASE
  lifecycle.py sigterm-loop DIR        save in a loop (sync and async alternately) until SIGTERM;
                                       every rank's handler calls sys.exit(0)
  lifecycle.py signal-alone DIR        rank 0 saves and gets SIGTERM; the others exit at once
  lifecycle.py hold DIR FLAG           take DIR's lease (one save), print HOLDING, wait for FLAG
  lifecycle.py contend DIR             try to save into DIR; print the outcome on every rank
  lifecycle.py overwrite DIR N         write(DIR/p) N times over, values of step 1..N
  lifecycle.py restore-mem PREFIX      restore PREFIX; print the error and each rank's peak memory
"""

import os
import signal
import sys
import time

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import Layout, _faults

comm = MPI.COMM_WORLD
ASYNC = hpckpt.CheckpointOptions(enable_async=True)


def values(k):
    return {
        "w": (np.arange(64 * 33, dtype=np.float64).reshape(64, 33) + 1) * k,
        "b": (np.arange(7, dtype=np.int32) + 3) * k,
    }


def model():
    mesh = hpckpt.create_mesh([("x", comm.size)])
    vs = {
        "w": hpckpt.Variable(np.zeros((64, 33)), Layout(["x", "unsharded"], mesh)),
        "b": hpckpt.Variable(np.zeros(7, np.int32), Layout(["x"], mesh)),
    }
    return vs, hpckpt.Checkpoint(**vs)


def assign(vs, k):
    for name, v in values(k).items():
        v_ = vs[name]
        v_.assign(v)


def say(*args):
    # one write per line: with unbuffered output print() writes the text and the newline
    # separately, and mpirun may then put another rank's line between them
    sys.stdout.write(" ".join(str(a) for a in args) + "\n")
    sys.stdout.flush()


def exit_on_sigterm(signum, frame):
    sys.exit(0)


def main():
    mode, d = sys.argv[1], sys.argv[2]
    vs, ckpt = model()
    if mode in ("async-exit", "async-fail"):
        mgr = hpckpt.CheckpointManager(ckpt, d, max_to_keep=2)
        assign(vs, 1)
        mgr.save()
        assign(vs, 2)
        # the background write is still running when the program ends
        _faults.inject("before_data", "*", "hang", "1.5")
        if mode == "async-fail" and comm.rank == comm.size - 1:
            _faults.inject("after_data", comm.rank, "raise")
        path = mgr.save(options=ASYNC)
        say(f"RETURNED rank={comm.rank} {path}")
    elif mode == "sync-removals":
        with hpckpt.CheckpointManager(ckpt, d, max_to_keep=1) as mgr:
            _faults.inject("remove", 0, "hang", "1")  # each old file takes a second to go
            for k in range(1, 4):
                assign(vs, k)
                mgr.save(options=ASYNC if k == 3 else None)
            mgr.sync()
            if comm.rank == 0:
                say("FILES " + " ".join(sorted(os.listdir(d))))
    elif mode == "interrupt":
        op, phase, rank = sys.argv[3], sys.argv[4], int(sys.argv[5])
        mgr = hpckpt.CheckpointManager(ckpt, d, max_to_keep=3)
        assign(vs, 1)
        first = mgr.save()
        assign(vs, 5)
        if comm.rank == rank:
            signal.signal(signal.SIGTERM, exit_on_sigterm)
            _faults.inject(phase, rank, "signal", "SIGTERM")
        try:
            if op == "save":
                mgr.save()
            else:
                ckpt.restore(first)
            say(f"NO-ERROR rank={comm.rank}")
        except SystemExit:
            say(f"SYSTEMEXIT rank={comm.rank}")
            raise
        except hpckpt.CheckpointError as e:
            untouched = op != "restore" or np.array_equal(
                vs["w"].local, values(5)["w"][vs["w"].layout.local_slices((64, 33))]
            )
            say(f"AGREED rank={comm.rank} untouched={untouched} [[{e}]]")
    elif mode == "sigterm-loop":
        signal.signal(signal.SIGTERM, exit_on_sigterm)
        os.makedirs(d, exist_ok=True)
        mgr = hpckpt.CheckpointManager(ckpt, d, max_to_keep=2)
        with open(os.path.join(d, f"pid-{comm.rank}.tmp"), "w") as f:
            f.write(str(os.getpid()))
        os.rename(os.path.join(d, f"pid-{comm.rank}.tmp"), os.path.join(d, f"pid-{comm.rank}"))
        k = 0
        try:
            while True:
                k += 1
                assign(vs, k)
                if k % 2:
                    path = mgr.save()
                else:
                    path = mgr.save(options=ASYNC)
                    ckpt.sync()
                if comm.rank == 0:
                    say(f"ACK {path} {k}")
        except hpckpt.CheckpointError as e:
            say(f"AGREED rank={comm.rank} {e}")
    elif mode == "signal-alone":
        # rank 0 saves with a SIGTERM arriving during the save; the other ranks exit at
        # once, outside any operation: the agreement that would carry rank 0's
        # SystemExit never comes
        signal.signal(signal.SIGTERM, exit_on_sigterm)
        if comm.rank == 0:
            _faults.inject("plan", 0, "signal", "SIGTERM")
            ckpt.write(os.path.join(d, "p"))
            say("RETURNED")
        else:
            say(f"EXITING rank={comm.rank}")
            sys.exit(0)
    elif mode == "hold":
        flag = sys.argv[3]
        mgr = hpckpt.CheckpointManager(ckpt, d, max_to_keep=None)
        assign(vs, 1)
        mgr.save()
        say(f"HOLDING rank={comm.rank} pid={os.getpid()}")
        while not os.path.exists(flag):
            time.sleep(0.05)
        assign(vs, 2)
        mgr.save()
        if hasattr(mgr, "close"):
            mgr.close()
        say(f"RELEASED rank={comm.rank}")
    elif mode == "overwrite":
        for k in range(1, int(sys.argv[3]) + 1):
            assign(vs, k)
            ckpt.write(os.path.join(d, "p"))
        if comm.rank == 0:
            say("WRITER-DONE")
    elif mode == "restore-mem":
        import resource

        try:
            ckpt.read(d)
            outcome = "OK"
        except hpckpt.CheckpointError as e:
            outcome = f"{type(e).__name__}: {e}"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
        say(f"RESTORE rank={comm.rank} maxrss_kib={peak} [[{outcome}]]")
    elif mode == "contend":
        mgr = hpckpt.CheckpointManager(ckpt, d, max_to_keep=None)
        assign(vs, 9)
        try:
            say(f"SAVED rank={comm.rank} [[{mgr.save(checkpoint_number=100)}]]")
        except hpckpt.CheckpointError as e:
            say(f"REFUSED rank={comm.rank} [[{e}]]")


if __name__ == "__main__":
    main()
