"""Suite ``reshard``: restore onto another layout or mesh vs a same-layout restore."""

from __future__ import annotations

import argparse
import gc
import json
import os
from typing import Any

from ..util import parse_sizes
from .common import add_common_options, open_run, save_results

__all__ = ["TARGETS", "add_parser", "run"]

TARGETS = {
    "same": ("1d", ["x", "unsharded"]),
    "cols": ("1d", ["unsharded", "x"]),
    "2d": ("2d", ["x", "y"]),
    "2d-t": ("2d", ["y", "x"]),
    "replicated": ("1d", ["unsharded", "unsharded"]),
}
"""Target layouts: mesh kind and sharding specs. The checkpoint is saved as ``same``."""

COLUMNS = [
    ("size", "size"),
    ("competitor", "restore"),
    ("median_s", "median s"),
    ("min_s", "min s"),
    ("gib_s", "GiB/s"),
    ("ratio", "time / same"),
]


def add_parser(sub: Any) -> None:
    """Register the suite's options."""
    p = sub.add_parser(
        "reshard",
        help="restore onto another layout/mesh vs the same layout",
        description=(
            "Save big matrices row-sharded on a 1-D mesh with hpckpt once, then time "
            "restores onto target layouts: same (rows over x), cols (columns over x), "
            "2d (rows over x, columns over y of a 2-D mesh), 2d-t (rows over y, columns "
            "over x) and replicated (every rank reads everything; GiB/s counts the "
            "checkpoint once). Plain h5py reading the same file for the same target "
            "layouts is the reference (h5py:<target>). The rank count is the launcher's."
        ),
    )
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("256M"), help="default 256M")
    p.add_argument("--nvars", type=int, default=4, help="number of tensors (default 4)")
    p.add_argument("--cols", type=int, default=4096, help="matrix columns (default 4096)")
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated target layouts (default {','.join(TARGETS)})",
    )
    p.add_argument("--no-h5py", action="store_true", help="leave out the plain h5py reader")
    add_common_options(p, competitors=None)
    p.set_defaults(func=run)


def _datasets(prefix: str, names: list[str]) -> tuple[str, dict[str, str]]:
    """The data file and tensor-name -> dataset map, from hpckpt's index (format v1)."""
    with open(prefix + ".index.json") as f:
        index = json.load(f)
    path = os.path.join(os.path.dirname(prefix), index["data_file"]["name"])
    tensors = index["tensors"]
    key = "model/vars/{}/.ATTRIBUTES/VARIABLE_VALUE"
    return path, {n: tensors[key.format(n)]["dataset"] for n in names}


def run(args: argparse.Namespace) -> int:
    """Run the suite. Collective: call on all ranks."""
    from ..competitors import H5pyReader, HpckptCompetitor, HpckptRestoreVariant
    from ..report import make_rows, markdown_table
    from ..runner import run_reps
    from ..util import format_size
    from ..workload import big_matrices, make_mesh, relayout

    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise SystemExit(f"unknown target(s) {unknown}; known: {', '.join(TARGETS)}")
    ctx = open_run(args)
    rows: list[dict[str, Any]] = []
    workloads: list[str] = []
    try:
        meshes = {"1d": make_mesh(ctx, "1d"), "2d": make_mesh(ctx, "2d")}
        ctx.log(f"reshard suite: {ctx.size} ranks, dir {ctx.directory}")
        for size in args.sizes:
            src = big_matrices(ctx, size, args.nvars, cols=args.cols, mesh_kind="1d")
            label = f"{format_size(src.total_bytes)} on {ctx.size} ranks"
            ctx.log(f"== {label}: saved as {src.description}")
            workloads.append(src.description)
            saver = HpckptCompetitor(ctx, src, name="hpckpt-source")
            saver.prepare_save()
            saver.save()
            data_path, dsets = None, None
            if ctx.rank == 0:
                data_path, dsets = _datasets(saver.prefix, [t.name for t in src.tensors])
            data_path, dsets = ctx.comm.bcast((data_path, dsets), root=0)
            competitors = []
            for target in targets:
                kind, specs = TARGETS[target]
                wl = relayout(ctx, src, meshes[kind], specs, target)
                workloads.append(wl.description)
                competitors.append(HpckptRestoreVariant(ctx, wl, saver.prefix, f"hpckpt:{target}"))
                if not args.no_h5py:
                    competitors.append(H5pyReader(ctx, wl, f"h5py:{target}", data_path, dsets))
            samples = run_reps(
                ctx,
                competitors,
                reps=args.reps,
                warmup=args.warmup,
                phases=("restore",),
                label=label,
            )
            case = {
                "suite": "reshard",
                "size": format_size(src.total_bytes),
                "ranks": ctx.size,
                "cold": args.cold,
            }

            def same(phase: str, medians: dict[str, float]) -> str | None:
                return "hpckpt:same" if "hpckpt:same" in medians else None

            new = make_rows(samples, case=case, nbytes=src.total_bytes, reference=same)
            rows += new
            if ctx.rank == 0:
                markdown_table(new, COLUMNS)
            del competitors, src, saver
            gc.collect()
        save_results(ctx, args, "reshard", rows, workloads)
    finally:
        ctx.close()
    return 0
