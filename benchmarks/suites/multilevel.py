"""Suite ``multilevel``: multi-level checkpointing against saves to the parallel file system.

Measures, on the same state:

* a synchronous ``CheckpointManager.save`` to ``--dir`` (the "parallel file system";
  here whatever disk ``--dir`` is on): the baseline;
* a local-tier save to ``--local-dir`` (``/dev/shm``) with partner copies, and without;
* a persisted save with a local tier (``save(persist=True)``): the time the application
  is blocked (until ``save`` returns: the local save) and the time until the flush is
  durable; the same with ``CheckpointOptions(enable_async=True)`` (blocked only for a
  snapshot into reused buffers: the local save runs in the background too);
* restores: from the local tier (each node's own copy), from the partner copies (one
  node's directory moved away), and from the parallel file system.

Nodes are emulated (``HPCKPT_RANKS_PER_NODE``, default: two nodes) so that partner copies
move over MPI as they would between nodes.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import uuid
import warnings
from typing import Any

from ..util import parse_sizes
from .common import add_common_options, open_run, save_results

__all__ = ["add_parser", "run"]

SAVE_OPS = (
    "parallel-FS save (sync)",
    "local save, partner copy",
    "local save, no partner copy",
    "persisted save: blocking",
    "persisted save: until durable",
    "async persisted save: blocking",
    "async persisted save: until durable",
)
RESTORE_OPS = (
    "restore from the parallel FS",
    "restore from the local tier",
    "restore from partner copies",
)

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
    from ..report import markdown_table

    ctx = open_run(args)
    comm = ctx.comm
    k = args.ranks_per_node or int(os.environ.get("HPCKPT_RANKS_PER_NODE") or 0)
    if not k:
        k = max(1, ctx.size // 2)
    os.environ["HPCKPT_RANKS_PER_NODE"] = str(k)
    tag = comm.bcast(uuid.uuid4().hex[:8] if ctx.rank == 0 else None, root=0)
    local_root = os.path.join(args.local_dir, f"hpckpt-bench-{tag}")
    rows: list[dict[str, Any]] = []
    workloads: list[str] = []
    try:
        for size in args.sizes:
            new, desc = _one_size(ctx, args, size, k, local_root)
            rows += new
            workloads.append(desc)
            if ctx.rank == 0:
                markdown_table(new, COLUMNS)
            gc.collect()
        save_results(ctx, args, "multilevel", rows, workloads)
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        raise
    finally:
        comm.Barrier()
        if ctx.rank == 0:
            shutil.rmtree(local_root, ignore_errors=True)
        ctx.close()
    return 0


def _one_size(
    ctx: Any, args: argparse.Namespace, size: int, k: int, local_root: str
) -> tuple[list[dict[str, Any]], str]:
    """Every measurement for one payload size. Collective: call on all ranks."""
    from mpi4py import MPI

    import hpckpt

    from ..util import GIB, drop_cache, format_size, median
    from ..workload import big_matrices

    comm = ctx.comm
    nodes = -(-ctx.size // k)
    wl = big_matrices(ctx, size, args.nvars)
    label = f"{format_size(wl.total_bytes)} on {ctx.size} ranks, {nodes} nodes"
    ctx.log(f"== multilevel suite, {label}: {wl.description}")
    ck = hpckpt.Checkpoint(model=wl.root())
    d = ctx.makedirs(f"ml-{size}")
    pattern = os.path.join(local_root, f"{size}", "local-{node}")
    pfs = hpckpt.CheckpointManager(ck, os.path.join(d, "plain"), max_to_keep=1)
    tiers = {
        red: hpckpt.CheckpointManager(
            ck,
            os.path.join(d, f"tiered-{red}"),
            max_to_keep=1,
            local_tier=hpckpt.LocalTier(
                pattern.replace("local-", f"{red}-"), keep=2, redundancy=red
            ),
        )
        for red in ("partner", "none")
    }
    m = tiers["partner"]
    m_pattern = pattern.replace("local-", "partner-")
    samples: dict[str, list[float]] = {op: [] for op in SAVE_OPS}

    asynchronous = hpckpt.CheckpointOptions(enable_async=True)

    def persisted(options: Any = None) -> tuple[float, float]:
        comm.Barrier()
        t0 = MPI.Wtime()
        m.save(persist=True, options=options)
        t1 = MPI.Wtime()
        m.sync()
        t2 = MPI.Wtime()
        return comm.allreduce(t1 - t0, op=MPI.MAX), comm.allreduce(t2 - t0, op=MPI.MAX)

    for mgr in (m, tiers["none"]):  # steady state: a save reuses the files it replaces
        for _ in range(2):
            mgr.save()

    for rep in range(args.warmup + args.reps):
        timed = rep >= args.warmup
        order = ["pfs", "local", "none", "persist", "async"]
        if rep % 2:
            order.reverse()
        line = []
        for op in order:
            if op == "pfs":
                t, key = ctx.timed(pfs.save), SAVE_OPS[0]
            elif op == "local":
                t, key = ctx.timed(m.save), SAVE_OPS[1]
            elif op == "none":
                t, key = ctx.timed(tiers["none"].save), SAVE_OPS[2]
            elif op == "persist":
                t, t2 = persisted()
                key = SAVE_OPS[3]
                if timed:
                    samples[SAVE_OPS[4]].append(t2)
            else:
                t, t2 = persisted(asynchronous)
                key = SAVE_OPS[5]
                if timed:
                    samples[SAVE_OPS[6]].append(t2)
            line.append(f"{key} {t:.3f}s")
            if timed:
                samples[key].append(t)
        ctx.log(f"  {label} rep {rep + 1}: " + "; ".join(line))
    m.sync()
    restores: dict[str, list[float]] = {op: [] for op in RESTORE_OPS}
    pfs_path = pfs.latest_checkpoint
    assert pfs_path is not None
    pfs_dir = os.path.dirname(pfs_path)
    away = os.path.join(local_root, f"{size}", "away")
    lost = m_pattern.replace("{node}", str(nodes - 1))

    def move(src: str, dst: str) -> None:
        comm.Barrier()
        if ctx.rank == 0:
            os.rename(src, dst)
        comm.Barrier()

    for rep in range(args.warmup + args.reps):
        line = []
        for op in RESTORE_OPS:
            if op == RESTORE_OPS[2] and nodes < 2:
                continue
            for tensor in wl.tensors:
                tensor.variable.local[...] = 0
            if op == RESTORE_OPS[0]:
                if ctx.cold:
                    drop_cache([os.path.join(pfs_dir, n) for n in os.listdir(pfs_dir)])
                    comm.Barrier()
                t = ctx.timed(pfs.restore_or_initialize)
            elif op == RESTORE_OPS[1]:
                t = ctx.timed(m.restore_or_initialize)
            else:
                move(lost, away)  # node n-1's storage is "lost"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t = ctx.timed(m.restore_or_initialize)
                move(away, lost)
            bad = wl.bad_restores(lambda x: x.variable.local)
            ctx.check_all(not bad, f"{op}: wrong values in {bad}")
            line.append(f"{op} {t:.3f}s")
            if rep >= args.warmup:
                restores[op].append(t)
        ctx.log(f"  {label} restore rep {rep + 1}: " + "; ".join(line))
    out = []
    for op, s in [*samples.items(), *restores.items()]:
        if not s:
            continue
        med = median(s)
        base_op = RESTORE_OPS[0] if op in RESTORE_OPS else SAVE_OPS[0]
        base = median(restores[base_op] if op in RESTORE_OPS else samples[base_op])
        out.append(
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
                "ratio_to": base_op,
            }
        )
    return out, f"{wl.description}; {nodes} emulated nodes of {k} ranks"
