"""Multi-level checkpointing workloads run under mpirun by tests/test_multilevel_crash.py.

Nodes are emulated with HPCKPT_RANKS_PER_NODE (set by the test). The local tier is
DIR/local-{node}, the parallel file system DIR/pfs.

usage:
  multilevel.py save DIR N PHASE RANK ACTION   saves 1..N-1, then save N dies at PHASE
                                               (PHASE "-": it does not; persist_every=2:
                                               saves 2, 4, ... are also persisted, in the
                                               background)
  multilevel.py check DIR                      restore the newest complete checkpoint,
                                               compare, save once more, check the files
  multilevel.py exit DIR [FAIL]                a persisted save, then exit without sync()
                                               (FAIL: the flush fails on the last rank)
"""

import os
import sys

import numpy as np
from mpi4py import MPI

import hpckpt
from hpckpt import Layout, _faults
from hpckpt.io import wait_removals

comm = MPI.COMM_WORLD


def values(k):
    return {
        "w": (np.arange(11 * 6, dtype=np.float64).reshape(11, 6) + 1) * k,
        "b": (np.arange(7, dtype=np.int32) + 3) * k,
        "big": np.arange(300000, dtype=np.float32).reshape(600, 500) * k,
    }


def model():
    mesh = hpckpt.create_mesh([("x", comm.size)])
    vs = {
        "w": hpckpt.Variable(np.zeros((11, 6)), Layout(["x", "unsharded"], mesh)),
        "b": hpckpt.Variable(np.zeros(7, np.int32), Layout.replicated(mesh, 1)),
        "big": hpckpt.Variable(np.zeros((600, 500), np.float32), Layout.replicated(mesh, 2)),
    }
    return vs, hpckpt.Checkpoint(**vs)


def manager(ckpt, d):
    tier = hpckpt.LocalTier(os.path.join(d, "local-{node}"), keep=2)
    return hpckpt.CheckpointManager(
        ckpt, os.path.join(d, "pfs"), max_to_keep=2, local_tier=tier, persist_every=2
    )


def say(*args):
    # one write per line: with unbuffered output print() writes the text and the newline
    # separately, and mpirun may then put another rank's line between them
    sys.stdout.write(" ".join(str(a) for a in args) + "\n")
    sys.stdout.flush()


def main():
    mode, d = sys.argv[1], sys.argv[2]
    vs, ckpt = model()
    m = manager(ckpt, d)
    if mode == "save":
        n, phase, rank, action = int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
        for k in range(1, n + 1):
            for name, v in values(k).items():
                vs[name].assign(v)
            if k == n and phase != "-":
                m.sync()  # the fault is for save N (and its flush), not an earlier flush
                if comm.rank == rank:
                    _faults.inject(phase, rank, action)
            m.save()
        m.sync()  # a flush that dies, dies here at the latest
        say(f"SURVIVED rank={comm.rank}")
    elif mode == "exit":
        if len(sys.argv) > 3 and comm.rank == comm.size - 1:
            _faults.inject("after_data", comm.rank, "raise")
        for name, v in values(1).items():
            vs[name].assign(v)
        m.save(persist=True)
        say(f"EXITING rank={comm.rank}")
    elif mode == "check":
        path = m.restore_or_initialize()
        k = int(ckpt.save_counter.local)
        ok = path is not None and all(
            np.array_equal(vs[name].numpy(), want) for name, want in values(k).items()
        )
        ok = comm.allreduce(ok, op=MPI.LAND)
        tier = "local" if path is not None and "{node}" in path else "pfs"
        if comm.rank == 0:
            say(f"RESTORED-{'OK' if ok else 'WRONG'} k={k} tier={tier} path={path}")
        for name, v in values(k + 1).items():
            vs[name].assign(v)
        m.save(persist=True)
        m.sync()
        comm.Barrier()
        if comm.rank == 0:
            wait_removals()
            kept = {os.path.basename(p) for p in m.local_checkpoints}
            stray = []
            nodes = comm.size // int(os.environ["HPCKPT_RANKS_PER_NODE"])
            for node_dir in [f"local-{i}" for i in range(nodes)]:  # this job's nodes
                names = os.listdir(os.path.join(d, node_dir))
                marks = {x[: -len(".local.json")] for x in names if x.endswith(".local.json")}
                stray += [x for x in names if x.split(".")[0] not in kept or ".tmp-" in x]
                stray += [f"{node_dir} lacks {c}" for c in kept - marks]
            say(f"CLEAN-{'OK' if not stray else 'DIRTY'} {sorted(stray)}")


if __name__ == "__main__":
    main()
