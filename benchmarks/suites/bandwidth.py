"""Suite ``bandwidth``: save and restore of a few big sharded tensors vs the raw limits."""

from __future__ import annotations

import argparse
import gc
from typing import Any

from ..catalog import RAW
from ..util import parse_sizes
from .common import add_common_options, competitor_names, open_run, save_results

__all__ = ["add_parser", "run"]

DEFAULT_COMPETITORS = "hpckpt,hpckpt-nocrc,hpckpt-indep,mpiio,posix,h5py,npy"

COLUMNS = [
    ("size", "size"),
    ("op", "op"),
    ("competitor", "competitor"),
    ("median_s", "median s"),
    ("min_s", "min s"),
    ("gib_s", "GiB/s"),
    ("ratio", "time / raw"),
]


def add_parser(sub: Any) -> None:
    """Register the suite's options."""
    p = sub.add_parser(
        "bandwidth",
        help="big sharded tensors: hpckpt vs raw MPI-IO, pwrite/pread, h5py, np.save",
        description=(
            "Save (durable: fsync) and restore a few large sharded Variables with hpckpt "
            "and with the raw ways to move the same bytes. Each repetition runs every "
            "competitor once, in rotated order; tables give medians, GiB/s of the "
            "payload and the time relative to the faster raw way (mpiio or posix)."
        ),
    )
    p.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes("1G"),
        help="total payload sizes, comma-separated (default 1G; e.g. 1M,64M,1G)",
    )
    p.add_argument("--nvars", type=int, default=4, help="number of tensors (default 4)")
    p.add_argument(
        "--mesh",
        choices=("1d", "2d"),
        default="1d",
        help="1d: rows over all ranks; 2d: rows over x and columns over y (default 1d)",
    )
    p.add_argument("--cols", type=int, default=4096, help="matrix columns (default 4096)")
    p.add_argument("--dtype", default="float32", help="element type (default float32)")
    p.add_argument(
        "--data",
        choices=("random", "smooth"),
        default="random",
        help="random floats (default; incompressible) or a smooth heat field (compresses)",
    )
    add_common_options(p, competitors=DEFAULT_COMPETITORS)
    p.set_defaults(func=run)


def fastest_raw(phase: str, medians: dict[str, float]) -> str | None:
    """The raw competitor with the smallest median (any competitor if no raw one ran)."""
    raw = {n: m for n, m in medians.items() if n in RAW}
    pool = raw or medians
    return min(pool, key=pool.__getitem__) if pool else None


def run(args: argparse.Namespace) -> int:
    """Run the suite. Collective: call on all ranks."""
    from ..competitors import build
    from ..report import make_rows, markdown_table
    from ..runner import run_reps
    from ..util import format_size
    from ..workload import big_matrices

    ctx = open_run(args)
    names = competitor_names(args)
    rows: list[dict[str, Any]] = []
    workloads: list[str] = []
    try:
        ctx.log(
            f"bandwidth suite: {ctx.size} ranks, dir {ctx.directory}, "
            f"{'cold' if args.cold else 'warm'} reads, reps {args.reps} (+{args.warmup} warm-up)"
        )
        for size in args.sizes:
            wl = big_matrices(
                ctx,
                size,
                args.nvars,
                cols=args.cols,
                mesh_kind=args.mesh,
                dtype=args.dtype,
                data=args.data,
            )
            label = f"{format_size(wl.total_bytes)} on {ctx.size} ranks"
            ctx.log(f"== {label}: {wl.description}")
            workloads.append(wl.description)
            competitors = build(names, ctx, wl)
            samples = run_reps(ctx, competitors, reps=args.reps, warmup=args.warmup, label=label)
            case = {
                "suite": "bandwidth",
                "size": format_size(wl.total_bytes),
                "ranks": ctx.size,
                "mesh": args.mesh,
                "cold": args.cold,
            }
            case["data"] = args.data
            new = make_rows(samples, case=case, nbytes=wl.total_bytes, reference=fastest_raw)
            files = {c.name: c.file_bytes() for c in competitors if hasattr(c, "file_bytes")}
            for row in new:  # bytes on disk: what compression saves
                if row["competitor"] in files and row["op"] == "save":
                    row["file_bytes"] = files[row["competitor"]]
            rows += new
            if ctx.rank == 0:
                markdown_table(new, COLUMNS)
            del competitors, wl
            gc.collect()
        save_results(ctx, args, "bandwidth", rows, workloads)
    finally:
        ctx.close()
    return 0
