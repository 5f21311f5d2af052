"""``hpckpt diff A B``: which tensors were added, removed, changed or are identical."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ..io.index import TensorEntry
from .common import (
    EXIT_DIFFERENT,
    EXIT_OK,
    Loaded,
    dump_json,
    emit,
    fmt_layout,
    fmt_mesh,
    fmt_shape,
    json_float,
    load,
)
from .progress import Progress

__all__ = ["add_parser", "compare_arrays", "diff_checkpoints", "run"]

_CHUNK = 1 << 20  # elements compared at a time (bounds the temporaries)


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``diff``."""
    p = sub.add_parser(
        "diff",
        parents=parents,
        help="compare the tensors of two checkpoints",
        description=(
            "Compare two checkpoints key by key: tensors added (only in B), removed (only in "
            "A), changed (shape, dtype or values: max abs difference, number of differing "
            "elements) and identical. Layout changes alone are noted, not counted as "
            "changes. NaNs at the same position compare equal. Every tensor read is "
            "checksum-verified."
        ),
    )
    p.add_argument("a", metavar="A", help="checkpoint prefix, .index.json or directory")
    p.add_argument("b", metavar="B", help="checkpoint prefix, .index.json or directory")
    p.add_argument(
        "--atol",
        type=float,
        default=0.0,
        help="elements whose absolute difference is at most ATOL count as equal (default 0)",
    )
    p.add_argument(
        "--exit-code",
        action="store_true",
        help=f"exit {EXIT_DIFFERENT} when the checkpoints differ (default: exit 0)",
    )
    p.add_argument(
        "--all", action="store_true", help="also list the identical tensors in the text output"
    )
    p.set_defaults(run=run)


def compare_arrays(a: np.ndarray, b: np.ndarray, atol: float = 0.0) -> tuple[int, float]:
    """Count the differing elements of two same-shape arrays and their max abs difference.

    NaNs at the same position are equal; a NaN against a number makes the max
    difference NaN.

    Returns:
        ``(number of differing elements, max abs difference over them or 0.0)``.
    """
    fa = a.reshape(-1)
    fb = b.reshape(-1)
    kind = a.dtype.kind
    ndiff = 0
    dmax = 0.0
    saw_nan = False
    with np.errstate(invalid="ignore", over="ignore"):
        for i in range(0, fa.size, _CHUNK):
            x = fa[i : i + _CHUNK]
            y = fb[i : i + _CHUNK]
            neq = x != y
            if kind in "fc":
                neq &= ~(np.isnan(x) & np.isnan(y))
            if not neq.any():
                continue
            xs, ys = x[neq], y[neq]
            if kind == "b":
                d = np.ones(xs.shape, dtype=np.float64)
            elif kind in "fc":
                wide = np.complex128 if kind == "c" else np.float64
                d = np.abs(xs.astype(wide) - ys.astype(wide)).astype(np.float64)
            else:
                d = np.abs(xs.astype(np.float64) - ys.astype(np.float64))
            if atol > 0:
                keep = ~(d <= atol)  # NaN differences stay different
                d = d[keep]
            if not d.size:
                continue
            ndiff += int(d.size)
            nan = np.isnan(d)
            if nan.any():
                saw_nan = True
                d = d[~nan]
            if d.size:
                dmax = max(dmax, float(d.max()))
    return ndiff, (float("nan") if saw_nan else dmax)


def _brief(e: TensorEntry) -> dict[str, Any]:
    return {
        "dtype": np.dtype(e.dtype).name,
        "shape": list(e.shape),
        "sharding_specs": list(e.sharding_specs),
        "mesh": {"dim_names": list(e.mesh_dim_names), "shape": list(e.mesh_shape)},
        "nbytes": e.nbytes,
    }


def _layout_changed(ea: TensorEntry, eb: TensorEntry) -> bool:
    return ea.layout_dict() != eb.layout_dict()


def _number(x: float, kind: str) -> float | int | str:
    if kind in "iub" and np.isfinite(x) and float(x).is_integer() and abs(x) < 2**53:
        return int(x)
    return json_float(x)


