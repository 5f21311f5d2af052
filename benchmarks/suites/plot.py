"""Suite ``plot``: bandwidth against ranks and against size, from ``--json-out`` files.

Needs matplotlib (``pip install matplotlib``); the other suites do not.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

__all__ = ["add_parser", "load_rows", "run"]


def add_parser(sub: Any) -> None:
    """Register the suite's options."""
    p = sub.add_parser(
        "plot",
        help="PNG of bandwidth vs ranks and vs size from bandwidth JSON files (matplotlib)",
        description=(
            "Read JSON files written by 'bandwidth --json-out' (e.g. one per rank count) "
            "and draw GiB/s against ranks (at one size) and against size (at one rank "
            "count); bars span the fastest and slowest sample. Runs without MPI."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="JSON", help="result files")
    p.add_argument("-o", "--out", default="bandwidth.png", help="PNG path (default bandwidth.png)")
    p.add_argument(
        "--size", default=None, help="size for the ranks plot, e.g. 1G (default: the largest)"
    )
    p.add_argument(
        "--ranks", type=int, default=None, help="ranks for the size plot (default: the most)"
    )
    p.add_argument(
        "--competitors", default=None, help="comma-separated competitors to show (default all)"
    )
    p.add_argument("--ops", default="save,restore", help="ops to show (default save,restore)")
    p.set_defaults(func=run)


def _documents(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The result documents in ``doc``: itself, or the runs of a merged ``scaling.json``."""
    if "runs" in doc:  # slurm/scaling.sbatch: {"runs": [{"ranks", "file", "result": doc}]}
        return [r["result"] for r in doc["runs"] if isinstance(r.get("result"), dict)]
    return [doc]


def load_rows(paths: list[str]) -> list[dict[str, Any]]:
    """The bandwidth rows of every file (later files win on identical keys).

    Accepts ``--json-out`` files and the ``scaling.json`` that ``slurm/scaling.sbatch``
    gathers.
    """
    merged: dict[tuple, dict[str, Any]] = {}
    for path in paths:
        with open(path) as f:
            top = json.load(f)
        rows = [r for doc in _documents(top) for r in doc.get("results", [])]
        for r in rows:
            if r.get("suite") != "bandwidth":
                continue
            key = (r["ranks"], r["bytes"], r.get("mesh"), r.get("cold"), r["op"], r["competitor"])
            merged[key] = r
    return list(merged.values())


def _series(
    rows: list[dict[str, Any]], x_key: str
) -> dict[tuple[str, str], list[tuple[float, float, float, float]]]:
    out: dict[tuple[str, str], list[tuple[float, float, float, float]]] = defaultdict(list)
    for r in rows:
        gib = r["bytes"] / (1 << 30)
        out[(r["competitor"], r["op"])].append(
            (r[x_key], r["gib_s"], gib / r["max_s"], gib / r["min_s"])
        )
    return {k: sorted(v) for k, v in out.items()}


def _draw(ax: Any, series: dict, xlabel: str, title: str, log_x: bool) -> None:
    styles = {"save": ("o", "-"), "restore": ("s", "--")}
    colors: dict[str, Any] = {}
    for (name, op), pts in sorted(series.items()):
        if name not in colors:
            colors[name] = f"C{len(colors) % 10}"
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        lo = [p[1] - p[2] for p in pts]
        hi = [p[3] - p[1] for p in pts]
        marker, line = styles.get(op, ("^", ":"))
        ax.errorbar(
            xs,
            ys,
            yerr=[lo, hi],
            marker=marker,
            linestyle=line,
            color=colors[name],
            capsize=3,
            label=f"{name} {op}",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("GiB/s (median; bars: min..max)")
    ax.set_title(title)
    ax.set_yscale("log")
    ax.set_xscale("log", base=2)
    if not log_x:  # rank counts: label the measured ones
        ticks = sorted({p[0] for pts in series.values() for p in pts})
        ax.set_xticks(ticks, [str(int(t)) for t in ticks])
        ax.minorticks_off()
    ax.grid(True, which="both", alpha=0.3)


def run(args: argparse.Namespace) -> int:
    """Draw the PNG. Does not need MPI."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(
            "the plot suite needs matplotlib: pip install matplotlib (or pip install .[bench])"
        ) from None
    from ..util import format_size, parse_size

    rows = load_rows(args.inputs)
    ops = {o.strip() for o in args.ops.split(",")}
    rows = [r for r in rows if r["op"] in ops]
    if args.competitors:
        keep = {c.strip() for c in args.competitors.split(",")}
        rows = [r for r in rows if r["competitor"] in keep]
    if not rows:
        raise SystemExit("no bandwidth results in the given files")
    size = parse_size(args.size) if args.size else max(r["bytes"] for r in rows)
    # Sizes are the payload actually allocated: match within 1 %.
    by_size = [r for r in rows if abs(r["bytes"] - size) <= size / 100]
    ranks = args.ranks or max(r["ranks"] for r in rows)
    by_ranks = [r for r in rows if r["ranks"] == ranks]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 5.5))
    _draw(ax1, _series(by_size, "ranks"), "ranks", f"{format_size(size)} payload", False)
    _draw(ax2, _series(by_ranks, "bytes"), "payload bytes", f"{ranks} ranks", True)
    handles, labels = ax1.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    for h, lab in zip(h2, l2, strict=True):
        if lab not in labels:
            handles.append(h)
            labels.append(lab)
    fig.legend(handles, labels, loc="center right", fontsize="small")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0
