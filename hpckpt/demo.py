"""The main job: a resumable distributed training run, interrupted and resumed.

``python -m hpckpt.demo`` (no launcher) drives three MPI jobs with ``mpirun``:

1. a reference run that trains for ``--steps`` steps without interruption;
2. the same run with a :class:`~hpckpt.CheckpointManager`, killed (SIGKILL) at
   ``--kill-at`` while it trains;
3. a resumed run on a *different* rank count and mesh that restores the latest
   checkpoint and finishes the steps.

It then compares every parameter and optimizer slot of runs 1 and 3 bit for bit
and prints a report. ``python -m mpi4py -m hpckpt.demo worker ...`` is one job.

The model is an MLP whose parameters and Adam slots are sharded over both axes
of a ``data`` x ``model`` mesh (FSDP-style: sharded at rest, gathered for
compute). Each step's global batch is split into a fixed number of micro-batches
spread over the ``data`` axis; their gradients are summed in micro-batch order,
so the arithmetic — and the result — does not depend on the mesh.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

MICRO_BATCHES = 8


# --- the worker (one MPI job) ---------------------------------------------------------


def _worker(args: argparse.Namespace) -> int:
    from mpi4py import MPI

    import hpckpt
    from hpckpt import Layout
    from hpckpt.layout import block_range

    comm = MPI.COMM_WORLD
    dp, mp = (int(x) for x in args.mesh.split("x"))
    if dp * mp != comm.size:
        raise SystemExit(f"mesh {args.mesh} needs {dp * mp} ranks, got {comm.size}")
    mesh = hpckpt.create_mesh([("data", dp), ("model", mp)])
    data_comm = mesh.comm.Sub([True, False])  # ranks along "data" with my "model" coordinate
    sizes = [args.inputs] + [args.hidden] * args.layers + [args.outputs]

    class Dense(hpckpt.Module):
        def __init__(self, n_in: int, n_out: int, seed: int) -> None:
            super().__init__()
            rng = np.random.default_rng(seed)
            w = rng.standard_normal((n_in, n_out)).astype(np.float32) / np.sqrt(n_in)
            self.kernel = hpckpt.Variable(w, Layout(["data", "model"], mesh))
            self.bias = hpckpt.Variable(np.zeros(n_out, np.float32), Layout(["model"], mesh))

    class MLP(hpckpt.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = [
                Dense(a, b, 100 + i) for i, (a, b) in enumerate(itertools.pairwise(sizes))
            ]

        @property
        def variables(self) -> list[hpckpt.Variable]:
            return [v for layer in self.layers for v in (layer.kernel, layer.bias)]

    class Rng(hpckpt.PythonState):
        """The sampler's random generator, saved with its exact state."""

        def __init__(self, seed: int) -> None:
            self.gen = np.random.Generator(np.random.PCG64(seed))

        def serialize(self) -> str:
            return json.dumps(self.gen.bit_generator.state)

        def deserialize(self, s: str | bytes) -> None:
            self.gen.bit_generator.state = json.loads(s)

    class DataIterator(hpckpt.PythonState):
        """Batches drawn from a fixed synthetic data set; its position is saved."""

        def __init__(self, rng: Rng, n: int = 4096) -> None:
            g = np.random.default_rng(7)
            self.x = g.standard_normal((n, sizes[0])).astype(np.float32)
            t = g.standard_normal((sizes[0], sizes[-1])).astype(np.float32)
            self.y = np.tanh(self.x @ t)
            self.rng, self.position = rng, 0

        def next(self) -> tuple[np.ndarray, np.ndarray]:
            idx = self.rng.gen.integers(0, len(self.x), args.batch)
            self.position += 1
            return self.x[idx], self.y[idx]

        def serialize(self) -> str:
            return json.dumps({"position": self.position})

        def deserialize(self, s: str | bytes) -> None:
            self.position = int(json.loads(s)["position"])

    net = MLP()
    opt = hpckpt.optimizers.Adam(args.lr)
    rng = Rng(args.seed)
    data = DataIterator(rng)
    step = hpckpt.Variable(np.int64(0), Layout([], mesh))
    ckpt = hpckpt.DTensorCheckpoint(mesh, net=net, optimizer=opt, rng=rng, data=data, step=step)
    manager = None
    report: dict[str, Any] = {"ranks": comm.size, "mesh": args.mesh, "saves": []}
    if args.ckpt_dir:
        manager = hpckpt.CheckpointManager(
            ckpt,
            args.ckpt_dir,
            max_to_keep=args.keep,
            step_counter=step,
            checkpoint_interval=args.every,
        )
        t0 = time.perf_counter()
        restored = manager.restore_or_initialize()
        dt = time.perf_counter() - t0
        if restored:
            report["restored"] = {
                "path": restored,
                "seconds": dt,
                "step": int(step.local),
                "bytes": _data_bytes(restored),
            }

    def grads(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        ws = [v.numpy() for v in net.variables]  # gather the sharded parameters
        mine = range(*block_range(MICRO_BATCHES, dp, mesh.coord("data")))
        parts = np.array_split(np.arange(len(x)), MICRO_BATCHES)
        local = []
        for m in mine:
            xb, yb = x[parts[m]], y[parts[m]]
            acts = [xb]
            for i in range(0, len(ws), 2):
                z = acts[-1] @ ws[i] + ws[i + 1]
                acts.append(np.tanh(z) if i + 2 < len(ws) else z)
            d = (2.0 / y.size) * (acts[-1] - yb)
            g = [None] * len(ws)
            for i in range(len(ws) - 2, -1, -2):
                g[i], g[i + 1] = acts[i // 2].T @ d, d.sum(0)
                if i:
                    d = (d @ ws[i].T) * (1 - acts[i // 2] ** 2)
            local.append(g)
        every = data_comm.allgather(local)  # per-rank lists of micro-batch gradients
        ordered = [g for part in every for g in part]  # micro-batch order, whatever the mesh
        total = [sum(mb[i] for mb in ordered) for i in range(len(ws))]
        return [
            t[v.layout.local_slices(v.shape)] for t, v in zip(total, net.variables, strict=False)
        ]

    while int(step.local) < args.steps:
        x, y = data.next()
        opt.apply_gradients(zip(grads(x, y), net.variables, strict=False))
        step.local[...] += 1
        s = int(step.local)
        if args.kill_at and s == args.kill_at and comm.rank == 0:
            print(f"[worker] step {s}: killing rank 0 with SIGKILL", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        if manager is not None:
            t0 = time.perf_counter()
            path = manager.save()
            dt = time.perf_counter() - t0
            if path:
                report["saves"].append(
                    {
                        "path": path,
                        "step": s,
                        "seconds": dt,
                        "bytes": _data_bytes(path) if comm.rank == 0 else 0,
                    }
                )
    final = hpckpt.DTensorCheckpoint(mesh, net=net, optimizer=opt, step=step)
    final.write(args.final)
    if manager is not None:
        report["kept"] = manager.checkpoints
    report["steps"] = int(step.local)
    if comm.rank == 0:
        print("DEMO-JSON " + json.dumps(report), flush=True)
    return 0


def _data_bytes(prefix: str) -> int:
    from hpckpt.reader import load_checkpoint

    r = load_checkpoint(prefix)
    return r.index.data_size


# --- the driver -------------------------------------------------------------------------


def _mpirun(n: int, worker_args: list[str]) -> tuple[int, dict | None, str]:
    env = dict(
        os.environ,
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_btl=os.environ.get("OMPI_MCA_btl", "self,vader"),
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    cmd = [
        "mpirun",
        "--oversubscribe",
        "-n",
        str(n),
        sys.executable,
        "-m",
        "mpi4py",
        "-m",
        "hpckpt.demo",
        "worker",
        *worker_args,
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    report = None
    for line in p.stdout.splitlines():
        if line.startswith("DEMO-JSON "):
            report = json.loads(line[len("DEMO-JSON ") :])
    return p.returncode, report, p.stdout + p.stderr


def _compare(a: str, b: str) -> tuple[int, list[str]]:
    from hpckpt.reader import load_checkpoint

    ra, rb = load_checkpoint(a), load_checkpoint(b)
    keys = sorted(ra.get_variable_to_shape_map())
    diff = [
        k
        for k in keys
        if not rb.has_tensor(k)
        or not np.array_equal(ra.get_tensor(k), rb.get_tensor(k))
        or ra.get_tensor(k).dtype != rb.get_tensor(k).dtype
    ]
    return len(keys), diff


def _fmt_bw(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 2**20:8.1f} MiB/s" if seconds > 0 else "n/a"


def _driver(args: argparse.Namespace) -> int:
    if args.kill_at is None:
        args.kill_at = max(1, int(args.steps * 0.6) + 1)
    base = args.dir or tempfile.mkdtemp(prefix="hpckpt-demo-")
    if os.path.exists(os.path.join(base, "ckpts")):
        shutil.rmtree(os.path.join(base, "ckpts"))
    os.makedirs(base, exist_ok=True)
    ckpts = os.path.join(base, "ckpts")
    common = [
        "--steps",
        str(args.steps),
        "--hidden",
        str(args.hidden),
        "--layers",
        str(args.layers),
        "--batch",
        str(args.batch),
        "--every",
        str(args.every),
        "--keep",
        str(args.keep),
    ]
    t_start = time.perf_counter()
    print(
        f"hpckpt demo: MLP {args.inputs}-{'-'.join([str(args.hidden)] * args.layers)}-"
        f"{args.outputs}, Adam, {args.steps} steps, checkpoint every {args.every}, "
        f"files in {base}"
    )

    print(f"[1/3] reference run, {args.ranks} ranks, mesh {args.mesh}, no interruption ...")
    rc, _ref, out = _mpirun(
        args.ranks, ["--mesh", args.mesh, "--final", os.path.join(base, "reference"), *common]
    )
    if rc != 0:
        print(out)
        return 1

    print(
        f"[2/3] checkpointed run, {args.ranks} ranks, mesh {args.mesh}, killed at step "
        f"{args.kill_at} ..."
    )
    rc, _, out = _mpirun(
        args.ranks,
        [
            "--mesh",
            args.mesh,
            "--final",
            os.path.join(base, "never"),
            "--ckpt-dir",
            ckpts,
            "--kill-at",
            str(args.kill_at),
            *common,
        ],
    )
    if rc == 0:
        print(out)
        print("error: the interrupted run was not interrupted")
        return 1
    import hpckpt

    latest = hpckpt.latest_checkpoint(ckpts)
    print(f"      the job died (mpirun exit {rc}); latest committed checkpoint: {latest}")

    print(f"[3/3] resumed run, {args.resume_ranks} ranks, mesh {args.resume_mesh} ...")
    rc, res, out = _mpirun(
        args.resume_ranks,
        [
            "--mesh",
            args.resume_mesh,
            "--final",
            os.path.join(base, "resumed"),
            "--ckpt-dir",
            ckpts,
            *common,
        ],
    )
    if rc != 0 or res is None:
        print(out)
        return 1
    n, diff = _compare(os.path.join(base, "reference"), os.path.join(base, "resumed"))
    total = time.perf_counter() - t_start
    saves = res["saves"]
    restored = res.get("restored") or {}
    written = sum(s["bytes"] for s in saves)
    print()
    print("report")
    print(
        f"  steps            {res['steps']} (resumed at step {restored.get('step')} from "
        f"{restored.get('path')})"
    )
    print(f"  checkpoints kept {', '.join(os.path.basename(p) for p in res.get('kept', []))}")
    print(
        f"  bytes written    {written} in {len(saves)} saves by the resumed run "
        f"({saves[0]['bytes'] if saves else 0} per checkpoint)"
    )
    if saves:
        med = float(np.median([s["seconds"] for s in saves]))
        print(f"  save             median {med * 1e3:.1f} ms  {_fmt_bw(saves[0]['bytes'], med)}")
    if restored:
        print(
            f"  restore          {restored['seconds'] * 1e3:.1f} ms  "
            f"{_fmt_bw(restored['bytes'], restored['seconds'])}"
        )
    print(f"  files            {ckpts} (checkpoints), {base}/reference and {base}/resumed")
    print(f"  wall time        {total:.1f} s")
    if diff:
        print(f"RESULT: MISMATCH in {len(diff)} of {n} tensors: {diff[:5]}")
        return 1
    print(
        f"RESULT: bit-identical: all {n} tensors (parameters, Adam slots, counters) of the "
        f"resumed run on {args.resume_ranks} ranks equal the uninterrupted run on "
        f"{args.ranks} ranks"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hpckpt.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("mode", nargs="?", default="run", choices=["run", "worker"])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--ranks", type=int, default=4)
    p.add_argument("--mesh", default=None, help="data x model, e.g. 2x2 (default: 2xN/2)")
    p.add_argument("--resume-ranks", type=int, default=3)
    p.add_argument("--resume-mesh", default=None, help="default: Nx1")
    p.add_argument("--kill-at", type=int, default=None, help="default: 60%% of the steps")
    p.add_argument("--every", type=int, default=10, help="checkpoint every N steps")
    p.add_argument("--keep", type=int, default=3, help="max_to_keep")
    p.add_argument("--hidden", type=int, default=256, help="hidden width (model size)")
    p.add_argument("--layers", type=int, default=2, help="hidden layers")
    p.add_argument("--inputs", type=int, default=32)
    p.add_argument("--outputs", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--dir", default=None, help="where to put the files (default: a temp dir)")
    p.add_argument("--final", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ckpt-dir", default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.mesh is None:
        args.mesh = (
            f"2x{args.ranks // 2}" if args.ranks % 2 == 0 and args.ranks > 1 else f"{args.ranks}x1"
        )
    if args.resume_mesh is None:
        args.resume_mesh = f"{args.resume_ranks}x1"
    if args.mode == "worker":
        return _worker(args)
    return _driver(args)


if __name__ == "__main__":
    sys.exit(main())
