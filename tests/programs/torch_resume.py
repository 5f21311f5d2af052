"""TorchState across rank counts; run by tests/test_adopt_rankcount.py.

usage: torch_resume.py save DIR     train 3 steps (every rank a replica, as with DDP), save
       torch_resume.py resume DIR   restore, train 3 more steps; compare bit for bit with
                                    6 uninterrupted steps; prints TORCH-OK N or TORCH-FAIL

The model has float32 and bfloat16 parameters, a BatchNorm (buffers, an int64
counter); Adam with a StepLR scheduler (the learning rate changes at step 2 and 4).
"""

import sys

import torch
from mpi4py import MPI

import hpckpt
from hpckpt.torch import TorchState

torch.set_num_threads(1)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = torch.nn.Linear(5, 8)
        self.bn = torch.nn.BatchNorm1d(8)
        self.l2 = torch.nn.Linear(8, 3).to(torch.bfloat16)

    def forward(self, x):
        h = torch.relu(self.bn(self.l1(x)))
        return self.l2(h.to(torch.bfloat16)).float()


def build(seed):
    torch.manual_seed(seed)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=0.05, betas=(0.8, 0.9))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return net, opt, sched


def batch(step):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 5, generator=g), torch.randn(16, 3, generator=g)


def train(net, opt, sched, first, last):
    for step in range(first, last):
        x, y = batch(step)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        sched.step()


def tensors(net, opt):
    out = {f"model/{k}": v for k, v in net.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt/{i}/{k}"] = v
    return out


def main():
    mode, d = sys.argv[1], sys.argv[2]
    comm = MPI.COMM_WORLD
    if mode == "save":
        net, opt, sched = build(0)
        state = TorchState(net, opt, sched)
        ckpt = hpckpt.Checkpoint(torch=state)
        train(net, opt, sched, 0, 3)
        hpckpt.CheckpointManager(ckpt, d, max_to_keep=1).save()
        return
    net, opt, sched = build(1)  # other initial values: the restore must overwrite them
    state = TorchState(net, opt, sched)
    ckpt = hpckpt.Checkpoint(torch=state)
    aliases = {k: v.local for k, v in state._vars.items()}
    hpckpt.CheckpointManager(ckpt, d, max_to_keep=1).restore_or_initialize()
    errors = []
    if opt.param_groups[0]["lr"] != 0.025:
        errors.append(f"lr after restore is {opt.param_groups[0]['lr']}, not 0.025")
    if any(state._vars[k].local is not a for k, a in aliases.items()):
        errors.append("a restore replaced an aliased array")
    if net.l2.weight.dtype != torch.bfloat16 or not net.l1.weight.requires_grad:
        errors.append("parameter dtype or requires_grad changed")
    train(net, opt, sched, 3, 6)
    ref_net, ref_opt, ref_sched = build(0)
    train(ref_net, ref_opt, ref_sched, 0, 6)
    got, want = tensors(net, opt), tensors(ref_net, ref_opt)
    if sorted(got) != sorted(want):
        errors.append(f"different state keys: {sorted(set(got) ^ set(want))}")
    for k in want:
        a, b = got.get(k), want[k]
        if a is None or a.dtype != b.dtype or not torch.equal(a.view(-1), b.view(-1)):
            errors.append(f"{k} differs")
    if opt.param_groups[0]["lr"] != ref_opt.param_groups[0]["lr"]:
        errors.append("lr differs")
    if sched.state_dict() != ref_sched.state_dict():
        errors.append("scheduler state differs")
    every = comm.allgather(errors)
    if comm.rank == 0:
        bad = [f"rank {r}: {e}" for r, es in enumerate(every) for e in es]
        print("TORCH-FAIL" if bad else "TORCH-OK", comm.size, "; ".join(bad))


if __name__ == "__main__":
    main()
