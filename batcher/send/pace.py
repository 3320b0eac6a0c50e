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
from collections.abc import Callable
from dataclasses import dataclass

from batcher.job import Quota

# Pace a little under the quota: requests leave evenly spaced but arrive with network jitter.
HEADROOM = 0.99
# Multiplicative decrease on a throttle, additive increase per second without one.
DECREASE_FACTOR = 0.7
INCREASE_PER_S = 0.02  # of the quota's rate
MIN_SHARE = 0.02  # never slower than this share of the quota
MAX_RETRY_AFTER_S = 900.0
BURST_S = 0.005


class LeakyBucket:
    """A bucket of `capacity` requests that drains at `rate_per_s`; a request fits when the
    level plus one is at most the capacity. Unlike aiolimiter's, its rate can change: the level
    is carried over as a share of the capacity, so a change of pace never frees a burst.

    It never waits itself: `wait_s` says how long until a request fits, the caller sleeps.
    """

    __slots__ = ("_last_s", "capacity", "level", "rate_per_s")

    def __init__(self, rate_per_s: float, now_s: float) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = _capacity(rate_per_s)
        self.level = 0.0
        self._last_s = now_s

    def _leak(self, now_s: float) -> None:
        if self.level:
            self.level = max(0.0, self.level - (now_s - self._last_s) * self.rate_per_s)
        self._last_s = now_s

    def wait_s(self, now_s: float) -> float:
        """Seconds until one more request fits (0.0: it fits now)."""
        self._leak(now_s)
        over = self.level + 1 - self.capacity
        return over / self.rate_per_s if over > 0 else 0.0

    def take(self, now_s: float) -> None:
        """Count one request sent at `now_s` (the caller checked that it fits)."""
        self._leak(now_s)
        self.level += 1

    def set_rate(self, rate_per_s: float, now_s: float) -> None:
        """Drain at the old rate up to now, then at the new one, keeping the level's share."""
        self._leak(now_s)
        share = self.level / self.capacity
        self.rate_per_s = rate_per_s
        self.capacity = _capacity(rate_per_s)
        self.level = share * self.capacity


def _capacity(rate_per_s: float) -> int:
    return max(1, int(rate_per_s * BURST_S))


@dataclass(slots=True)
class PaceState:
    """What the pacer is doing now, for progress display and the report."""

    rate_per_s: float
    max_rate_per_s: float
    paused_until: float = 0.0
    decreases: int = 0


class Pacer:
    """Hands out send slots at the current pace; everyone sending goes through `slot()`.

    `clock` is the event loop's (the default) or, in tests, a fake one for the decisions that
    do not sleep (`throttled`, `climb`).
    """

    def __init__(
        self,
        quota: Quota,
        *,
        backoff_base_s: float,
        backoff_max_s: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        max_rate = quota.rate_per_s * HEADROOM
        self.state = PaceState(rate_per_s=max_rate, max_rate_per_s=max_rate)
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._clock = clock
        self._bucket: LeakyBucket | None = None
        self._lock: asyncio.Lock | None = None
        self._last_change = 0.0
        self._consecutive_throttles = 0

    def _now(self) -> float:
        if self._clock is None:
            self._clock = asyncio.get_running_loop().time
        return self._clock()

    async def slot(self) -> float:
        """Wait for the next send slot; returns the clock time it was granted at."""
        if self._lock is None:
            self._lock = asyncio.Lock()
            self._last_change = self._now()
            self._bucket = LeakyBucket(self.state.rate_per_s, self._last_change)
        bucket = self._bucket
        assert bucket is not None
        state = self.state
        now = self._now()
        if (
            not self._lock.locked()
            and state.rate_per_s >= state.max_rate_per_s
            and state.paused_until <= now
            and bucket.wait_s(now) == 0.0
        ):
            # Full pace, nobody waiting, a slot free: take it without suspending.
            bucket.take(now)
            return now
        # One waiter at a time on the bucket, so a pace change applies to the very next slot.
        async with self._lock:
            # The deadline can move while we sleep (another throttle): sleep until it holds.
            while (wait_s := self.state.paused_until - self._now()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait_s)
            if self.state.rate_per_s < self.state.max_rate_per_s:
                self.climb()
            # The rate can drop while we sleep, too: wait until a request fits at the pace now.
            while (wait_s := bucket.wait_s(self._now())) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait_s)
            now = self._now()
            bucket.take(now)
            return now

    def climb(self) -> None:
        """Additive increase (below the quota): each second without a throttle wins back pace."""
        now = self._now()
        state = self.state
        elapsed_s = now - self._last_change
        if elapsed_s < 1.0:
            return
        state.rate_per_s = min(
            state.max_rate_per_s,
            state.rate_per_s + state.max_rate_per_s * INCREASE_PER_S * elapsed_s,
        )
        self._last_change = now
        if self._bucket is not None:
            self._bucket.set_rate(state.rate_per_s, now)

    def throttled(self, sent_at: float, retry_after_s: float | None) -> float:
        """A throttle answer for a request sent at `sent_at`: pause everyone, slow down.

        Returns the pause in seconds. Requests that were already in flight when the pace
        dropped do not drop it again: one decrease per episode.
        """
        now = self._now()
        state = self.state
        if sent_at >= self._last_change or self._consecutive_throttles == 0:
            state.rate_per_s = max(
                state.max_rate_per_s * MIN_SHARE, state.rate_per_s * DECREASE_FACTOR
            )
            state.decreases += 1
            self._last_change = now
            if self._bucket is not None:
                # (No slot handed out yet: the first one builds the bucket at the new pace.)
                self._bucket.set_rate(state.rate_per_s, now)
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
