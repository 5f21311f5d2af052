"""Suite ``scale-model``: the index and the save/restore plans of 1,000-100,000-rank jobs,
built without MPI.

For synthetic jobs (FSDP-style: every tensor sharded over all ranks; TP x DP: tensors
sharded over a tensor-parallel dimension of 8 and replicated over data parallelism;
replicated: every tensor held by every rank, the big ones written in row blocks by all
of them) it builds the real index of format 2 with hpckpt's own code and reports its
size (bytes per tensor, per slice), the time to encode it (rank 0), to parse and
validate it (rank 0) and to parse it on trust (every other rank), the memory a rank
holds for it, what rank 0 gathers at save, and the time one rank spends planning its
share of a save and of a restore. Nothing here needs MPI or a disk.

Jobs whose index would not fit comfortably in memory here are measured on a sample of
their tensors and scaled (every tensor of a job has the same structure, so its record
has the same size); the table says so.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import time
import tracemalloc
from typing import Any

__all__ = ["add_parser", "run"]

COLUMNS = [
    ("kind", "job"),
    ("ranks", "ranks"),
    ("tensors", "tensors"),
    ("slices", "slices"),
    ("index_mb", "index MB"),
    ("bytes_per_tensor", "B / tensor (w/o slices)"),
    ("bytes_per_slice", "B / slice"),
    ("encode_s", "encode s (rank 0)"),
    ("validate_s", "parse+validate s (rank 0)"),
    ("trusted_s", "parse s (other ranks)"),
    ("rank_mem_mb", "index memory / rank MB"),
    ("gather_mb", "rank 0 gathers MB"),
    ("save_plan_ms", "save plan ms / rank"),
    ("restore_plan_ms", "restore plan ms / rank"),
    ("sampled", "sampled"),
]
FULL_LIMIT = 20_000_000  # slices built for real; above this, a sample of tensors


def add_parser(sub: Any) -> None:
    """Register the suite's options."""
    p = sub.add_parser(
        "scale-model",
        help="index size and plan costs for 1,000-100,000 simulated ranks (no MPI)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ranks", default="1000,10000,100000", help="comma-separated rank counts")
    p.add_argument("--tensors", default="100,1000,10000", help="comma-separated tensor counts")
    p.add_argument("--kinds", default="fsdp,tpdp,replicated", help="job kinds")
    p.add_argument("--json-out", default=None, help="write the rows as JSON")
    p.set_defaults(func=run)


