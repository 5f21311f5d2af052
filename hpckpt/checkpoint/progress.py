"""Progress reports of long saves and restores (``CheckpointOptions(progress=...)``).

Rank 0 reports ``(done, total)``: ``total`` is the bytes of the whole checkpoint (or
of what the restore reads), ``done`` rank 0's share of the work moved so far, scaled
to ``total`` (every rank moves its share at the same time, so rank 0's fraction is
the job's, give or take the imbalance). The other ranks report nothing. Reports
come at most once per percent, and once at the end with ``done == total``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from mpi4py import MPI

__all__ = ["ProgressReport", "printer", "reporter"]


def printer(what: str) -> Callable[[int, int], None]:
    """The report of ``progress=True``: a line on stderr every 10 % or 5 seconds."""
    last = [-1.0, 0.0]

    def report(done: int, total: int) -> None:
        frac = done / total if total else 1.0
        now = time.monotonic()
        if frac < 1.0 and frac - last[0] < 0.1 and now - last[1] < 5.0:
            return
        last[0], last[1] = frac, now
        gib = float(1 << 30)
        sys.stderr.write(
            f"hpckpt: {what}: {frac * 100:3.0f}% ({done / gib:.2f} of {total / gib:.2f} GiB)\n"
        )
        sys.stderr.flush()

    return report


class ProgressReport:
    """Rank 0's report: scales its own share to the whole (see the module's docstring)."""

    def __init__(self, fn: Callable[[int, int], None], total: int) -> None:
        self.fn = fn
        self.total = int(total)
        self.sent = -1

    def local(self, done: int, mine: int) -> None:
        """Rank 0 has moved ``done`` of its ``mine`` bytes."""
        est = self.total * done // mine if mine else 0
        if est < self.total and (est - self.sent) * 100 < self.total:
            return
        if est < self.total:
            self.sent = est
            self.fn(est, self.total)

    def finish(self) -> None:
        """Everything is done (and committed): the final report."""
        if self.sent < self.total:
            self.sent = self.total
            self.fn(self.total, self.total)


def reporter(option: Any, comm: MPI.Comm, what: str, total: int) -> ProgressReport | None:
    """A report for ``CheckpointOptions.progress`` on rank 0, ``None`` elsewhere or when off."""
    if option is None or option is False or comm.Get_rank() != 0:
        return None
    fn = printer(what) if option is True else option
    return ProgressReport(fn, total)
