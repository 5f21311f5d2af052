"""Suite ``iomodes``: hpckpt's io modes and compression against IOR, alternated in one run.

Runs WITHOUT mpirun: it launches the MPI jobs itself. For each rank count and each
repetition it runs, in an order rotated from one repetition to the next,

* one hpckpt job: the ``bandwidth`` suite for one repetition of every hpckpt
  competitor asked for (``io="auto"``, ``"mpiio"``, ``"posix"``, ``"hdf5"``,
  compressed, ...), themselves in rotated order;
* one IOR job per IOR mode and phase: POSIX (``-a POSIX``), collective MPI-IO
  (``-a MPIIO -c``) and collective HDF5 (``-a HDF5 -c`` with collective metadata, no
  fill and 1 MiB alignment: IOR at its best), each writing with ``-e`` (fsync) and
  then reading (a second job, ``-r -E``) the same bytes: ``nvars`` segments of
  ``size / (nvars * ranks)`` bytes per rank, the layout of hpckpt's ``nvars`` row-
  sharded matrices (one HDF5 dataset per segment, like hpckpt's one per tensor).

Every job first makes ``--job-warmup`` untimed iterations in the same process (hpckpt:
the bandwidth suite's ``--warmup``; IOR: ``-i 1+W``, the last iteration kept), so that
both are measured in the steady state of a job that checkpoints repeatedly, not with
the first-use costs of a fresh process (imports, library initialisation, first touch of
the buffers, hpckpt's plan cache). With ``--cold`` IOR's read job makes one iteration
right after the file is evicted (a second iteration would read it from the cache).

The tables give medians over the repetitions (the first ``--warmup`` are not counted)
and each time relative to IOR's HDF5 collective run. IOR comes from ``--ior``, ``$IOR``,
``ior`` on ``PATH`` or ``../shared/tools/ior/build.sh`` next to the repository (which
builds it in about a minute); without one the suite says so and runs hpckpt alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

__all__ = ["add_parser", "find_ior", "run"]

DEFAULT_COMPETITORS = "hpckpt,hpckpt-mpiio,hpckpt-posix,hpckpt-hdf5,hpckpt-hdf5-2phase,hpckpt-gzip"
IOR_MODES = {
    "ior-posix": ["-a", "POSIX"],
    "ior-mpiio": ["-a", "MPIIO", "-c"],
    "ior-hdf5": [
        "-a",
        "HDF5",
        "-c",
        "--hdf5.collectiveMetadata",
        "--hdf5.noFill",
        "--hdf5.setAlignment=1m",
    ],
}
REFERENCE = "ior-hdf5"
COLUMNS = [
    ("ranks", "ranks"),
    ("op", "op"),
    ("competitor", "competitor"),
    ("median_s", "median s"),
    ("gib_s", "GiB/s"),
    ("ratio", "time / IOR HDF5"),
    ("file_ratio", "file / payload"),
]


def add_parser(sub: Any) -> None:
    """Register the suite's options."""
    p = sub.add_parser(
        "iomodes",
        help="hpckpt io modes and compression vs IOR (POSIX, MPIIO, HDF5); run WITHOUT mpirun",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ranks", default="1,2,4", help="rank counts (default 1,2,4)")
    p.add_argument("--size", default="512M", help="payload per run (default 512M)")
    p.add_argument("--nvars", type=int, default=4, help="tensors / IOR segments (default 4)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions (default 1)")
    p.add_argument(
        "--competitors",
        default=DEFAULT_COMPETITORS,
        help=f"hpckpt competitors (default {DEFAULT_COMPETITORS})",
    )
    p.add_argument(
        "--data",
        choices=("random", "smooth"),
        default="random",
        help="random floats or a smooth heat field (what compression sees)",
    )
    p.add_argument(
        "--job-warmup",
        type=int,
        default=1,
        help="untimed iterations inside each job before the timed one (default 1)",
    )
    p.add_argument("--ior", default=None, help="the IOR binary (default: $IOR, PATH, build.sh)")
    p.add_argument("--no-ior", action="store_true", help="run hpckpt only")
    p.add_argument("--cold", action="store_true", help="evict the files before every read")
    p.add_argument("--dir", default=None, help="parent of the run directory (default /tmp)")
    p.add_argument("--json-out", metavar="FILE", help="results as JSON")
    p.add_argument("--plot", metavar="PNG", help="also draw GiB/s per mode (needs matplotlib)")
    p.add_argument(
        "--mpirun",
        default="mpirun --oversubscribe",
        help="launcher prefix; '-n N' is appended (default 'mpirun --oversubscribe')",
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds per job (default 1800)")
    p.set_defaults(func=run)


def find_ior(explicit: str | None) -> tuple[str | None, str]:
    """The IOR binary and where it came from (``None`` and the reason if there is none)."""
    if explicit:
        return (
            (explicit, "--ior")
            if os.access(explicit, os.X_OK)
            else (None, f"{explicit} is not executable")
        )
    env = os.environ.get("IOR")
    if env:
        return (env, "$IOR") if os.access(env, os.X_OK) else (None, f"$IOR={env} is not executable")
    found = shutil.which("ior")
    if found:
        return found, "PATH"
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(os.path.dirname(repo), "shared", "tools", "ior", "build.sh")
    if not os.path.exists(script):
        return None, f"no $IOR, no ior on PATH and no {script}"
    print(f"[iomodes] building IOR with {script} (about a minute the first time) ...", flush=True)
    r = subprocess.run(["bash", script], capture_output=True, text=True, timeout=1800)
    path = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode != 0 or not os.access(path, os.X_OK):
        return None, f"{script} failed: {r.stderr.strip()[-300:]}"
    return path, script


def _launch(args: argparse.Namespace, n: int, cmd: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    full = [*shlex.split(args.mpirun), "-n", str(n), *cmd]
    r = subprocess.run(full, capture_output=True, text=True, env=env, timeout=args.timeout)
    if r.returncode != 0:
        raise SystemExit(
            f"[iomodes] job failed ({r.returncode}): {shlex.join(full)}\n{r.stdout[-2000:]}\n"
            f"{r.stderr[-2000:]}"
        )
    return r


def _hpckpt_job(
    args: argparse.Namespace, n: int, names: list[str], workdir: str
) -> dict[tuple[str, str], dict[str, Any]]:
    """One repetition of every hpckpt competitor (in the given order): (op, name) -> row."""
    out = os.path.join(workdir, "hpckpt.json")
    cmd = [
        sys.executable,
        "-m",
        "mpi4py",
        "-m",
        "benchmarks",
        "bandwidth",
        "--sizes",
        args.size,
        "--nvars",
        str(args.nvars),
        "--reps",
        "1",
        "--warmup",
        str(args.job_warmup),
        "--competitors",
        ",".join(names),
        "--data",
        args.data,
        "--dir",
        workdir,
        "--json-out",
        out,
    ]
    if args.cold:
        cmd.append("--cold")
    _launch(args, n, cmd)
    with open(out) as f:
        rows = json.load(f)["results"]
    return {(r["op"], r["competitor"]): r for r in rows}


def _evict(path: str) -> None:
    if not hasattr(os, "posix_fadvise") or not os.path.exists(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _ior_job(
    args: argparse.Namespace, ior: str, n: int, mode: str, block: int, workdir: str
) -> dict[str, float]:
    """IOR ``mode``: write (fsync), then read in a second job; op -> seconds (IOR's total)."""
    target = os.path.join(workdir, mode)
    common = [
        ior,
        *IOR_MODES[mode],
        "-s",
        str(args.nvars),
        "-b",
        str(block),
        "-t",
        str(block),
        "-k",
        "-o",
        target,
        "-O",
        "summaryFormat=JSON",
    ]
    times = {}
    for op, flags in (("save", ["-w", "-e"]), ("restore", ["-r", "-E"])):
        summary = os.path.join(workdir, f"{mode}-{op}.json")
        cold = op == "restore" and args.cold
        if cold:  # one iteration, right after the eviction (a second would read warm)
            _evict(target)
        iters = ["-i", "1" if cold else str(1 + args.job_warmup)]
        _launch(args, n, [*common, *iters, *flags, "-O", f"summaryFile={summary}"])
        with open(summary) as f:
            doc = json.load(f)
        res = doc["tests"][0]["Results"][-1]  # one entry per iteration: the last one
        res = res[0] if isinstance(res, list) else res
        times[op] = float(res["totalTime"])
    os.remove(target)
    return times


def _summarize(
    samples: dict[tuple[int, str, str], list[float]],
    files: dict[tuple[int, str], int],
    nbytes: int,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    from ..util import GIB, median

    rows = []
    for (n, op, name), s in sorted(samples.items()):
        if not s:
            continue
        med = median(s)
        ref = samples.get((n, op, REFERENCE))
        row = {
            "suite": "iomodes",
            "ranks": n,
            "op": op,
            "competitor": name,
            "data": args.data,
            "cold": args.cold,
            "bytes": nbytes,
            "median_s": med,
            "min_s": min(s),
            "max_s": max(s),
            "samples": s,
            "gib_s": nbytes / GIB / med if med > 0 else float("inf"),
            "ratio_to": REFERENCE if ref else None,
            "ratio": med / median(ref) if ref else None,
        }
        if op == "save" and (n, name) in files:
            row["file_bytes"] = files[(n, name)]
            row["file_ratio"] = files[(n, name)] / nbytes
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    """Run the suite (as a plain process: it launches the MPI jobs)."""
    from ..report import markdown_table
    from ..util import format_size, parse_int_list, parse_size

    if "OMPI_COMM_WORLD_SIZE" in os.environ or "PMIX_RANK" in os.environ:
        raise SystemExit("iomodes launches its own MPI jobs: run it without mpirun")
    ranks = parse_int_list(args.ranks)
    size = parse_size(args.size)
    names = [c.strip() for c in args.competitors.split(",") if c.strip()]
    ior, source = (None, "--no-ior") if args.no_ior else find_ior(args.ior)
    if ior is None:
        print(f"[iomodes] IOR is not available ({source}): measuring hpckpt alone", flush=True)
    else:
        print(f"[iomodes] IOR: {ior} (from {source})", flush=True)
    parent = args.dir or os.environ.get("HPCKPT_BENCH_DIR") or tempfile.gettempdir()
    workdir = tempfile.mkdtemp(prefix="hpckpt-iomodes-", dir=parent)
    samples: dict[tuple[int, str, str], list[float]] = {}
    files: dict[tuple[int, str], int] = {}
    try:
        for n in ranks:
            block = size // (args.nvars * n)
            jobs = ["hpckpt", *(IOR_MODES if ior else [])]
            for rep in range(args.warmup + args.reps):
                k = rep % len(jobs)
                record = rep >= args.warmup
                line = []
                for job in jobs[k:] + jobs[:k]:
                    t0 = time.time()
                    if job == "hpckpt":
                        kk = rep % len(names)
                        got = _hpckpt_job(args, n, names[kk:] + names[:kk], workdir)
                        for (op, name), r in got.items():
                            if record:
                                samples.setdefault((n, op, name), []).append(r["samples"][0])
                            if "file_bytes" in r:
                                files[(n, name)] = int(r["file_bytes"])
                    else:
                        assert ior is not None
                        for op, t in _ior_job(args, ior, n, job, block, workdir).items():
                            if record:
                                samples.setdefault((n, op, job), []).append(t)
                    line.append(f"{job} {time.time() - t0:.1f}s")
                kind = "warm-up" if not record else f"rep {rep - args.warmup + 1}/{args.reps}"
                print(f"[iomodes] {n} ranks {kind}: " + ", ".join(line), flush=True)
        rows = _summarize(samples, files, size, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\n{format_size(size)} in {args.nvars} tensors ({args.data} float32), "
        f"{'cold' if args.cold else 'warm'} reads, median of {args.reps}"
    )
    markdown_table(rows, COLUMNS)
    if args.json_out:
        doc = {
            "suite": "iomodes",
            "command": " ".join(["python -m benchmarks", *sys.argv[1:]]),
            "args": {k: v for k, v in vars(args).items() if k != "func"},
            "ior": ior,
            "results": rows,
        }
        with open(args.json_out, "w") as f:
            json.dump(doc, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
    return 0


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Grouped bars: GiB/s of every mode, save and restore, per rank count."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib (pip install .[bench])") from None
    ranks = sorted({r["ranks"] for r in rows})
    names = list(dict.fromkeys(r["competitor"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(14, 5))
    width = 0.8 / max(len(names), 1)
    for ax, op in zip(axes, ("save", "restore"), strict=True):
        for i, name in enumerate(names):
            ys, lo, hi = [], [], []
            for n in ranks:
                r = next(
                    (x for x in rows if (x["ranks"], x["op"], x["competitor"]) == (n, op, name)),
                    None,
                )
                g = r["bytes"] / (1 << 30) if r else 0
                ys.append(r["gib_s"] if r else 0)
                lo.append(r["gib_s"] - g / r["max_s"] if r else 0)
                hi.append(g / r["min_s"] - r["gib_s"] if r else 0)
            xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(ranks))]
            hatch = "//" if name.startswith("ior") else None
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=name, hatch=hatch)
        ax.set_xticks(range(len(ranks)), [f"{n} ranks" for n in ranks])
        ax.set_title(f"{op} (median; bars: min..max)")
        ax.set_ylabel("GiB/s of payload")
        ax.grid(True, axis="y", alpha=0.3)
    axes[1].legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")
