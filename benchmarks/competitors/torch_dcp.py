"""Optional competitor: ``torch.distributed.checkpoint`` (DCP) with the gloo backend.

Enabled only when ``import torch`` works. Every Variable's local shard is wrapped
without a copy (``torch.from_numpy``) as a ``DTensor`` on a CPU device mesh of
the same shape, so DCP saves and loads the same memory. DCP writes one file
per rank plus ``.metadata``; ``FileSystemWriter(sync_files=True)`` fsyncs them.

Torch splits uneven dimensions like ``torch.chunk`` (ceil-sized blocks) while
hpckpt puts the larger blocks first, so workloads with uneven sharded
dimensions are skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any

from ..context import RunContext
from ..workload import Workload
from .base import Competitor

__all__ = ["TorchDcpCompetitor", "torch_available"]


def torch_available() -> bool:
    """Whether torch with ``torch.distributed.checkpoint`` imports."""
    try:
        import torch.distributed.checkpoint  # noqa: F401
    except Exception:
        return False
    return True


def even_shards(workload: Workload) -> bool:
    """Whether every sharded dimension divides evenly (torch and hpckpt then agree)."""
    for t in workload.tensors:
        mesh = t.layout.mesh
        for n, spec in zip(t.shape, t.layout.sharding_specs, strict=True):
            if spec in mesh.dim_names and n % mesh.dim_size(spec):
                return False
    return True


def _init_process_group(ctx: RunContext) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    addr_port = None
    if ctx.rank == 0:
        with socket.socket() as s:
            s.bind(("", 0))
            addr_port = (socket.gethostname(), s.getsockname()[1])
    addr, port = ctx.comm.bcast(addr_port, root=0)
    os.environ.setdefault("MASTER_ADDR", addr)
    os.environ.setdefault("MASTER_PORT", str(port))
    dist.init_process_group("gloo", rank=ctx.rank, world_size=ctx.size)


def _dtensor_api() -> tuple[Any, Any, Any]:
    try:
        from torch.distributed.tensor import DTensor, Replicate, Shard
    except ImportError:  # torch < 2.4
        from torch.distributed._tensor import DTensor, Replicate, Shard
    return DTensor, Replicate, Shard


class TorchDcpCompetitor(Competitor):
    """``dcp.save`` / ``dcp.load`` of a state dict of DTensors (gloo, CPU)."""

    name = "torch-dcp"

    def __init__(self, ctx: RunContext, workload: Workload) -> None:
        super().__init__(ctx, workload)
        import torch
        from torch.distributed.device_mesh import init_device_mesh

        _init_process_group(ctx)
        DTensor, Replicate, Shard = _dtensor_api()
        mesh = workload.mesh
        tmesh = init_device_mesh("cpu", tuple(mesh.shape), mesh_dim_names=tuple(mesh.dim_names))
        self.dir = ctx.makedirs(self.name)

        def wrap(t: Any, arr: Any) -> Any:
            specs = list(t.layout.sharding_specs)
            placements = [
                Shard(specs.index(d)) if d in specs else Replicate() for d in mesh.dim_names
            ]
            return DTensor.from_local(torch.from_numpy(arr), tmesh, placements, run_check=False)

        self.state = {t.name: wrap(t, t.local) for t in workload.tensors}
        self.target = {t.name: wrap(t, t.restore_buf) for t in workload.tensors}

    def prepare_save(self) -> None:
        if self.ctx.rank == 0:
            shutil.rmtree(self.dir, ignore_errors=True)
            os.makedirs(self.dir)
        self.ctx.comm.Barrier()

    def files(self) -> list[str]:
        if self.ctx.rank != 0:
            return []
        return [os.path.join(self.dir, n) for n in os.listdir(self.dir)]

    def save(self) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.save(self.state, storage_writer=dcp.FileSystemWriter(self.dir, sync_files=True))

    def restore(self) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.load(self.target, storage_reader=dcp.FileSystemReader(self.dir))
