"""Suite ``multilevel``: multi-level checkpointing against saves to the parallel file system.

Measures, on the same state:

* a synchronous ``CheckpointManager.save`` to ``--dir`` (the "parallel file system";
  here whatever disk ``--dir`` is on): the baseline;
* a local-tier save to ``--local-dir`` (``/dev/shm``) with partner copies, and without;
* a persisted save with a local tier (``save(persist=True)``): the time the application
  is blocked (until ``save`` returns) and the time until the flush is durable;
* restores: from the local tier (each node's own copy), from the partner copies (one
  node's directory moved away), and from the parallel file system.

Nodes are emulated (``HPCKPT_RANKS_PER_NODE``, default: two nodes) so that partner copies
move over MPI as they would between nodes.
"""

from __future__ import annotations

import argparse
import gc
import os
import uuid
import warnings
from typing import Any

from ..util import parse_sizes
from .common import add_common_options, open_run, save_results

__all__ = ["add_parser", "run"]

COLUMNS = [
    ("size", "size"),
    ("op", "op"),
    ("median_s", "median s"),
    ("min_s", "min s"),
    ("ratio", "time / baseline"),
    ("ratio_to", "baseline"),
]


def add_parser(sub: Any) -> None:
    """Register the suite's options."""
    p = sub.add_parser(
        "multilevel",
        help="multi-level checkpointing: local-tier saves and restores vs the parallel FS",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--sizes", type=parse_sizes, default=parse_sizes("1G"), help="payload (default 1G)"
    )
    p.add_argument("--nvars", type=int, default=4, help="number of tensors (default 4)")
    p.add_argument(
        "--local-dir",
        default="/dev/shm",
        help="parent of the local tier's node directories (default /dev/shm)",
    )
    p.add_argument(
        "--ranks-per-node",
        type=int,
        default=None,
        help="emulated ranks per node (default $HPCKPT_RANKS_PER_NODE, else half the ranks: "
        "two nodes)",
    )
    add_common_options(p, competitors=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the suite. Collective: call on all ranks."""
    from mpi4py import MPI

    import hpckpt

    from ..report import markdown_table
    from ..util import GIB, drop_cache, format_size, median
    from ..workload import big_matrices

    ctx = open_run(args)
    comm = ctx.comm
    k = args.ranks_per_node or int(os.environ.get("HPCKPT_RANKS_PER_NODE") or 0)
    if not k:
        k = max(1, ctx.size // 2)
    os.environ["HPCKPT_RANKS_PER_NODE"] = str(k)
    nodes = -(-ctx.size // k)
    tag = comm.bcast(uuid.uuid4().hex[:8] if ctx.rank == 0 else None, root=0)
    local_root = os.path.join(args.local_dir, f"hpckpt-bench-{tag}")
    rows: list[dict[str, Any]] = []
    workloads: list[str] = []
    try:
        for size in args.sizes:
            wl = big_matrices(ctx, size, args.nvars)
            label = f"{format_size(wl.total_bytes)} on {ctx.size} ranks, {nodes} nodes"
            ctx.log(f"== multilevel suite, {label}: {wl.description}")
            workloads.append(f"{wl.description}; {nodes} emulated nodes of {k} ranks")
            ck = hpckpt.Checkpoint(model=wl.root())
            d = ctx.makedirs(f"ml-{size}")
            pattern = os.path.join(local_root, f"{size}", "local-{node}")
            pfs = hpckpt.CheckpointManager(ck, os.path.join(d, "plain"), max_to_keep=1)
            tiers = {
                red: hpckpt.CheckpointManager(
                    ck,
                    os.path.join(d, f"tiered-{red}"),
                    max_to_keep=1,
                    local_tier=hpckpt.LocalTier(pattern.replace("local-", f"{red}-"), keep=1,
                                                redundancy=red),
                )  # fmt: skip
                for red in ("partner", "none")
            }
            m = tiers["partner"]
            samples: dict[str, list[float]] = {
                op: []
                for op in (
                    "parallel-FS save (sync)",
                    "local save, partner copy",
                    "local save, no partner copy",
                    "persisted save: blocking",
                    "persisted save: until durable",
                )
            }

            def persisted() -> tuple[float, float]:
                comm.Barrier()
                t0 = MPI.Wtime()
                m.save(persist=True)
                t1 = MPI.Wtime()
                m.sync()
                t2 = MPI.Wtime()
                return (
                    comm.allreduce(t1 - t0, op=MPI.MAX),
                    comm.allreduce(t2 - t0, op=MPI.MAX),
                )

            for rep in range(args.warmup + args.reps):
                timed = rep >= args.warmup
                order = ["pfs", "local", "none", "persist"]
                if rep % 2:
                    order.reverse()
                line = []
                for op in order:
                    if op == "pfs":
                        t = ctx.timed(pfs.save)
                        key = "parallel-FS save (sync)"
                    elif op == "local":
                        t = ctx.timed(m.save)
                        key = "local save, partner copy"
                    elif op == "none":
                        t = ctx.timed(tiers["none"].save)
                        key = "local save, no partner copy"
                    else:
                        t, t2 = persisted()
                        key = "persisted save: blocking"
                        if timed:
                            samples["persisted save: until durable"].append(t2)
                    line.append(f"{key} {t:.3f}s")
                    if timed:
                        samples[key].append(t)
                ctx.log(f"  {label} rep {rep + 1}: " + "; ".join(line))
            m.sync()
            base_save = median(samples["parallel-FS save (sync)"])
            # restores: from the local tier, from partner copies, from the parallel FS
            restores: dict[str, list[float]] = {
                "restore from the parallel FS": [],
                "restore from the local tier": [],
                "restore from partner copies": [],
            }
            pfs_path = pfs.latest_checkpoint
            assert pfs_path is not None
            away = os.path.join(local_root, f"{size}", "away")
            lost = pattern.replace("{node}", str(nodes - 1))
            for rep in range(args.warmup + args.reps):
                timed = rep >= args.warmup
                line = []
                for op in restores:
                    for t in wl.tensors:
                        t.variable.local[...] = 0
                    if op == "restore from the parallel FS":
                        if ctx.cold:
                            drop_cache(
                                [os.path.join(os.path.dirname(pfs_path), n)
                                 for n in os.listdir(os.path.dirname(pfs_path))]
                            )  # fmt: skip
                            comm.Barrier()
                        t = ctx.timed(lambda: ck.restore(pfs_path))
                    elif op == "restore from the local tier":
                        t = ctx.timed(m.restore_or_initialize)
                    else:
                        if nodes < 2:
                            continue
                        comm.Barrier()
                        if ctx.rank == 0:
                            os.rename(lost, away)
                        comm.Barrier()
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            t = ctx.timed(m.restore_or_initialize)
                        comm.Barrier()
                        if ctx.rank == 0:
                            os.rename(away, lost)
                        comm.Barrier()
                    bad = wl.bad_restores(lambda t: t.variable.local)
                    ctx.check_all(not bad, f"{op}: wrong values in {bad}")
                    line.append(f"{op} {t:.3f}s")
                    if timed:
                        restores[op].append(t)
                ctx.log(f"  {label} restore rep {rep + 1}: " + "; ".join(line))
            base_restore = median(restores["restore from the parallel FS"])
            new = []
            for op, s in [*samples.items(), *restores.items()]:
                if not s:
                    continue
                med = median(s)
                base, base_name = (
                    (base_restore, "restore from the parallel FS")
                    if op.startswith("restore")
                    else (base_save, "parallel-FS save (sync)")
                )
                new.append(
                    {
                        "suite": "multilevel",
                        "size": format_size(wl.total_bytes),
                        "ranks": ctx.size,
                        "nodes": nodes,
                        "op": op,
                        "median_s": med,
                        "min_s": min(s),
                        "max_s": max(s),
                        "samples": s,
                        "bytes": wl.total_bytes,
                        "gib_s": wl.total_bytes / GIB / med if med > 0 else None,
                        "ratio": med / base if base > 0 else None,
                        "ratio_to": base_name,
                    }
                )
            rows += new
            if ctx.rank == 0:
                markdown_table(new, COLUMNS)
            del ck, wl, pfs, tiers, m
            gc.collect()
        save_results(ctx, args, "multilevel", rows, workloads)
    finally:
        comm.Barrier()
        if ctx.rank == 0:
            import shutil

            shutil.rmtree(local_root, ignore_errors=True)
        ctx.close()
    return 0
