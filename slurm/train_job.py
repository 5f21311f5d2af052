#!/usr/bin/env python3
"""A small resumable training job for Slurm: a numpy MLP sharded on a mesh, checkpointed by hpckpt.

Run it under any MPI launcher (``srun --mpi=pmix``, ``mpirun``) or as one process::

    HPCKPT_CKPT_DIR=runs/demo mpirun -n 4 python -m mpi4py slurm/train_job.py 200

It restores the latest checkpoint in ``$HPCKPT_CKPT_DIR`` (if any), trains up to step N,
saves every ``--save-every`` steps, and uses :mod:`hpckpt.slurm` to stop cleanly: on
``SIGUSR1``/``SIGTERM`` or when the job's time left falls under the learnt margin, all
ranks agree, save a checkpoint, and (for ``SIGUSR1`` and low time, inside Slurm) requeue
the job with ``scontrol requeue`` and exit 0. The requeued job starts again and resumes.
When step N is reached it prints ``FINAL step=<N> checksum=<sha256 of all parameters>``
and writes ``$HPCKPT_CKPT_DIR/result.json``.

Multi-level checkpointing: with ``--local-tier PATTERN`` (or ``$HPCKPT_LOCAL_TIER``),
every save goes to node-local storage with a copy on the partner node, every
``--persist-every``-th one also to ``$HPCKPT_CKPT_DIR`` in the background; the save
before a stop (signal, time limit) and the final one are persisted and waited for, so
that the job can resume on other nodes. See docs/multilevel.md.

Deterministic: the final parameters are bit-identical whatever the number of ranks and
however often the run was interrupted. Every rank builds the same global batch from the
step number, gathers the full weights, computes the full gradients with the same numpy
operations on the same shapes, and applies Adam (elementwise) to its own shards.

Exit codes: 0 finished, or stopped and requeued; 75 stopped with a checkpoint but not
requeued (SIGTERM, outside Slurm, ``--no-requeue``, or ``scontrol`` failed): run it
again to continue; 2 bad arguments.
"""

from __future__ import annotations

import os
import signal

# Catch preemption signals from the very start: a SIGUSR1 that arrives while numpy, MPI
# and h5py load would otherwise kill the process. JobControl takes them over below.
_EARLY_SIGNALS: list[int] = []
for _sig in (signal.SIGUSR1, signal.SIGTERM):
    signal.signal(_sig, lambda signum, frame: _EARLY_SIGNALS.append(signum))

# One BLAS thread: the same numbers whatever the machine's core count (set before numpy).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import hpckpt  # noqa: E402
from hpckpt import slurm as hslurm  # noqa: E402

EXIT_STOPPED = 75  # EX_TEMPFAIL: checkpoint saved, not requeued: run again to continue

COMM = MPI.COMM_WORLD
RANK = COMM.Get_rank()


def log(msg: str) -> None:
    """Print one line from rank 0, flushed (job output files are read while the job runs)."""
    if RANK == 0:
        print(f"[train] {msg}", flush=True)


class DataIterator(hpckpt.PythonState):
    """The position of the data stream: batch ``position`` is made from ``(seed, position)``."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.position = 0

    def serialize(self) -> str:
        return json.dumps({"seed": self.seed, "position": self.position})

    def deserialize(self, string_value: str) -> None:
        d = json.loads(string_value)
        if int(d["seed"]) != self.seed:
            raise ValueError(
                f"checkpoint was made with seed {d['seed']}, this run uses {self.seed}"
            )
        self.position = int(d["position"])

    def batch(
        self, batch_size: int, in_dim: int, teacher: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The global batch for the current position (identical on every rank)."""
        rng = np.random.default_rng([self.seed, 1, self.position])
        x = rng.standard_normal((batch_size, in_dim))
        y = np.tanh(x @ teacher) + 0.1 * np.sin(3.0 * x[:, : teacher.shape[1]])
        return x, y


class Dense(hpckpt.Module):
    """A dense layer whose kernel and bias are sharded by the given layouts."""

    def __init__(self, kernel: np.ndarray, bias: np.ndarray, kl: hpckpt.Layout, bl: hpckpt.Layout):
        super().__init__()
        self.kernel = hpckpt.Variable(kernel, layout=kl, name="kernel")
        self.bias = hpckpt.Variable(bias, layout=bl, name="bias")


