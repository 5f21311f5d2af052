"""Learning the safety margin before the time limit from measured saves and steps (pure)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

# --- margin learning (pure) -------------------------------------------------------


@dataclass
class MarginEstimator:
    """Learns how much time before the limit a checkpoint must start.

    ``margin = floor + safety_factor * (save_estimate + step_estimate)`` where
    ``save_estimate`` is the larger of the maximum and the exponentially weighted
    moving average of the last ``window`` save durations (``initial_save_seconds``
    until one is measured), and ``step_estimate`` is the maximum of the last
    ``window`` step durations (decisions are only taken at step boundaries, so one
    more step may run before the save starts).

    Attributes:
        safety_factor: Multiplies the estimates.
        floor: Seconds always added (process start-up, requeue, slow file system days).
        initial_save_seconds: The save estimate before any save was measured.
        ewma_alpha: Weight of the newest save in the moving average, in (0, 1].
        window: How many recent durations are kept.
        include_step_time: Add the step estimate to the margin.
    """

    safety_factor: float = 2.0
    floor: float = 30.0
    initial_save_seconds: float = 60.0
    ewma_alpha: float = 0.3
    window: int = 8
    include_step_time: bool = True
    _saves: deque[float] = field(init=False, repr=False)
    _steps: deque[float] = field(init=False, repr=False)
    _ewma: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_nonneg("safety_factor", self.safety_factor)
        check_nonneg("floor", self.floor)
        check_nonneg("initial_save_seconds", self.initial_save_seconds)
        if not (isinstance(self.ewma_alpha, (int, float)) and 0.0 < self.ewma_alpha <= 1.0):
            raise ValueError(f"ewma_alpha must be in (0, 1], got {self.ewma_alpha!r}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be a positive int, got {self.window!r}")
        self._saves = deque(maxlen=self.window)
        self._steps = deque(maxlen=self.window)

    def record_save(self, seconds: float) -> None:
        """Record one save's duration in seconds."""
        s = as_duration(seconds)
        self._saves.append(s)
        a = float(self.ewma_alpha)
        self._ewma = s if self._ewma is None else a * s + (1.0 - a) * self._ewma

    def record_step(self, seconds: float) -> None:
        """Record the duration of one step (the time between two decisions)."""
        self._steps.append(as_duration(seconds))

    @property
    def saves(self) -> tuple[float, ...]:
        """The recent save durations, oldest first."""
        return tuple(self._saves)

    @property
    def ewma(self) -> float | None:
        """The moving average of save durations, ``None`` before the first."""
        return self._ewma

    @property
    def save_estimate(self) -> float:
        """Seconds one save is expected to take."""
        if not self._saves:
            return float(self.initial_save_seconds)
        return max(max(self._saves), self._ewma or 0.0)

    @property
    def step_estimate(self) -> float:
        """Seconds one step is expected to take (0 before any was measured)."""
        return max(self._steps) if self._steps else 0.0

    @property
    def margin(self) -> float:
        """Seconds before the limit at which to checkpoint and stop."""
        busy = self.save_estimate + (self.step_estimate if self.include_step_time else 0.0)
        return float(self.floor) + float(self.safety_factor) * busy


def check_nonneg(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")


def as_duration(seconds: Any) -> float:
    s = float(seconds)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"a duration must be a finite non-negative number, got {seconds!r}")
    return s
