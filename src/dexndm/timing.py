"""Self-measurement for fixed-rate loops: achieved rate, period jitter, overruns, compute load."""

from __future__ import annotations

import collections
import time

import numpy as np


class RateMonitor:
    """Record tick times of a loop meant to run every ``period`` seconds.

    An overrun is a period longer than 1.5x nominal. Statistics cover the last ``window`` ticks.
    """

    def __init__(self, period: float, window: int = 500):
        self.period = float(period)
        self._ticks: collections.deque[float] = collections.deque(maxlen=window + 1)
        self._work: collections.deque[float] = collections.deque(maxlen=window)
        self.overruns = 0
        self.count = 0
        self._t_start: float | None = None

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._ticks and now - self._ticks[-1] > 1.5 * self.period:
            self.overruns += 1
        self._ticks.append(now)
        self.count += 1

    def work(self, seconds: float) -> None:
        """Time spent doing the tick's work (for the load figure)."""
        self._work.append(seconds)

    def stats(self) -> dict[str, float]:
        t = np.asarray(self._ticks)
        if t.size < 3:
            return {"rate_hz": 0.0, "period_p50_ms": 0.0, "jitter_p99_ms": 0.0, "overruns": self.overruns,
                    "load": 0.0}
        dt = np.diff(t)
        w = np.asarray(self._work) if self._work else np.zeros(1)
        return {
            "rate_hz": float((t.size - 1) / (t[-1] - t[0])),
            "period_p50_ms": float(np.median(dt) * 1e3),
            "jitter_p99_ms": float(np.percentile(np.abs(dt - self.period), 99) * 1e3),
            "overruns": self.overruns,
            "load": float(np.mean(w) / self.period),
        }