def diff_checkpoints(
    path_a: str, path_b: str, *, atol: float = 0.0, progress: bool | None = None
) -> dict[str, Any]:
    """The report of ``diff`` as a JSON-able dict.

    Raises:
        NotFoundError: No checkpoint at one of the paths.
        CorruptCheckpointError: One of them is damaged (or a tensor fails its checksum).
    """
    la: Loaded = load(path_a, graph=False)
    lb: Loaded = load(path_b, graph=False)
    ta, tb = la.index.tensors, lb.index.tensors
    added = [{"key": k, **_brief(tb[k])} for k in sorted(set(tb) - set(ta))]
    removed = [{"key": k, **_brief(ta[k])} for k in sorted(set(ta) - set(tb))]
    changed: list[dict[str, Any]] = []
    identical: list[dict[str, Any]] = []
    common = sorted(set(ta) & set(tb))
    comparable = [k for k in common if ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape]
    total = sum(2 * ta[k].nbytes for k in comparable)
    with Progress(total, "diff", enabled=progress) as bar:
        for k in common:
            ea, eb = ta[k], tb[k]
            base = {"key": k, "layout_changed": _layout_changed(ea, eb)}
            if ea.dtype != eb.dtype or ea.shape != eb.shape:
                what = []
                if ea.dtype != eb.dtype:
                    what.append("dtype")
                if ea.shape != eb.shape:
                    what.append("shape")
                changed.append({**base, "change": "+".join(what), "a": _brief(ea), "b": _brief(eb)})
                continue
            xa = la.read(ea)
            bar.update(ea.nbytes)
            xb = lb.read(eb)
            bar.update(eb.nbytes)
            ndiff, dmax = compare_arrays(xa, xb, atol)
            if ndiff:
                changed.append(
                    {
                        **base,
                        "change": "values",
                        "a": _brief(ea),
                        "b": _brief(eb),
                        "num_different": ndiff,
                        "num_elements": int(xa.size),
                        "max_abs_diff": _number(dmax, ea.dtype.kind),
                    }
                )
            else:
                identical.append(
                    {**base, "dtype": np.dtype(ea.dtype).name, "shape": list(ea.shape)}
                )
    same = not (added or removed or changed)
    return {
        "a": la.prefix,
        "b": lb.prefix,
        "atol": atol,
        "identical": same,
        "added": added,
        "removed": removed,
        "changed": changed,
        "unchanged": identical,
        "summary": {
            "added": len(added),
            "removed": len(removed),
            "changed": len(changed),
            "unchanged": len(identical),
        },
    }


def _desc(t: dict[str, Any]) -> str:
    return (
        f"{t['dtype']} {fmt_shape(t['shape'])} layout {fmt_layout(t['sharding_specs'])} "
        f"mesh {fmt_mesh(t['mesh']['dim_names'], t['mesh']['shape'])}"
    )


def render(report: dict[str, Any], *, show_all: bool = False) -> list[str]:
    """The human-readable ``diff`` output."""
    lines = [f"--- {report['a']}", f"+++ {report['b']}"]
    for t in report["removed"]:
        lines.append(f"- removed    {t['key']}  {t['dtype']} {fmt_shape(t['shape'])}")
    for t in report["added"]:
        lines.append(f"+ added      {t['key']}  {t['dtype']} {fmt_shape(t['shape'])}")
    for c in report["changed"]:
        a, b = c["a"], c["b"]
        if c["change"] == "values":
            md = c["max_abs_diff"]
            md = f"{md:.6g}" if isinstance(md, float) else md
            lines.append(
                f"~ changed    {c['key']}  values: {c['num_different']} of {c['num_elements']} "
                f"elements differ, max abs diff {md}"
            )
        else:
            lines.append(
                f"~ changed    {c['key']}  {c['change']}: {a['dtype']} {fmt_shape(a['shape'])} "
                f"-> {b['dtype']} {fmt_shape(b['shape'])}"
            )
        if c["layout_changed"]:
            lines.append(f"             layout: {_desc(a)} -> {_desc(b)}")
    for u in report["unchanged"]:
        if show_all:
            lines.append(f"= identical  {u['key']}  {u['dtype']} {fmt_shape(u['shape'])}")
        if u["layout_changed"]:
            lines.append(f"  (identical values, layout changed)  {u['key']}")
    s = report["summary"]
    verdict = "identical" if report["identical"] else "different"
    lines.append(
        f"{verdict}: {s['added']} added, {s['removed']} removed, {s['changed']} changed, "
        f"{s['unchanged']} identical"
    )
    return lines


def run(args: argparse.Namespace) -> int:
    """Run ``diff``: exit 0 (or 3 with ``--exit-code`` when the checkpoints differ)."""
    report = diff_checkpoints(args.a, args.b, atol=args.atol, progress=args.progress)
    if args.json:
        dump_json(report)
    else:
        emit(render(report, show_all=args.all))
    if args.exit_code and not report["identical"]:
        return EXIT_DIFFERENT
    return EXIT_OK
