"""Suite ``scale``: how a save's and a restore's coordination grows with the rank count.

Run inside one MPI job (``mpirun -n P python -m mpi4py -m benchmarks scale``), it saves
``--tensors`` small FSDP-style tensors (each sharded over all ranks, ``--rows`` rows per
rank) so that the IO is negligible and the time is the coordination: the agreement
steps, rank 0's file creation and commit, the gathers. It reports the save time with a
fresh plan (a new structure) and with the plan cache (the same structure again), the
restore time, the index size, rank 0's peak memory growth during a save and another
rank's during a restore (VmHWM after resetting it).

``python -m benchmarks scale-sweep --ranks 2,4,8,16,32,64`` launches one job per rank
count (oversubscribed: this measures the algorithms, not the machine) and fits each
figure against O(1), O(log p) and O(p), reporting the best fit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

__all__ = ["add_parser", "run", "run_sweep"]

COLUMNS = [
    ("ranks", "ranks"),
    ("tensors", "tensors"),
    ("save_fresh_ms", "save, fresh plan ms"),
    ("save_cached_ms", "save, cached plan ms"),
    ("restore_ms", "restore ms"),
    ("index_kb", "index KiB"),
    ("rank0_save_mb", "rank 0 peak growth, save MB"),
    ("rank1_restore_mb", "rank 1 peak growth, restore MB"),
]


def add_parser(sub: Any) -> None:
    """Register the suites ``scale`` and ``scale-sweep``."""
    p = sub.add_parser(
        "scale",
        help="coordination cost of a save and a restore at this rank count",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--tensors", type=int, default=300)
    p.add_argument("--rows", type=int, default=4, help="rows per rank of each tensor")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--dir", default=None)
    p.add_argument("--json-out", default=None)
    p.set_defaults(func=run)
    q = sub.add_parser(
        "scale-sweep",
        help="run the scale suite at several rank counts and fit the growth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument("--ranks", default="2,4,8,16,32,64")
    q.add_argument("--tensors", type=int, default=300)
    q.add_argument("--reps", type=int, default=5)
    q.add_argument("--json-out", default=None)
    q.set_defaults(func=run_sweep)


def _hwm_reset() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _hwm_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(args: argparse.Namespace) -> int:
    """Run at this job's rank count. Collective: call on all ranks."""
    import numpy as np
    from mpi4py import MPI

    import hpckpt
    from hpckpt import UNSHARDED, Layout

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    base = comm.bcast(tempfile.mkdtemp(prefix="hpckpt-scale-", dir=args.dir) if rank == 0 else None)
    mesh = hpckpt.create_mesh([("dp", size)])

    def model(rows: int) -> dict:
        m = hpckpt.Module()
        m.layers = [
            hpckpt.Variable(np.zeros((size * rows, 8), np.float32), Layout(["dp", UNSHARDED], mesh))
            for _ in range(args.tensors)
        ]
        return {"model": m}

    fresh, cached, restore = [], [], []
    save0_mb = restore1_mb = 0.0
    path = ""
    for rep in range(args.reps + 1):
        # a new structure each rep (one more row per rank): the plan is made afresh
        vs = model(args.rows + rep)
        ck = hpckpt.Checkpoint(**vs)
        comm.Barrier()
        _hwm_reset()
        before = _rss_kb()
        t0 = time.perf_counter()
        path = ck.write(os.path.join(base, f"s{rep}"))
        comm.Barrier()
        t1 = time.perf_counter()
        grow = (_hwm_kb() - before) / 1024
        path = ck.write(os.path.join(base, f"c{rep}"))  # the same structure: cached plan
        comm.Barrier()
        t2 = time.perf_counter()
        target = model(args.rows + rep)
        _hwm_reset()
        before = _rss_kb()
        comm.Barrier()
        t3 = time.perf_counter()
        hpckpt.Checkpoint(**target).read(path)
        comm.Barrier()
        t4 = time.perf_counter()
        rgrow = (_hwm_kb() - before) / 1024
        if rep:  # the first is a warm-up
            fresh.append(t1 - t0)
            cached.append(t2 - t1)
            restore.append(t4 - t3)
            save0_mb = max(save0_mb, grow) if rank == 0 else save0_mb
            restore1_mb = max(restore1_mb, rgrow) if rank == min(1, size - 1) else restore1_mb
    save0_mb = comm.bcast(save0_mb, root=0)
    restore1_mb = comm.bcast(restore1_mb, root=min(1, size - 1))
    row = {
        "ranks": size,
        "tensors": args.tensors,
        "save_fresh_ms": round(1000 * float(np.median(fresh)), 2),
        "save_cached_ms": round(1000 * float(np.median(cached)), 2),
        "restore_ms": round(1000 * float(np.median(restore)), 2),
        "index_kb": round(os.path.getsize(path + ".index.json") / 1024, 1) if rank == 0 else 0,
        "rank0_save_mb": round(save0_mb, 2),
        "rank1_restore_mb": round(restore1_mb, 2),
    }
    if rank == 0:
        print("SCALE-ROW " + json.dumps(row), flush=True)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump({"suite": "scale", "rows": [row]}, f)
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0


def _fit(ps: list[int], ys: list[float]) -> dict[str, Any]:
    """Least-squares fits y = a + b f(p) for f in 1, log2 p, p; the best by residual."""
    import numpy as np

    out = {}
    y = np.asarray(ys, dtype=float)
    for name, f in (("O(1)", lambda p: 0.0), ("O(log p)", math.log2), ("O(p)", float)):
        x = np.asarray([f(p) for p in ps], dtype=float)
        a_mat = np.vstack([np.ones_like(x), x]).T if np.ptp(x) else np.ones((len(x), 1))
        coef, *_ = np.linalg.lstsq(a_mat, y, rcond=None)
        res = float(np.sum((a_mat @ coef - y) ** 2))
        out[name] = {"coef": [round(float(c), 4) for c in coef], "sse": round(res, 3)}
    # the simplest model within 10% of the best residual
    best = min(v["sse"] for v in out.values())
    for name in ("O(1)", "O(log p)", "O(p)"):
        if out[name]["sse"] <= 1.1 * best + 1e-9:
            return {"best": name, "fits": out}
    return {"best": "O(p)", "fits": out}


def run_sweep(args: argparse.Namespace) -> int:
    """Launch one ``scale`` job per rank count and fit the growth (no MPI here)."""
    from ..report import markdown_table

    rows = []
    env = dict(
        os.environ,
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
    )
    for p in (int(x) for x in args.ranks.split(",")):
        cmd = [
            "mpirun",
            "--oversubscribe",
            "-n",
            str(p),
            sys.executable,
            "-m",
            "mpi4py",
            "-m",
            "benchmarks",
            "scale",
            "--tensors",
            str(args.tensors),
            "--reps",
            str(args.reps),
        ]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("SCALE-ROW ")), None)
        if line is None:
            print(f"scale job on {p} ranks failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
            return 1
        rows.append(json.loads(line[len("SCALE-ROW ") :]))
        print(json.dumps(rows[-1]), flush=True)
    markdown_table(rows, COLUMNS)
    ps = [r["ranks"] for r in rows]
    fits = {
        k: _fit(ps, [r[k] for r in rows])
        for k in ("save_fresh_ms", "save_cached_ms", "restore_ms", "index_kb", "rank1_restore_mb")
    }
    for k, f in fits.items():
        print(f"{k}: best fit {f['best']} {f['fits'][f['best']]}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"suite": "scale-sweep", "rows": rows, "fits": fits}, f, indent=1)
    return 0
