"""Plain h5py with ``driver="mpio"``: what a user writes without hpckpt.

One contiguous dataset per tensor (``create_dataset`` defaults), collective
dataset IO on the same dataset object (``with ds.collective: ds[sel] = x``);
ranks with an empty selection take part through the low-level API with
``select_none`` (h5py's high-level calls return early on empty selections and
would leave the other ranks hanging).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from ..context import RunContext
from ..util import fsync_dir, fsync_path
from ..workload import Workload
from .base import Competitor, SingleFileCompetitor

__all__ = ["H5pyCompetitor", "H5pyReader"]


def _collective_dxpl() -> h5py.h5p.PropDXID:
    dxpl = h5py.h5p.create(h5py.h5p.DATASET_XFER)
    dxpl.set_dxpl_mpio(h5py.h5fd.MPIO_COLLECTIVE)
    return dxpl


def _empty_io(ds: h5py.Dataset, dxpl: h5py.h5p.PropDXID, write: bool) -> None:
    fspace = ds.id.get_space()
    fspace.select_none()
    mspace = h5py.h5s.create_simple((1,))
    mspace.select_none()
    buf = np.zeros(1, dtype=ds.dtype)
    (ds.id.write if write else ds.id.read)(mspace, fspace, buf, dxpl=dxpl)


class H5pyCompetitor(SingleFileCompetitor):
    """``h5py.File(driver="mpio")``, ``create_dataset`` per tensor, collective hyperslab IO.

    The save calls ``File.flush()`` (``MPI_File_sync`` on every rank) before
    closing, then rank 0 fsyncs the file (the metadata written at close) and
    the directory. The restore reads with ``read_direct`` into preallocated
    buffers.
    """

    name = "h5py"

    def __init__(self, ctx: RunContext, workload: Workload) -> None:
        super().__init__(ctx, workload, "data.h5")
        self.datasets = {t.name: t.name for t in workload.tensors}

    def save(self) -> None:
        dxpl = _collective_dxpl()
        with h5py.File(self.file, "w", driver="mpio", comm=self.ctx.comm) as f:
            for t in self.workload.tensors:
                ds = f.create_dataset(t.name, shape=t.shape, dtype=t.dtype)
                a = t.write_array
                if a.size:
                    starts = zip(t.write_start, a.shape, strict=True)
                    sel = tuple(slice(s, s + n) for s, n in starts)
                    with ds.collective:
                        ds[sel] = a
                else:
                    _empty_io(ds, dxpl, write=True)
            f.flush()
        if self.ctx.rank == 0:
            fsync_path(self.file)
            fsync_dir(self.dir)

    def restore(self) -> None:
        dxpl = _collective_dxpl()
        with h5py.File(self.file, "r", driver="mpio", comm=self.ctx.comm) as f:
            for t in self.workload.tensors:
                ds = f[self.datasets[t.name]]
                dest = t.restore_buf
                if dest.size:
                    with ds.collective:
                        ds.read_direct(dest, source_sel=t.local_slices)
                else:
                    _empty_io(ds, dxpl, write=False)


class H5pyReader(H5pyCompetitor):
    """Restore only: plain h5py reading an existing file (e.g. hpckpt's data file).

    Args:
        ctx: The run.
        workload: Variables with the layout to read for (into their restore buffers).
        name: Label.
        path: The HDF5 file.
        datasets: Tensor name -> dataset name in the file.
    """

    does_save = False

    def __init__(
        self, ctx: RunContext, workload: Workload, name: str, path: str, datasets: dict[str, str]
    ) -> None:
        Competitor.__init__(self, ctx, workload)
        self.name = name
        self.file = path
        self.dir = os.path.dirname(path)
        self.datasets = dict(datasets)

    def prepare_save(self) -> None:
        pass
