"""Command line: ``python -m benchmarks <suite> [options]``."""

from __future__ import annotations

import argparse
import sys

from .catalog import describe
from .suites import SUITES

__all__ = ["build_parser", "main"]

EPILOG = f"""\
competitors:
{describe()}

examples (Open MPI; add --oversubscribe for more ranks than cores):
  mpirun -n 4 python -m mpi4py -m benchmarks bandwidth --sizes 1G --reps 5 --json-out bw-4.json
  mpirun -n 4 python -m mpi4py -m benchmarks bandwidth --cold --mesh 2d
  mpirun -n 4 python -m mpi4py -m benchmarks small --counts 2000,20000
  mpirun -n 4 python -m mpi4py -m benchmarks reshard --sizes 256M
  python -m benchmarks plot bw-*.json -o bandwidth.png

Run under 'python -m mpi4py' so that an exception on one rank aborts the job
instead of leaving the other ranks waiting. See docs/performance.md.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per suite."""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmarks of hpckpt checkpointing against raw IO and alternatives.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="suite", metavar="SUITE")
    sub.required = True
    for module in dict.fromkeys(SUITES.values()):
        module.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the suite; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
