"""How much of an hpckpt restore is fresh memory, and how much is checksums?

``hpckpt.io.protocol.read_tensors`` reads into arrays it allocates with
``np.empty`` on every restore and the checkpoint then copies them into
``Variable.local``. This probe swaps the module's ``np`` for one whose ``empty``
hands back the same buffers on every call, and times four variants in rotated
order, next to the raw collective read::

    mpirun -n 4 python -m mpi4py -m benchmarks.probes.fresh_buffers --size 1G --reps 7

"fresh" is hpckpt as shipped; "reuse" reads into recycled buffers; "crc" /
"nocrc" is ``verify_checksums``. The differences separate the cost of faulting
in new pages (large on VMs that return freed memory to the host) from the
cost of checksum verification.
"""

from __future__ import annotations

import argparse
import types
from typing import Any

import numpy as np

from ..competitors import build
from ..context import RunContext
from ..util import median, parse_size
from ..workload import big_matrices


class _RecyclingNumpy(types.ModuleType):
    """``numpy`` whose ``empty`` returns the same array for the n-th call of each restore."""

    def __init__(self) -> None:
        super().__init__("numpy_recycling")
        self.recycle = False
        self.calls = 0
        self.cache: dict[tuple, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)

    def empty(self, shape: Any, dtype: Any = float) -> np.ndarray:
        if not self.recycle:
            return np.empty(shape, dtype)
        key = (tuple(np.atleast_1d(shape)), np.dtype(dtype).str, self.calls)
        self.calls += 1
        if key not in self.cache:
            self.cache[key] = np.empty(shape, dtype)
        return self.cache[key]


def main() -> None:
    """Run the probe. Collective: call on all ranks."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.probes.fresh_buffers")
    p.add_argument("--size", type=parse_size, default=parse_size("1G"))
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args()

    import hpckpt.io.protocol as protocol

    fake = _RecyclingNumpy()
    protocol.np = fake  # type: ignore[attr-defined]
    ctx = RunContext.create(None)
    try:
        wl = big_matrices(ctx, args.size, 4)
        hp, nocrc, raw = build(["hpckpt", "hpckpt-nocrc", "mpiio"], ctx, wl)
        for c in (hp, raw):
            c.prepare_save()
            c.save()
        variants = [
            ("fresh, crc", hp, False),
            ("reuse, crc", hp, True),
            ("fresh, nocrc", nocrc, False),
            ("reuse, nocrc", nocrc, True),
            ("raw mpiio", raw, False),
        ]
        samples: dict[str, list[float]] = {v[0]: [] for v in variants}
        for rep in range(args.reps + 1):
            k = rep % len(variants)
            for name, comp, recycle in variants[k:] + variants[:k]:

                def restore(comp: Any = comp, recycle: bool = recycle) -> None:
                    fake.recycle, fake.calls = recycle, 0
                    comp.restore()

                t = ctx.timed(restore)
                if rep:
                    samples[name].append(t)
        ctx.log(f"restore of {wl.description} on {ctx.size} ranks, warm, {args.reps} reps")
        ctx.log("| variant | median s | min s |\n|---|---|---|")
        for name, s in samples.items():
            ctx.log(f"| {name} | {median(s):.3f} | {min(s):.3f} |")
    finally:
        ctx.close()


if __name__ == "__main__":
    main()
