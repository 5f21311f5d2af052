"""Options and steps shared by the MPI suites."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from ..util import parse_kv

if TYPE_CHECKING:
    from ..context import RunContext

__all__ = ["add_common_options", "competitor_names", "open_run", "save_results"]


def add_common_options(
    p: argparse.ArgumentParser, *, competitors: str | None, reps: int = 5
) -> None:
    """``--reps --warmup --dir --json-out --cold --keep --mpi-info --competitors -v``."""
    g = p.add_argument_group("common options")
    g.add_argument("--reps", type=int, default=reps, help=f"timed repetitions (default {reps})")
    g.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default 1)")
    g.add_argument(
        "--dir",
        default=None,
        help="parent of the fresh run directory (default $HPCKPT_BENCH_DIR or /tmp); "
        "use the file system you want to measure",
    )
    g.add_argument("--json-out", metavar="FILE", help="write results and machine info as JSON")
    g.add_argument(
        "--cold",
        action="store_true",
        help="evict the files from the page cache before every timed read "
        "(posix_fadvise DONTNEED); default: warm reads",
    )
    g.add_argument("--keep", action="store_true", help="keep the run directory")
    g.add_argument(
        "--mpi-info",
        type=parse_kv,
        default={},
        metavar="K=V[,K=V]",
        help="MPI-IO hints for hpckpt (CheckpointOptions(mpi_info=...)) and the raw MPI-IO "
        "competitor, e.g. romio_cb_write=disable,cb_nodes=2",
    )
    if competitors is None:
        p.set_defaults(competitors=None, default_competitors="")
        g.add_argument("-v", "--verbose", action="store_true", help="print every sample")
        return
    g.add_argument(
        "--competitors",
        default=None,
        help=f"comma-separated competitors (default {competitors}, plus torch-dcp when "
        "torch imports; all names: python -m benchmarks --help)",
    )
    p.set_defaults(default_competitors=competitors)
    g.add_argument("-v", "--verbose", action="store_true", help="print every sample")


def competitor_names(args: argparse.Namespace, *, with_torch: bool = True) -> list[str]:
    """The requested competitors; the default list gains torch-dcp when torch imports."""
    from ..catalog import DESCRIPTIONS
    from ..competitors import torch_available

    text = args.competitors or args.default_competitors
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DESCRIPTIONS]
    if unknown:
        raise SystemExit(f"unknown competitor(s) {unknown}; known: {', '.join(DESCRIPTIONS)}")
    if args.competitors is None and with_torch and torch_available():
        names.append("torch-dcp")
    return names


def open_run(args: argparse.Namespace) -> RunContext:
    """The run context (fresh shared directory).

    Collective: call on all ranks.
    """
    from ..context import RunContext

    if args.reps < 1 or args.warmup < 0:
        raise SystemExit("--reps must be >= 1 and --warmup >= 0")
    return RunContext.create(
        args.dir, cold=args.cold, mpi_info=args.mpi_info, keep=args.keep, verbose=args.verbose
    )


def _jsonable_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in ("func", "default_competitors")}


def save_results(
    ctx: RunContext,
    args: argparse.Namespace,
    suite: str,
    rows: list[dict[str, Any]],
    workloads: list[str],
) -> None:
    """Write the JSON document (rank 0) if ``--json-out`` was given.

    Collective: call on all ranks (machine info is gathered).
    """
    from ..machine import machine_info
    from ..report import write_json

    info = machine_info(ctx.comm, ctx.directory)
    if ctx.rank != 0 or not args.json_out:
        return
    write_json(
        args.json_out,
        {
            "suite": suite,
            "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
            "args": _jsonable_args(args),
            "machine": info,
            "workloads": workloads,
            "results": rows,
        },
    )
    print(f"wrote {args.json_out}", flush=True)
