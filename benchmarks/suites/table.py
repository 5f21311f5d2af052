"""Suite ``table``: Markdown tables from ``--json-out`` files (no MPI needed)."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["add_parser", "run"]


def _columns(suite: str) -> list[tuple[str, str]]:
    """The suite's own table columns, with the rank count first."""
    from . import async_save, bandwidth, reshard, small

    module = {"bandwidth": bandwidth, "small": small, "reshard": reshard, "async": async_save}
    return [("ranks", "ranks"), *module.get(suite, bandwidth).COLUMNS]


def add_parser(sub: Any) -> None:
    """Register the suite's options."""
    p = sub.add_parser(
        "table",
        help="print Markdown tables from JSON result files",
        description="Print one Markdown table per result file (bandwidth, small, reshard, async).",
    )
    p.add_argument("inputs", nargs="+", metavar="JSON", help="result files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the tables. Does not need MPI."""
    from ..report import markdown_table

    for path in args.inputs:
        with open(path) as f:
            doc = json.load(f)
        docs = [r["result"] for r in doc["runs"]] if "runs" in doc else [doc]
        for d in docs:
            m = d.get("machine", {})
            print(f"\n{path}: {d.get('suite')} on {m.get('ranks')} ranks, {m.get('date')}")
            print(f"command: {d.get('command')}\n")
            markdown_table(d.get("results", []), _columns(d.get("suite", "")))
    return 0
