"""Suite ``async``: blocking time of an asynchronous save against a synchronous one."""

from __future__ import annotations

import argparse
import gc
import os
from typing import Any

from ..util import parse_size, parse_sizes
from .common import add_common_options, open_run, save_results

__all__ = ["add_parser", "run"]

COLUMNS = [
    ("size", "size"),
    ("op", "op"),
    ("median_s", "median s"),
    ("min_s", "min s"),
    ("ratio", "time / sync save"),
    ("peak_extra_mib", "peak extra MiB / rank"),
    ("budget_mib", "budget MiB / rank"),
]


def add_parser(sub: Any) -> None:
    """Register the suite's options."""
    p = sub.add_parser(
        "async",
        help="asynchronous save: blocking time and peak extra memory vs a synchronous save",
        description=(
            "Save a few large sharded Variables with a synchronous Checkpoint.write and "
            "with CheckpointOptions(enable_async=True), alternating in each repetition. "
            "Reports the synchronous save, the asynchronous save's blocking time (until "
            "write() returns), its time until durable (until sync() returns), and the "
            "peak extra resident memory per rank during the asynchronous save (above the "
            "process before any asynchronous save), against --budget."
        ),
    )
    p.add_argument(
        "--sizes", type=parse_sizes, default=parse_sizes("1G"), help="payload (default 1G)"
    )
    p.add_argument("--nvars", type=int, default=4, help="number of tensors (default 4)")
    p.add_argument(
        "--budget",
        type=parse_size,
        default=None,
        help="async_memory_budget per rank (default: the rank's share of the payload + 1%%)",
    )
    add_common_options(p, competitors=None)
    p.set_defaults(func=run)


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    """Run the suite. Collective: call on all ranks."""
    from mpi4py import MPI

    import hpckpt

    from ..report import markdown_table
    from ..util import GIB, format_size, median
    from ..workload import big_matrices

    ctx = open_run(args)
    rows: list[dict[str, Any]] = []
    workloads: list[str] = []
    comm = ctx.comm
    try:
        for size in args.sizes:
            wl = big_matrices(ctx, size, args.nvars)
            label = f"{format_size(wl.total_bytes)} on {ctx.size} ranks"
            ctx.log(f"== async suite, {label}: {wl.description}")
            workloads.append(wl.description)
            mine = sum(t.variable.local.nbytes for t in wl.tensors)
            budget = args.budget if args.budget is not None else mine + mine // 100 + (1 << 20)
            sync_opts = hpckpt.CheckpointOptions(mpi_info=ctx.mpi_info or None)
            async_opts = hpckpt.CheckpointOptions(
                enable_async=True, async_memory_budget=budget, mpi_info=ctx.mpi_info or None
            )
            ck = hpckpt.Checkpoint(model=wl.root())
            d = ctx.makedirs(f"async-{size}")
            prefix = {"sync": os.path.join(d, "sync"), "async": os.path.join(d, "async")}
            ck.write(prefix["sync"], options=sync_opts)  # warm-up; the baseline follows
            gc.collect()
            base_kib = _rss_kib("VmRSS")
            samples: dict[str, list[float]] = {
                "sync save": [],
                "async blocking": [],
                "async durable": [],
            }
            peak_kib = 0
            for rep in range(args.warmup + args.reps):
                order = ["sync", "async"] if rep % 2 == 0 else ["async", "sync"]
                line = []
                for kind in order:
                    comm.Barrier()
                    if kind == "sync":
                        t0 = MPI.Wtime()
                        ck.write(prefix["sync"], options=sync_opts)
                        t = comm.allreduce(MPI.Wtime() - t0, op=MPI.MAX)
                        line.append(f"sync {t:.3f}s")
                        if rep >= args.warmup:
                            samples["sync save"].append(t)
                        continue
                    _reset_peak()
                    t0 = MPI.Wtime()
                    ck.write(prefix["async"], options=async_opts)
                    t1 = MPI.Wtime()
                    ck.sync()
                    t2 = MPI.Wtime()
                    blocking = comm.allreduce(t1 - t0, op=MPI.MAX)
                    durable = comm.allreduce(t2 - t0, op=MPI.MAX)
                    extra = comm.allreduce(_rss_kib("VmHWM") - base_kib, op=MPI.MAX)
                    line.append(f"async {blocking:.3f}s (durable {durable:.3f}s)")
                    if rep >= args.warmup:
                        samples["async blocking"].append(blocking)
                        samples["async durable"].append(durable)
                        peak_kib = max(peak_kib, extra)
                ctx.log(f"  {label} rep {rep + 1}: " + ", ".join(line))
            if not os.path.exists(prefix["async"] + ".index.json"):
                raise RuntimeError("the asynchronous save did not commit")
            sync_med = median(samples["sync save"])
            new = []
            for op, s in samples.items():
                med = median(s)
                new.append(
                    {
                        "suite": "async",
                        "size": format_size(wl.total_bytes),
                        "ranks": ctx.size,
                        "op": op,
                        "median_s": med,
                        "min_s": min(s),
                        "max_s": max(s),
                        "samples": s,
                        "bytes": wl.total_bytes,
                        "gib_s": wl.total_bytes / GIB / med if med > 0 else None,
                        "ratio": med / sync_med if sync_med > 0 else None,
                        "ratio_to": "sync save",
                        "peak_extra_mib": round(peak_kib / 1024, 1) if op != "sync save" else None,
                        "budget_mib": round(budget / 2**20, 1) if op != "sync save" else None,
                    }
                )
            rows += new
            if ctx.rank == 0:
                markdown_table(new, COLUMNS)
            del ck, wl
            gc.collect()
        save_results(ctx, args, "async", rows, workloads)
    finally:
        ctx.close()
    return 0
