"""Competitors by name, built for one workload."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import hpckpt

from ..catalog import DESCRIPTIONS, RAW
from ..context import RunContext
from ..workload import Workload
from .base import Competitor
from .h5py_mpio import H5pyCompetitor
from .hpckpt_io import HpckptCompetitor, HpckptRestoreVariant
from .numpy_files import NpySaveCompetitor, NpzCompetitor
from .raw import MpiioCompetitor, PosixCompetitor, RawPlan
from .torch_dcp import TorchDcpCompetitor, even_shards, torch_available

__all__ = ["DESCRIPTIONS", "IO_VARIANTS", "RAW", "build"]

IO_VARIANTS: dict[str, dict] = {
    "hpckpt-mpiio": {"io": "mpiio"},
    "hpckpt-posix": {"io": "posix"},
    "hpckpt-hdf5": {"io": "hdf5"},
    "hpckpt-hdf5-2phase": {"io": "hdf5", "direct_io_threshold": None},
    "hpckpt-hdf5-nocrc": {"io": "hdf5", "verify_checksums": False},
    "hpckpt-gzip": {"compression": "gzip:1"},
    "hpckpt-shuffle-gzip": {"compression": "shuffle+gzip:1"},
    "hpckpt-shuffle-gzip4": {"compression": "shuffle+gzip:4"},
}
"""hpckpt with each io mode and compression (issue 14), by competitor name."""


class _Builder:
    """Builds competitors, sharing the raw plan and the hpckpt checkpoint."""

    def __init__(self, ctx: RunContext, workload: Workload) -> None:
        self.ctx = ctx
        self.workload = workload
        self._plan: RawPlan | None = None
        self._hpckpt: HpckptCompetitor | None = None

    def plan(self) -> RawPlan:
        if self._plan is None:
            self._plan = RawPlan(self.ctx, self.workload)
        return self._plan

    def hpckpt(self) -> HpckptCompetitor:
        if self._hpckpt is None:
            self._hpckpt = HpckptCompetitor(self.ctx, self.workload)
        return self._hpckpt

    def build(self, name: str) -> Competitor | None:
        ctx, wl = self.ctx, self.workload
        info = ctx.mpi_info or None
        makers: dict[str, Callable[[], Competitor | None]] = {
            "hpckpt": self.hpckpt,
            "hpckpt-nocrc": lambda: HpckptRestoreVariant(
                ctx,
                wl,
                self.hpckpt().prefix,
                "hpckpt-nocrc",
                hpckpt.CheckpointOptions(mpi_info=info, verify_checksums=False),
            ),
            "hpckpt-indep": lambda: HpckptCompetitor(
                ctx, wl, "hpckpt-indep", hpckpt.CheckpointOptions(mpi_info=info, collective=False)
            ),
            **{
                name: (
                    lambda name=name, kw=kw: HpckptCompetitor(
                        ctx, wl, name, hpckpt.CheckpointOptions(mpi_info=info, **kw)
                    )
                )
                for name, kw in IO_VARIANTS.items()
            },
            "mpiio": lambda: MpiioCompetitor(ctx, wl, self.plan()),
            "posix": lambda: PosixCompetitor(ctx, wl, self.plan()),
            "h5py": lambda: H5pyCompetitor(ctx, wl),
            "npy": lambda: NpySaveCompetitor(ctx, wl),
            "npz": lambda: NpzCompetitor(ctx, wl),
            "torch-dcp": lambda: (
                TorchDcpCompetitor(ctx, wl) if torch_available() and even_shards(wl) else None
            ),
        }
        if name not in makers:
            raise ValueError(f"unknown competitor {name!r}; known: {', '.join(makers)}")
        return makers[name]()


def build(names: Sequence[str], ctx: RunContext, workload: Workload) -> list[Competitor]:
    """The named competitors for ``workload`` (unavailable optional ones are left out).

    Collective: call on all ranks with the same names.
    """
    b = _Builder(ctx, workload)
    out = []
    for n in names:
        c = b.build(n)
        if c is None:
            ctx.log(f"  (skipping {n}: not available for this workload)")
        else:
            out.append(c)
    # A restore-only variant needs its source's save in the list.
    if any(isinstance(c, HpckptRestoreVariant) for c in out) and not any(
        type(c) is HpckptCompetitor and c.name == "hpckpt" for c in out
    ):
        out.insert(0, b.hpckpt())
    return out
