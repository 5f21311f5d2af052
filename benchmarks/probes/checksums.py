"""Throughput of the checksum candidates on this machine (one process, no MPI).

    python -m benchmarks.probes.checksums [--size 256M] [--reps 5] [--resident 256K]

Times zlib's CRC-32, CRC-32C (``crc32c`` package; hpckpt's own AVX-512
``hpckpt.io._crc32c`` where the CPU has VPCLMULQDQ) and, when installed, xxHash
(``xxhash``: XXH3-64, XXH64) over the same random buffer, alternating them in
each repetition; prints the best and median GiB/s. With ``--resident CHUNK`` each
candidate hashes one buffer of that size over and over (``--size`` bytes in all):
the speed on data in the cache, as a restore checksums each chunk it has just read.
hpckpt checksums every slice it writes and verifies every slice it reads, so the
fastest one is its choice.
"""

from __future__ import annotations

import argparse
import statistics
import time
import zlib
from collections.abc import Callable

import numpy as np

from ..util import parse_size


def candidates() -> dict[str, Callable[[memoryview], int]]:
    """The checksum functions that import here."""
    out: dict[str, Callable[[memoryview], int]] = {"zlib.crc32": zlib.crc32}
    try:
        import crc32c

        out["crc32c"] = crc32c.crc32c
    except ImportError:
        pass
    from hpckpt.io.checksum import ACCELERATED  # hpckpt's own, where the CPU has it

    if ACCELERATED is not None:
        out["crc32c-avx512"] = ACCELERATED
    try:
        import xxhash

        out["xxh3_64"] = xxhash.xxh3_64_intdigest
        out["xxh64"] = xxhash.xxh64_intdigest
    except ImportError:
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the probe; print one line per candidate."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=parse_size, default=parse_size("256M"))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument(
        "--resident",
        type=parse_size,
        default=None,
        metavar="CHUNK",
        help="hash one CHUNK-sized buffer repeatedly (data in the cache)",
    )
    args = p.parse_args(argv)
    chunk = min(args.resident or args.size, args.size)
    turns = args.size // chunk
    buf = np.random.default_rng(0).integers(0, 256, chunk, dtype=np.uint8)
    fns = candidates()
    times: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for rep in range(args.reps + 1):
        for n in names[rep % len(names) :] + names[: rep % len(names)]:
            fn = fns[n]
            t = time.perf_counter()
            for _ in range(turns):
                fn(buf)
            if rep:  # the first round warms up
                times[n].append(time.perf_counter() - t)
    gib = turns * chunk / 2**30
    if args.resident:
        print(f"{chunk >> 10} KiB buffer hashed {turns} times, {args.reps} reps")
    else:
        print(f"{args.size >> 20} MiB buffer, {args.reps} reps")
    for n, ts in sorted(times.items(), key=lambda kv: min(kv[1])):
        best, med = gib / min(ts), gib / statistics.median(ts)
        print(f"  {n:11s} best {best:6.2f} GiB/s   median {med:6.2f} GiB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
