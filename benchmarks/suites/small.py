"""Suite ``small``: a model-like mix of many small tensors and a few big matrices."""

from __future__ import annotations

import argparse
import gc
from typing import Any

from ..util import parse_int_list, parse_size
from .common import add_common_options, competitor_names, open_run, save_results

__all__ = ["add_parser", "run"]

DEFAULT_COMPETITORS = "hpckpt,hpckpt-nocrc,h5py,npz"

COLUMNS = [
    ("nvars", "tensors"),
    ("op", "op"),
    ("competitor", "competitor"),
    ("median_s", "median s"),
    ("ms_per_var", "ms / tensor"),
    ("gib_s", "GiB/s"),
    ("ratio", "time / fastest"),
]


def add_parser(sub: Any) -> None:
    """Register the suite's options."""
    p = sub.add_parser(
        "small",
        help="many small tensors (a realistic model): hpckpt vs h5py vs np.savez",
        description=(
            "Save and restore a model-like set of tensors: COUNT tensors of log-uniform "
            "size between --min-size and --max-size (2/3 row-sharded kernels, 1/3 "
            "replicated vectors) plus --big row-sharded matrices. Reports the time per "
            "tensor in ms."
        ),
    )
    p.add_argument(
        "--counts",
        type=parse_int_list,
        default=parse_int_list("2000"),
        help="numbers of small tensors, comma-separated (default 2000; e.g. 100,2000,20000)",
    )
    p.add_argument("--min-size", type=parse_size, default=parse_size("1K"), help="default 1K")
    p.add_argument("--max-size", type=parse_size, default=parse_size("64K"), help="default 64K")
    p.add_argument("--big", type=int, default=4, help="number of big matrices (default 4)")
    p.add_argument(
        "--big-size", type=parse_size, default=parse_size("16M"), help="bytes each (default 16M)"
    )
    add_common_options(p, competitors=DEFAULT_COMPETITORS, reps=3)
    p.set_defaults(func=run)


def fastest(phase: str, medians: dict[str, float]) -> str | None:
    """The competitor with the smallest median."""
    return min(medians, key=medians.__getitem__) if medians else None


def run(args: argparse.Namespace) -> int:
    """Run the suite. Collective: call on all ranks."""
    from ..competitors import build
    from ..report import make_rows, markdown_table
    from ..runner import run_reps
    from ..util import format_size
    from ..workload import model

    ctx = open_run(args)
    names = competitor_names(args)
    rows: list[dict[str, Any]] = []
    workloads: list[str] = []
    try:
        ctx.log(
            f"small suite: {ctx.size} ranks, dir {ctx.directory}, "
            f"{'cold' if args.cold else 'warm'} reads, reps {args.reps} (+{args.warmup} warm-up)"
        )
        for count in args.counts:
            wl = model(
                ctx,
                count,
                min_bytes=args.min_size,
                max_bytes=args.max_size,
                nbig=args.big,
                big_bytes=args.big_size,
            )
            n = len(wl.tensors)
            label = f"{n} tensors ({format_size(wl.total_bytes)}) on {ctx.size} ranks"
            ctx.log(f"== {label}: {wl.description}")
            workloads.append(wl.description)
            competitors = build(names, ctx, wl)
            samples = run_reps(ctx, competitors, reps=args.reps, warmup=args.warmup, label=label)
            case = {
                "suite": "small",
                "count": count,
                "size": format_size(wl.total_bytes),
                "ranks": ctx.size,
                "cold": args.cold,
            }
            new = make_rows(samples, case=case, nbytes=wl.total_bytes, reference=fastest, nvars=n)
            rows += new
            if ctx.rank == 0:
                markdown_table(new, COLUMNS)
            del competitors, wl
            gc.collect()
        save_results(ctx, args, "small", rows, workloads)
    finally:
        ctx.close()
    return 0
