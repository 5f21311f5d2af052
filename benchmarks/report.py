"""Result rows: statistics, ratios, Markdown tables and the JSON document."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .runner import Samples
from .util import GIB, median

__all__ = ["make_rows", "markdown_table", "write_json"]


def make_rows(
    samples: Samples,
    *,
    case: dict[str, Any],
    nbytes: int,
    reference: Callable[[str, dict[str, float]], str | None],
    nvars: int | None = None,
) -> list[dict[str, Any]]:
    """One row per (phase, competitor): median/min/max seconds, GiB/s and a ratio.

    Args:
        samples: The runner's samples.
        case: What identifies the measurement (size, mesh, ...), copied into each row.
        nbytes: Payload bytes, for GiB/s.
        reference: ``reference(phase, medians)`` names the competitor that ratios
            are taken against (``medians`` maps names to median seconds of that phase).
        nvars: Number of tensors, for milliseconds per tensor.
    """
    rows = []
    phases = sorted({p for p, _ in samples}, key=["save", "restore"].index)
    for phase in phases:
        medians = {n: median(s) for (p, n), s in samples.items() if p == phase and s}
        ref = reference(phase, medians)
        for (p, name), s in samples.items():
            if p != phase or not s:
                continue
            med = medians[name]
            row = {
                **case,
                "op": phase,
                "competitor": name,
                "median_s": med,
                "min_s": min(s),
                "max_s": max(s),
                "samples": list(s),
                "bytes": nbytes,
                "gib_s": nbytes / GIB / med if med > 0 else math.inf,
                "ratio_to": ref,
                "ratio": med / medians[ref] if ref in medians and medians[ref] > 0 else None,
            }
            if nvars:
                row["nvars"] = nvars
                row["ms_per_var"] = med * 1e3 / nvars
            rows.append(row)
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            return str(v)
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def markdown_table(
    rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]], out: Any = None
) -> str:
    """A Markdown table of ``rows``: ``columns`` are ``(key, header)`` pairs; also printed."""
    lines = [
        "| " + " | ".join(h for _, h in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k)) for k, _ in columns) + " |")
    text = "\n".join(lines)
    print(text, file=out or sys.stdout, flush=True)
    return text


def write_json(path: str, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` (parent directories created)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)
        f.write("\n")