def _job(kind: str, ranks: int, t: int) -> tuple[tuple[int, ...], Any, int]:
    """(shape, layout, itemsize) of tensor ``t`` of a job."""
    from hpckpt.layout import LayoutSpec

    if kind == "fsdp":
        return (ranks * 64 + t % 7, 1024), LayoutSpec(("dp", "unsharded"), ("dp",), (ranks,)), 2
    if kind == "tpdp":
        tp = 8
        spec = LayoutSpec(("unsharded", "tp"), ("dp", "tp"), (ranks // tp, tp))
        return (4096 + t % 5, 4096), spec, 2
    if kind == "replicated":
        return (8192 + t % 3, 1024), LayoutSpec(("unsharded", "unsharded"), ("x",), (ranks,)), 4
    raise ValueError(f"unknown job kind {kind!r}")


def _build(kind: str, ranks: int, tensors: int) -> Any:
    import numpy as np

    from hpckpt.io.index import CheckpointIndex, TensorEntry
    from hpckpt.io.write import derived_slicing

    entries = {}
    offset = 4096
    rng = np.random.default_rng(0)
    for t in range(tensors):
        shape, spec, isz = _job(kind, ranks, t)
        dt = np.dtype(f"<u{isz}")
        sl = derived_slicing(shape, spec, dt)
        crcs = rng.integers(0, 1 << 32, len(sl), dtype=np.uint32)
        key = f"model/layers/{t}/weight/.ATTRIBUTES/VARIABLE_VALUE"
        entries[key] = TensorEntry(
            key, f"model.layers.{t}.weight", dt, shape, offset, spec, sl, crcs
        )
        offset += math.prod(shape) * isz
    return CheckpointIndex(
        "ckpt-1.data-0123456789abcdef.h5", offset, entries, ranks, time.time(), graph=None
    )


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure(kind: str, ranks: int, tensors: int) -> dict[str, Any]:
    """One row of the table."""
    import numpy as np

    from hpckpt.io.index_parse import parse_index
    from hpckpt.io.read import ReadRequest, _plan
    from hpckpt.io.write import derived_slicing
    from hpckpt.layout import LayoutSpec

    shape0, spec0, isz0 = _job(kind, ranks, 0)
    per_tensor_slices = len(derived_slicing(shape0, spec0, np.dtype(f"<u{isz0}")))
    slices = per_tensor_slices * tensors
    n = tensors if slices <= FULL_LIMIT else max(1, FULL_LIMIT // per_tensor_slices)
    scale = tensors / n
    index = _build(kind, ranks, n)
    text, enc = _timed(index.to_json)
    nbytes = len(text)
    _, val = _timed(lambda t=text: parse_index(t))
    gc.collect()
    tracemalloc.start()
    parsed, trusted = _timed(lambda t=text: parse_index(t, trusted=True))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # per tensor without its slices: the record with an empty checksum string
    one = json.loads(text)["tensors"]
    rec = next(iter(one.values()))
    no_crc = dict(rec, checksums="")
    per_tensor = len(json.dumps(no_crc, separators=(",", ":"))) + len(next(iter(one))) + 4
    crc_chars = len(rec["checksums"])
    # a save: one rank's pieces of every tensor (the middle rank)
    me = ranks // 2

    def save_plan() -> None:
        from hpckpt.io.slicing import mesh_coords

        for t in range(n):
            shape, spec, isz = _job(kind, ranks, t)
            sl = derived_slicing(shape, spec, np.dtype(f"<u{isz}"))
            sl.written_by(mesh_coords(me, spec.mesh_shape), t)

    _, splan = _timed(save_plan)
    # a restore on half the ranks, resharded: one rank's plan
    half = max(ranks // 2, 1)
    reqs = []
    for e in list(parsed.tensors.values())[: min(n, 200)]:
        spec = LayoutSpec(("r", "unsharded"), ("r",), (half,))
        sl = spec.shard(e.shape, [min(me, half - 1)])
        reqs.append(
            ReadRequest(
                e,
                tuple(s.start for s in sl),
                tuple(s.stop - s.start for s in sl),
                layout=spec,
                mesh_rank=min(me, half - 1),
            )
        )
    _, rplan = _timed(lambda: _plan(reqs, {}, True, min(me, half - 1)))
    rplan *= n / max(len(reqs), 1)
    row = {
        "kind": kind,
        "ranks": ranks,
        "tensors": tensors,
        "slices": slices,
        "index_mb": round(nbytes * scale / 1e6, 2),
        "bytes_per_tensor": per_tensor,
        "bytes_per_slice": round(crc_chars / max(per_tensor_slices, 1), 2),
        "encode_s": round(enc * scale, 3),
        "validate_s": round(val * scale, 3),
        "trusted_s": round(trusted * scale, 3),
        "rank_mem_mb": round(peak * scale / 1e6, 2),
        "gather_mb": round(4 * slices / 1e6, 2),
        "save_plan_ms": round(1000 * splan * scale, 2),
        "restore_plan_ms": round(1000 * rplan * scale, 2),
        "sampled": "" if scale == 1 else f"{n} of {tensors} tensors",
    }
    del index, parsed, text
    gc.collect()
    return row


def run(args: argparse.Namespace) -> int:
    """Run the model (one process, no MPI needed)."""
    from ..report import markdown_table

    rows = []
    for kind in args.kinds.split(","):
        for r in (int(x) for x in args.ranks.split(",")):
            for t in (int(x) for x in args.tensors.split(",")):
                row = measure(kind, r, t)
                rows.append(row)
                print(json.dumps(row), flush=True)
    markdown_table(rows, COLUMNS)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"suite": "scale-model", "rows": rows}, f, indent=1)
    return 0
