"""Per-step wall times of a stage, reported through an optional progress callback."""

from __future__ import annotations

import time
from collections.abc import Callable


class StepTimer:
    """``tick(name, fraction)`` adds the seconds since the previous tick to ``name``.

    ``timings`` holds them; ``total()`` adds the time since the timer started.
    """

    def __init__(self, progress: Callable[[str, float], None] | None = None) -> None:
        self.timings: dict[str, float] = {}
        self._progress = progress
        self._start = self._last = time.perf_counter()

    def tick(self, name: str, fraction: float) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._last
        self._last = now
        if self._progress is not None:
            self._progress(name, fraction)

    def total(self) -> dict[str, float]:
        self.timings["total"] = time.perf_counter() - self._start
        return self.timings
