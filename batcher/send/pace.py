"""Pacing under a hard quota: even spacing, a run-wide pause on throttles, and AIMD.

Invariant: in any window of W seconds at most `rate * W + capacity` requests leave, where the
rate is at most 99% of the quota and the bucket's capacity is the larger of 1 request and 5 ms
worth of the rate. For a quota of Q per period P >= 1 s that is at most 0.99 Q + 0.005 Q < Q, so
the quota holds in every window of its period, fixed or sliding, from the first second: there is
no start-up burst. (The 5 ms only matter at high rates, where a one-request bucket would cost a
timer wake-up per request, and the event loop's timers are not finer than a millisecond.)
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from batcher.job import Quota

# Pace a little under the quota: requests leave evenly spaced but arrive with network jitter.
HEADROOM = 0.99
# Multiplicative decrease on a throttle, additive increase per second without one.
DECREASE_FACTOR = 0.7
INCREASE_PER_S = 0.02  # of the quota's rate
MIN_SHARE = 0.02  # never slower than this share of the quota
MAX_RETRY_AFTER_S = 900.0
BURST_S = 0.005


@dataclass(slots=True)
class PaceState:
    """What the pacer is doing now, for progress display and the report."""

    rate_per_s: float
    max_rate_per_s: float
    paused_until: float = 0.0
    decreases: int = 0


class Pacer:
    """Hands out send slots at the current pace; everyone sending goes through `slot()`."""

    def __init__(self, quota: Quota, *, backoff_base_s: float, backoff_max_s: float) -> None:
        max_rate = quota.rate_per_s * HEADROOM
        self.state = PaceState(rate_per_s=max_rate, max_rate_per_s=max_rate)
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._limiter: AsyncLimiter | None = None
        self._lock: asyncio.Lock | None = None
        self._last_change = 0.0
        self._consecutive_throttles = 0

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _new_limiter(self) -> AsyncLimiter:
        capacity = max(1, int(self.state.rate_per_s * BURST_S))
        return AsyncLimiter(capacity, capacity / self.state.rate_per_s)

    async def slot(self) -> float:
        """Wait for the next send slot; returns the loop time it was granted at."""
        if self._lock is None:
            self._lock = asyncio.Lock()
            self._limiter = self._new_limiter()
            self._last_change = self._loop_time()
        limiter = self._limiter
        assert limiter is not None
        state = self.state
        if (
            not self._lock.locked()
            and state.rate_per_s >= state.max_rate_per_s
            and state.paused_until <= self._loop_time()
            and limiter.has_capacity()
        ):
            # Full pace, nobody waiting, a slot free: take it (acquire does not suspend here).
            await limiter.acquire()
            return self._loop_time()
        # One waiter at a time on the limiter, so a pace change applies to the very next slot.
        async with self._lock:
            # The deadline can move while we sleep (another throttle): sleep until it holds.
            while (wait_s := self.state.paused_until - self._loop_time()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait_s)
            state = self.state
            if state.rate_per_s < state.max_rate_per_s:
                self._climb()
            assert self._limiter is not None
            await self._limiter.acquire()
            return self._loop_time()

    def _climb(self) -> None:
        """Additive increase (below the quota): each second without a throttle wins back pace."""
        now = self._loop_time()
        state = self.state
        elapsed_s = now - self._last_change
        if elapsed_s < 1.0:
            return
        state.rate_per_s = min(
            state.max_rate_per_s,
            state.rate_per_s + state.max_rate_per_s * INCREASE_PER_S * elapsed_s,
        )
        self._last_change = now
        self._swap_limiter()

    def _swap_limiter(self) -> None:
        old = self._limiter
        if old is None:
            return  # no slot handed out yet: the first one builds the bucket at the new pace
        self._limiter = self._new_limiter()
        # Carry the bucket's level over (as a share of capacity), so a pace change never frees
        # a burst. aiolimiter has no public accessor for the level.
        old.has_capacity()  # drains the old bucket up to now
        share = old._level / old.max_rate
        self._limiter._level = share * self._limiter.max_rate
        self._limiter._last_check = self._loop_time()

    def throttled(self, sent_at: float, retry_after_s: float | None) -> float:
        """A throttle answer for a request sent at `sent_at`: pause everyone, slow down.

        Returns the pause in seconds. Requests that were already in flight when the pace
        dropped do not drop it again: one decrease per episode.
        """
        now = self._loop_time()
        state = self.state
        if sent_at >= self._last_change or self._consecutive_throttles == 0:
            state.rate_per_s = max(
                state.max_rate_per_s * MIN_SHARE, state.rate_per_s * DECREASE_FACTOR
            )
            state.decreases += 1
            self._last_change = now
            self._swap_limiter()
        self._consecutive_throttles += 1
        if retry_after_s is not None:
            pause_s = min(max(retry_after_s, 0.0), MAX_RETRY_AFTER_S)
        else:
            pause_s = backoff_s(
                self._consecutive_throttles, self._backoff_base_s, self._backoff_max_s
            )
        state.paused_until = max(state.paused_until, now + pause_s)
        return pause_s

    def answered(self) -> None:
        """A non-throttled answer: the throttle episode, if any, is over."""
        self._consecutive_throttles = 0


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, base * 2^(attempt-1))]."""
    ceiling = min(max_s, base_s * (2 ** max(attempt - 1, 0)))
    return random.uniform(0, ceiling)
