"""Soak test: SIGKILL a training job at random moments, again and again (not in ``make test``).

Each trial starts ``tests/programs/crash.py train DIR`` on 2, 3 or 4 ranks (at random) in
the same directory: the job resumes from the latest checkpoint (checking its values:
``RESUMED-OK``), then saves in a loop, synchronously or asynchronously at random, and
acknowledges each save in ``DIR/acks`` once ``save()`` (or, for an asynchronous save,
``sync()``) returned. After a random delay, one rank or every rank is killed with
SIGKILL. After each kill the last acknowledged checkpoint and the latest checkpoint must
load (checksums verified) with exactly the values of their step.

usage:
  python benchmarks/soak.py [--kills 60] [--seed 1] [--dir DIR] [--min-delay 0.2] [--max-delay 4]

Prints one line per trial and a summary; exits 1 if any check failed. Run it with
``PYTHONPATH`` naming the hpckpt to test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from killing import check_acked, kill_trial  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=None, help="work directory (default: a new temporary one)")
    ap.add_argument("--min-delay", type=float, default=0.2)
    ap.add_argument("--max-delay", type=float, default=4.0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    base = args.dir or tempfile.mkdtemp(prefix="hpckpt-soak-")
    d = os.path.join(base, "run")
    shutil.rmtree(d, ignore_errors=True)
    failures: list[str] = []
    stats = {"trials": 0, "kill_one": 0, "kill_all": 0, "acked_steps": 0, "by_ranks": {}}
    t_start = time.monotonic()
    last_k = 0
    for i in range(args.kills):
        n = rng.choice([2, 3, 4])
        kill_all = rng.random() < 0.4
        delay = rng.uniform(args.min_delay, args.max_delay)
        t0 = time.monotonic()
        trial = kill_trial(d, n, seed=args.seed * 1000 + i, kill_all=kill_all, delay=delay)
        problems = []
        if not trial.ended:
            problems.append("the job did not end after the kill")
        if not trial.resumed_ok:
            problems.append("the resume found wrong values (or did not happen)")
        try:
            acked = check_acked(d)
        except AssertionError as e:
            acked = None
            problems.append(str(e))
        k = acked[0] if acked else 0
        stats["trials"] += 1
        stats["kill_all" if kill_all else "kill_one"] += 1
        stats["by_ranks"][n] = stats["by_ranks"].get(n, 0) + 1
        stats["acked_steps"] += max(0, k - last_k)
        who = "all ranks" if kill_all else f"rank {trial.killed[0] if trial.killed else '?'}"
        print(
            f"trial {i + 1:3d}: {n} ranks, SIGKILL {who:9s} after {delay:4.2f} s; "
            f"acknowledged step {k:5d} (+{max(0, k - last_k)}); "
            f"{'OK' if not problems else 'FAILED: ' + '; '.join(problems)} "
            f"({time.monotonic() - t0:.1f} s)",
            flush=True,
        )
        if problems:
            failures.append(f"trial {i + 1}: " + "; ".join(problems))
            print(trial.output[-3000:], flush=True)
        last_k = max(last_k, k)
    # the directory resumes one last time
    final = kill_trial(d, 2, seed=7, kill_all=True, delay=0.2)
    if not final.resumed_ok:
        failures.append("final resume found wrong values")
    stats["seconds"] = round(time.monotonic() - t_start, 1)
    stats["failures"] = len(failures)
    print(f"SOAK {json.dumps(stats, sort_keys=True)}")
    for f in failures:
        print(f"FAILURE {f}")
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
