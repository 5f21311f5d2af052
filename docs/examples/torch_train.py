"""PyTorch training with hpckpt.torch.TorchState (docs/pytorch.md).

Every rank holds the whole model, as with DistributedDataParallel. The TorchState
aliases the parameters, buffers and Adam's state (no copies), and saves the param
groups (the current learning rate) and the scheduler's state. Run it twice: the second
run resumes where the first stopped, on any number of ranks.

usage: mpirun -n 2 python -m mpi4py torch_train.py DIR --steps 6 [--stop-at 3]
"""

from __future__ import annotations

import argparse

import torch
from mpi4py import MPI

import hpckpt
from hpckpt.torch import TorchState

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)

state = TorchState(model, optimizer, scheduler)  # creates Adam's state now, aliases it
ckpt = hpckpt.Checkpoint(model=state)

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--steps", type=int, default=6)
ap.add_argument("--stop-at", type=int, default=None)
args = ap.parse_args()
manager = hpckpt.CheckpointManager(ckpt, args.dir, max_to_keep=2)
if manager.restore_or_initialize():
    print(f"rank {MPI.COMM_WORLD.rank}: resumed, lr {optimizer.param_groups[0]['lr']}")

for step in range(scheduler.last_epoch, args.steps):
    g = torch.Generator().manual_seed(step)  # the same batch on every rank (replicas)
    x = torch.randn(32, 4, generator=g)
    loss = ((model(x) - x.sum(dim=1, keepdim=True)) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    if MPI.COMM_WORLD.rank == 0:
        print(f"step {step + 1}: loss {loss.item():.6f}, lr {scheduler.get_last_lr()[0]}")
    manager.save(checkpoint_number=step + 1)
    if step + 1 == args.stop_at:
        break
