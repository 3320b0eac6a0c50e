"""Quota windows, per credential: a fixed window (counter reset at each period boundary) or a
sliding one (at most N accepted requests in any period-long interval).

Invariants pinned by the tests, with t0 the first request's time:
- fixed: window k covers [t0 + k*period, t0 + (k+1)*period); a request exactly at the boundary
  belongs to the new window.
- sliding: a request accepted at t stops counting at exactly t + period.
Throttled requests do not count against the quota (the real API's choice is unknown; this one is
kinder to clients that back off, and honest: they did not get served).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from batcher.simulator.profile import Rate


class FixedWindow:
    def __init__(self, rate: Rate, start: float) -> None:
        self.limit = rate.requests
        self.period_s = rate.period_s
        self._start = start
        self._window = 0
        self._used = 0

    def acquire(self, now: float) -> float | None:
        """Count one request at `now`; None if allowed, else the seconds until it would be."""
        window = math.floor((now - self._start) / self.period_s)
        if window != self._window:
            self._window, self._used = window, 0
        if self._used < self.limit:
            self._used += 1
            return None
        return self._start + (window + 1) * self.period_s - now


class SlidingWindow:
    def __init__(self, rate: Rate, start: float) -> None:
        self.limit = rate.requests
        self.period_s = rate.period_s
        self._accepted: deque[float] = deque()

    def acquire(self, now: float) -> float | None:
        accepted = self._accepted
        while accepted and accepted[0] + self.period_s <= now:
            accepted.popleft()
        if len(accepted) < self.limit:
            accepted.append(now)
            return None
        return accepted[0] + self.period_s - now


Window = FixedWindow | SlidingWindow


class Quota:
    """One window per credential; `set_rate` swaps every window (the slowdown)."""

    def __init__(self, rate: Rate | None, window: str, clock: Callable[[], float]) -> None:
        self._kind = SlidingWindow if window == "sliding" else FixedWindow
        self._clock = clock
        self.rate = rate
        self._windows: dict[str, Window] = {}

    def set_rate(self, rate: Rate | None) -> None:
        self.rate = rate
        self._windows.clear()

    def acquire(self, credential: str) -> float | None:
        """None if `credential` may send now, else the seconds to wait."""
        if self.rate is None:
            return None
        now = self._clock()
        window = self._windows.get(credential)
        if window is None:
            window = self._windows[credential] = self._kind(self.rate, now)
        return window.acquire(now)