class MLP(hpckpt.Module):
    """``tanh(x @ W1 + b1) @ W2 + b2`` with W1 sharded on both mesh dims, W2 on rows."""

    def __init__(self, mesh: hpckpt.Mesh, in_dim: int, hidden: int, out_dim: int, seed: int):
        super().__init__()
        rng = np.random.default_rng([seed, 0])
        w1 = (rng.standard_normal((in_dim, hidden)) / np.sqrt(in_dim)).astype(np.float32)
        w2 = (rng.standard_normal((hidden, out_dim)) / np.sqrt(hidden)).astype(np.float32)
        u = hpckpt.UNSHARDED
        self.l1 = Dense(
            w1,
            np.zeros(hidden, np.float32),
            hpckpt.Layout(["y", "x"], mesh),
            hpckpt.Layout(["x"], mesh),
        )
        self.l2 = Dense(
            w2,
            np.zeros(out_dim, np.float32),
            hpckpt.Layout(["x", u], mesh),
            hpckpt.Layout([u], mesh),
        )

    def variables(self) -> list[tuple[str, hpckpt.Variable]]:
        return [
            ("l1/kernel", self.l1.kernel),
            ("l1/bias", self.l1.bias),
            ("l2/kernel", self.l2.kernel),
            ("l2/bias", self.l2.bias),
        ]


