"""A small text progress bar for long reads of the ``hpckpt`` command line (no dependency)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["PROGRESS_THRESHOLD", "Progress"]

PROGRESS_THRESHOLD = 64 << 20
"""Reads of fewer bytes than this show no progress bar."""


class Progress:
    """A one-line progress bar on a terminal, redrawn at most ten times a second.

    It is shown only when ``stream`` is a TTY and ``total`` is at least
    :data:`PROGRESS_THRESHOLD` bytes (or when ``enabled`` forces it on or off).

    Args:
        total: The number of bytes the operation will read.
        label: What is being done (``"verify"``).
        stream: Where to draw (stderr by default).
        enabled: ``True``/``False`` to force the bar on/off; ``None`` decides as above.
        width: The number of cells of the bar.
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        width: int = 30,
    ) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty()) and self.total >= PROGRESS_THRESHOLD
        self.enabled = enabled
        self.width = width
        self.done = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, nbytes: int) -> None:
        """Count ``nbytes`` more bytes as done and redraw if due."""
        self.done += int(nbytes)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last_draw >= 0.1 or self.done >= self.total:
            self._last_draw = now
            self._draw(now)

    def render(self, now: float | None = None) -> str:
        """The bar's text, e.g. ``verify [#######-------]  50%  64.0/128.0 MiB  12.3 MiB/s``."""
        now = time.monotonic() if now is None else now
        frac = min(self.done / self.total, 1.0) if self.total else 1.0
        filled = round(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        mib = 1 << 20
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed / mib
        return (
            f"{self.label} [{bar}] {frac * 100:3.0f}%  "
            f"{self.done / mib:.1f}/{self.total / mib:.1f} MiB  {rate:.1f} MiB/s"
        )

    def _draw(self, now: float) -> None:
        self.stream.write("\r" + self.render(now))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the bar (the terminal line is left clean for the report)."""
        if self.enabled and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
