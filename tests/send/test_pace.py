"""Pacing: even spacing under the quota, one slow-down per throttle episode, a gradual climb.

The AIMD decisions are checked on a fake clock; the spacing on the real loop, at a rate high
enough that the test takes a tenth of a second.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from batcher.job import Quota
from batcher.send.pace import (
    BURST_S,
    DECREASE_FACTOR,
    HEADROOM,
    INCREASE_PER_S,
    LeakyBucket,
    Pacer,
)
from batcher.send.session import retry_after_s


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_pacer(rate: str = "100/second") -> tuple[Pacer, FakeClock]:
    requests, _, unit = rate.partition("/")
    clock = FakeClock()
    pacer = Pacer(
        Quota(float(requests), 1.0 if unit == "second" else 60.0),
        backoff_base_s=0.5,
        backoff_max_s=8,
        clock=clock,
    )
    return pacer, clock


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s("7", now) == 7.0
    assert retry_after_s(" 2.5 ", now) == 2.5
    assert retry_after_s(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after_s(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None


async def test_slots_never_come_closer_than_the_quota_allows() -> None:
    pacer = Pacer(Quota(100, 1.0), backoff_base_s=0.5, backoff_max_s=8)
    granted = [await pacer.slot() for _ in range(11)]
    gaps = [b - a for a, b in itertools.pairwise(granted)]
    interval = 1 / (100 * HEADROOM)
    # No start-up burst: even the second slot waits a full interval (loop timers may be late,
    # never early by more than the loop's clock resolution).
    assert min(gaps) >= interval - 0.002
    assert granted[-1] - granted[0] >= 10 * interval - 0.002


async def test_high_rates_release_at_most_five_milliseconds_at_once() -> None:
    pacer = Pacer(Quota(100_000, 1.0), backoff_base_s=0.5, backoff_max_s=8)
    loop = asyncio.get_running_loop()
    start = loop.time()
    granted = [await pacer.slot() for _ in range(2_000)]
    rate_per_s = 100_000 * HEADROOM
    capacity = int(rate_per_s * BURST_S)
    burst = sum(1 for t in granted if t - start < 0.001)
    assert burst <= capacity + 1
    # And the long-run rate holds: in any stretch of time t, at most capacity + rate * t slots.
    assert granted[-1] - start >= (2_000 - capacity) / rate_per_s - 0.001


def test_one_slow_down_per_throttle_episode() -> None:
    pacer, clock = fake_pacer("100/second")
    full = pacer.state.max_rate_per_s
    sent_before = clock.now - 0.05

    pause_s = pacer.throttled(sent_before, None)
    assert pacer.state.rate_per_s == pytest.approx(full * DECREASE_FACTOR)
    assert 0 <= pause_s <= 0.5
    # Other requests of the same wave, sent before the slow-down, do not slow it down again.
    pacer.throttled(sent_before, None)
    pacer.throttled(sent_before + 0.01, None)
    assert pacer.state.rate_per_s == pytest.approx(full * DECREASE_FACTOR)
    assert pacer.state.decreases == 1
    # A request sent after the slow-down and still throttled: the quota is lower still.
    clock.now += 1
    pacer.throttled(clock.now, None)
    assert pacer.state.rate_per_s == pytest.approx(full * DECREASE_FACTOR**2)


def test_retry_after_pauses_everyone_for_that_long() -> None:
    pacer, clock = fake_pacer()
    pause_s = pacer.throttled(clock.now, 12.0)
    assert pause_s == 12.0
    assert pacer.state.paused_until == clock.now + 12.0
    # A shorter Retry-After from an earlier request never shortens the pause.
    pacer.throttled(clock.now - 1, 1.0)
    assert pacer.state.paused_until == clock.now + 12.0


def test_pace_climbs_back_by_a_small_step_each_second() -> None:
    pacer, clock = fake_pacer("100/second")
    full = pacer.state.max_rate_per_s
    pacer.throttled(clock.now, None)
    low = pacer.state.rate_per_s
    clock.now += 0.5
    pacer.climb()
    assert pacer.state.rate_per_s == low  # not before a second has passed
    clock.now += 0.5
    pacer.climb()
    assert pacer.state.rate_per_s == pytest.approx(low + full * INCREASE_PER_S)
    clock.now += 3600
    pacer.climb()
    assert pacer.state.rate_per_s == full  # never above the quota


def test_a_change_of_pace_never_frees_a_burst() -> None:
    bucket = LeakyBucket(1000.0, now_s=0.0)  # capacity 5 at 1000/s
    assert bucket.capacity == 5
    for _ in range(5):
        assert bucket.wait_s(0.0) == 0.0
        bucket.take(0.0)
    assert bucket.wait_s(0.0) == pytest.approx(1 / 1000)
    # Ten times slower: the bucket stays as full (as a share), the next slot ten times further.
    bucket.set_rate(100.0, now_s=0.0)
    assert bucket.capacity == 1 and bucket.level == pytest.approx(1.0)
    assert bucket.wait_s(0.0) == pytest.approx(1 / 100)
    assert bucket.wait_s(0.01) == 0.0


def test_the_bucket_drains_at_its_rate() -> None:
    bucket = LeakyBucket(10.0, now_s=0.0)
    bucket.take(0.0)
    assert bucket.wait_s(0.05) == pytest.approx(0.05)
    assert bucket.wait_s(0.1) == 0.0
    bucket.take(0.1)
    bucket.set_rate(20.0, now_s=0.1)
    assert bucket.wait_s(0.1) == pytest.approx(0.05)