def full_gradients(
    w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[float, list[np.ndarray]]:
    """Loss and gradients of the mean squared error, all computed in float64."""
    w1, b1, w2, b2 = (a.astype(np.float64) for a in (w1, b1, w2, b2))
    h = np.tanh(x @ w1 + b1)
    p = h @ w2 + b2
    err = p - y
    loss = float(np.mean(err * err))
    dp = 2.0 * err / err.size
    dw2 = h.T @ dp
    db2 = dp.sum(axis=0)
    dz = (dp @ w2.T) * (1.0 - h * h)
    dw1 = x.T @ dz
    db1 = dz.sum(axis=0)
    return loss, [dw1, db1, dw2, db2]


def digest(named: list[tuple[str, np.ndarray]]) -> str:
    """sha256 over names, shapes, dtypes and bytes of global arrays, in the given order."""
    h = hashlib.sha256()
    for name, a in named:
        a = np.ascontiguousarray(a)
        h.update(f"{name}|{a.shape}|{a.dtype.str}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def make_mesh() -> hpckpt.Mesh:
    n = COMM.Get_size()
    shape = (n // 2, 2) if n % 2 == 0 and n >= 4 else (n, 1)
    return hpckpt.create_mesh([("x", shape[0]), ("y", shape[1])])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("steps", type=int, nargs="?", default=200, help="train up to this step")
    p.add_argument(
        "--ckpt-dir",
        default=os.environ.get("HPCKPT_CKPT_DIR"),
        help="checkpoint directory (default $HPCKPT_CKPT_DIR)",
    )
    p.add_argument(
        "--save-every", type=int, default=25, help="periodic save interval in steps (0: off)"
    )
    p.add_argument("--max-to-keep", type=int, default=3)
    p.add_argument(
        "--step-sleep", type=float, default=0.0, help="seconds of simulated work per step"
    )
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--in-dim", type=int, default=12)
    p.add_argument("--hidden", type=int, default=30)
    p.add_argument("--out-dim", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument(
        "--margin-floor", type=float, default=30.0, help="seconds always kept before the time limit"
    )
    p.add_argument("--safety-factor", type=float, default=2.0)
    p.add_argument(
        "--initial-save-seconds",
        type=float,
        default=30.0,
        help="save duration assumed before one is measured",
    )
    p.add_argument(
        "--local-tier",
        default=os.environ.get("HPCKPT_LOCAL_TIER") or None,
        metavar="PATTERN",
        help="multi-level checkpointing: node-local directory, {node} for the node index "
        "(default $HPCKPT_LOCAL_TIER; none: every save goes to --ckpt-dir)",
    )
    p.add_argument(
        "--persist-every",
        type=int,
        default=int(os.environ.get("HPCKPT_PERSIST_EVERY") or 4),
        help="with --local-tier: also persist every N-th save to --ckpt-dir (default "
        "$HPCKPT_PERSIST_EVERY or 4)",
    )
    p.add_argument("--no-requeue", action="store_true", help="stop without requeueing")
    p.add_argument("--result-name", default="result.json")
    args = p.parse_args(argv)
    if not args.ckpt_dir:
        p.error("no checkpoint directory: set HPCKPT_CKPT_DIR or pass --ckpt-dir")
    if args.steps < 0 or args.save_every < 0 or args.log_every < 1:
        p.error("steps and --save-every must be >= 0, --log-every >= 1")
    return args


def write_json_atomic(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.makedirs(args.ckpt_dir, exist_ok=True)
    t_start = time.time()
    mesh = make_mesh()
    model = MLP(mesh, args.in_dim, args.hidden, args.out_dim, args.seed)
    opt = hpckpt.optimizers.Adam(learning_rate=args.lr)
    for _, v in model.variables():  # create the slots now: restored at once, always saved
        for slot_name in opt.get_slot_names():
            opt.add_slot(v, slot_name)
    data = DataIterator(args.seed)
    teacher = np.random.default_rng([args.seed, 2]).standard_normal((args.in_dim, args.out_dim))
    ckpt = hpckpt.Checkpoint(model=model, optimizer=opt, data=data)
    tier = hpckpt.LocalTier(args.local_tier, keep=2) if args.local_tier else None
    manager = hpckpt.CheckpointManager(
        ckpt,
        args.ckpt_dir,
        max_to_keep=args.max_to_keep,
        local_tier=tier,
        persist_every=args.persist_every if tier is not None else None,
    )

    control = hslurm.JobControl(
        mesh.comm,
        options=hslurm.JobControlOptions(
            checkpoint_every_steps=args.save_every or None,
            margin_floor=args.margin_floor,
            safety_factor=args.safety_factor,
            initial_save_seconds=args.initial_save_seconds,
        ),
    )
    for sig in _EARLY_SIGNALS:  # received before the handlers of `control` were installed
        control.notify(sig)
    restored = manager.restore_or_initialize()  # the newest complete checkpoint, any tier
    if restored is not None:
        restored.status.assert_existing_objects_matched()
    start_step = data.position
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    left = control.time_left() if RANK == 0 else None
    log(
        f"START job={hslurm.job_id() or '-'} restart={restarts} ranks={COMM.Get_size()} "
        f"mesh={mesh.shape} step={start_step} target={args.steps} "
        f"restored={restored or 'none'} "
        f"time_left={'none' if left is None else f'{left:.0f}s'} "
        f"source={control.time_left_source if RANK == 0 else '-'} margin={control.margin:.1f}s"
    )

    step = start_step
    last_saved = start_step if restored is not None else -1
    loss = float("nan")
    with control:
        while step < args.steps:
            weights = [v.numpy() for _, v in model.variables()]  # collective gathers
            x, y = data.batch(args.batch, args.in_dim, teacher)
            loss, grads = full_gradients(*weights, x, y)
            opt.apply_gradients(
                (g[v.layout.local_slices(v.shape)], v)
                for g, (_, v) in zip(grads, model.variables(), strict=True)
            )
            if args.step_sleep:
                time.sleep(args.step_sleep)
            step += 1
            data.position = step
            if step % args.log_every == 0:
                log(f"STEP step={step} loss={loss:.6f}")
            decision = control.check(step)  # collective: every rank gets the same answer
            if decision.exit:
                log(
                    f"STOP step={step} reasons={','.join(decision.reasons)} "
                    f"time_left={decision.time_left} margin={decision.margin:.1f}s"
                )
            if decision.checkpoint:
                # timed for the margin; a save before a stop is persisted and waited for
                path = control.checkpoint(manager, decision, checkpoint_number=step)
                last_saved = step
                log(
                    f"CHECKPOINT step={step} path={path} "
                    f"seconds={control.estimator.saves[-1]:.3f} "
                    f"reasons={','.join(decision.reasons)} margin={control.margin:.1f}s"
                )
            if decision.exit:
                code = EXIT_STOPPED
                if decision.requeue and not args.no_requeue and hslurm.job_id() is not None:
                    log(f"REQUEUE job={hslurm.job_id()} step={step}")
                    result = control.requeue()  # collective; rank 0 runs scontrol
                    log(f"REQUEUE ok={result.ok} message={result.message}")
                    if result:
                        code = 0
                log(f"EXIT preempted step={step} code={code}")
                return code

    if last_saved != step or tier is not None:  # a local-only last save is persisted too
        manager.save(checkpoint_number=step, persist=True)
    manager.sync()  # the final checkpoint is on the parallel file system
    named = [(n, v.numpy()) for n, v in model.variables()]
    slots = [
        (f"{n}/{s}", opt.get_slot(v, s).numpy())
        for n, v in model.variables()
        for s in opt.get_slot_names()
    ]
    checksum = digest(named)
    state_checksum = digest([*named, *slots, ("iterations", opt.iterations.numpy())])
    log(f"FINAL step={step} checksum={checksum}")
    if RANK == 0:
        write_json_atomic(
            os.path.join(args.ckpt_dir, args.result_name),
            {
                "step": step,
                "checksum": checksum,
                "state_checksum": state_checksum,
                "parameters": {n: digest([(n, a)]) for n, a in named},
                "iterations": int(opt.iterations.numpy()),
                "loss": loss,
                "ranks": COMM.Get_size(),
                "mesh": list(mesh.shape),
                "job_id": hslurm.job_id(),
                "restart_count": int(restarts) if restarts.isdigit() else restarts,
                "start_step": start_step,
                "restored_from": None if restored is None else str(restored),
                "checkpoints": manager.checkpoints,
                "seconds": time.time() - t_start,
            },
        )
    COMM.Barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
