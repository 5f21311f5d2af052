"""``hpckpt diff A B``: which tensors were added, removed, changed or are identical."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from .. import io
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
from .values import dtype_name, kind_of, read_scalar, read_state

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


def _state_change(
    la: Loaded, lb: Loaded, ea: TensorEntry, eb: TensorEntry, kind: str, binary: bool
) -> dict[str, Any] | None:
    """``None`` if a Python (or per-rank) state is unchanged, else its ``old -> new``."""
    sa, sb = read_state(la, ea, kind), read_state(lb, eb, kind)
    if sa.raw is None or sb.raw is None:
        if ea.nbytes == eb.nbytes and ea.dtype == eb.dtype:
            xa = la.read(ea)
            xb = lb.read(eb)
            if np.array_equal(xa, xb):
                return None
        return {"change": "state", "old": None, "new": None}
    if sa.raw == sb.raw and (sa.ranks is None) == (sb.ranks is None):
        return None
    return {"change": "state", "old": sa.texts(binary), "new": sb.texts(binary)}


def _brief(e: TensorEntry) -> dict[str, Any]:
    return {
        "dtype": dtype_name(e),
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
    la: Loaded = load(path_a)
    lb: Loaded = load(path_b)
    ta, tb = la.index.tensors, lb.index.tensors
    added = [{"key": k, **_brief(tb[k])} for k in sorted(set(tb) - set(ta))]
    removed = [{"key": k, **_brief(ta[k])} for k in sorted(set(ta) - set(tb))]
    changed: list[dict[str, Any]] = []
    identical: list[dict[str, Any]] = []
    common = sorted(set(ta) & set(tb))
    total = sum(ta[k].nbytes + tb[k].nbytes for k in common)
    with Progress(total, "diff", enabled=progress) as bar:
        for k in common:
            ea, eb = ta[k], tb[k]
            base = {"key": k, "layout_changed": _layout_changed(ea, eb)}
            kind, binary = kind_of(la, k)
            if kind != "variable":
                c = _state_change(la, lb, ea, eb, kind, binary)
                bar.update(ea.nbytes + eb.nbytes)
                if c is None:
                    identical.append({**base, "dtype": "state", "shape": list(ea.shape)})
                else:
                    changed.append({**base, **c, "a": _brief(ea), "b": _brief(eb)})
                continue
            if ea.dtype != eb.dtype or ea.shape != eb.shape or ea.logical_dtype != eb.logical_dtype:
                what = []
                if ea.dtype != eb.dtype or ea.logical_dtype != eb.logical_dtype:
                    what.append("dtype")
                if ea.shape != eb.shape:
                    what.append("shape")
                changed.append({**base, "change": "+".join(what), "a": _brief(ea), "b": _brief(eb)})
                bar.update(ea.nbytes + eb.nbytes)
                continue
            xa = la.read(ea, on_bytes=bar.update)
            xb = lb.read(eb, on_bytes=bar.update)
            if ea.logical_dtype is not None:  # compare the values, not the bits
                xa = io.as_logical(ea, xa).astype(np.float64)
                xb = io.as_logical(eb, xb).astype(np.float64)
            ndiff, dmax = compare_arrays(xa, xb, atol)
            if ndiff and not ea.shape:
                changed.append(
                    {
                        **base,
                        "change": "value",
                        "a": _brief(ea),
                        "b": _brief(eb),
                        "old": read_scalar(la, ea),
                        "new": read_scalar(lb, eb),
                        "num_different": ndiff,
                        "num_elements": 1,
                        "max_abs_diff": _number(dmax, xa.dtype.kind),
                    }
                )
            elif ndiff:
                changed.append(
                    {
                        **base,
                        "change": "values",
                        "a": _brief(ea),
                        "b": _brief(eb),
                        "num_different": ndiff,
                        "num_elements": int(xa.size),
                        "max_abs_diff": _number(dmax, xa.dtype.kind),
                    }
                )
            else:
                identical.append({**base, "dtype": dtype_name(ea), "shape": list(ea.shape)})
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


def _state_desc(text: Any) -> str:
    if text is None:
        return "(too large to show)"
    if isinstance(text, list):
        return "[" + ", ".join(repr(t) for t in text[:4]) + (", ...]" if len(text) > 4 else "]")
    return repr(text)


def render(report: dict[str, Any], *, show_all: bool = False) -> list[str]:
    """The human-readable ``diff`` output."""
    lines = [f"--- {report['a']}", f"+++ {report['b']}"]
    for t in report["removed"]:
        lines.append(f"- removed    {t['key']}  {t['dtype']} {fmt_shape(t['shape'])}")
    for t in report["added"]:
        lines.append(f"+ added      {t['key']}  {t['dtype']} {fmt_shape(t['shape'])}")
    for c in report["changed"]:
        a, b = c["a"], c["b"]
        if c["change"] == "value":
            lines.append(f"~ changed    {c['key']}  {c['old']} -> {c['new']}")
        elif c["change"] == "state":
            lines.append(
                f"~ changed    {c['key']}  {_state_desc(c['old'])} -> {_state_desc(c['new'])}"
            )
        elif c["change"] == "values":
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
        note = "  (layout changed)" if u["layout_changed"] else ""
        if show_all:
            lines.append(f"= identical  {u['key']}  {u['dtype']} {fmt_shape(u['shape'])}{note}")
        elif note:
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
