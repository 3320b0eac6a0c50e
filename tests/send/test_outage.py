"""The outage state machine on a clock of plain numbers: when it starts, probes, ends, gives up."""

from __future__ import annotations

import random

import pytest

from batcher.send import events as ev
from batcher.send.outage import FAILURES_TO_OUTAGE, Gate, Outage, OutageWatch, probe_delay_s
from batcher.send.queue import Batch, PendingCustomer, PendingPair


def outage(give_up_after_s: float = 600.0, base_s: float = 0.5, max_s: float = 30.0) -> Outage:
    return Outage(
        backoff_base_s=base_s,
        backoff_max_s=max_s,
        give_up_after_s=give_up_after_s,
        rng=random.Random(1),
    )


def test_failures_in_a_row_start_an_outage_and_one_answer_ends_it() -> None:
    o = outage()
    for i in range(FAILURES_TO_OUTAGE - 1):
        assert not o.failed(float(i), "HTTP 503")
        assert o.decide(float(i)).gate is Gate.SEND
    assert o.failed(10.0, "HTTP 503")
    assert o.active
    assert o.decide(10.0).gate is Gate.WAIT
    assert o.answered(12.0) == pytest.approx(12.0)  # counted from the streak's first failure
    assert o.decide(12.0).gate is Gate.SEND


def test_an_answer_between_failures_resets_the_streak() -> None:
    o = outage()
    for _ in range(3):
        for _ in range(FAILURES_TO_OUTAGE - 1):
            o.failed(0.0, "HTTP 503")
        assert o.answered(0.0) is None
    assert not o.active


def test_one_probe_at_a_time_each_after_a_growing_backoff() -> None:
    o = outage(base_s=0.5, max_s=30.0)
    for _ in range(FAILURES_TO_OUTAGE):
        o.failed(0.0, "no answer: cannot connect")
    now, gaps = 0.0, []
    for _ in range(6):
        decision = o.decide(now)
        assert decision.gate is Gate.WAIT and decision.until is not None
        gaps.append(decision.until - now)
        now = decision.until
        assert o.decide(now).gate is Gate.PROBE
        o.probe_sent()
        assert o.decide(now).gate is Gate.WAIT  # the probe is out: nothing else leaves
        assert o.decide(now).until is None
        now += 0.01
        o.failed(now, "HTTP 503")
    ceilings = [0.5, 1, 2, 4, 8, 16]
    for gap, ceiling in zip(gaps, ceilings, strict=True):
        assert ceiling / 2 <= gap <= ceiling + 0.011


def test_probe_delays_are_capped_by_backoff_max() -> None:
    rng = random.Random(3)
    assert all(0.5 <= probe_delay_s(k, 0.5, 1.0, rng) <= 1.0 for k in range(2, 40))


def test_gives_up_after_give_up_after_s_of_continuous_outage() -> None:
    o = outage(give_up_after_s=20.0)
    o.failed(100.0, "HTTP 503")
    for _ in range(FAILURES_TO_OUTAGE - 1):
        o.failed(100.5, "HTTP 503")
    now = 100.5
    while (d := o.decide(now)).gate is not Gate.GIVE_UP:
        if d.gate is Gate.PROBE:
            o.probe_sent()
            o.failed(now, "HTTP 503 (code 503: Service Unavailable)")
        else:
            assert d.until is not None and d.until <= 120.0  # never sleeps past the deadline
            now = d.until
    assert now == pytest.approx(120.0)
    assert o.failing_for_s(now) == pytest.approx(20.0)
    assert o.last_answer == "HTTP 503 (code 503: Service Unavailable)"


def test_twenty_seconds_of_outage_at_default_backoff_cost_a_handful_of_probes() -> None:
    """Issue 12's scenario on a clock of numbers: whatever the jitter, at most 6 probes.

    The fixed halves of the waits (0.25, 0.5, 1, 2, 4, 8 s) add up to 15.75 s; the next is 15 s.
    """
    for seed in range(200):
        o = Outage(
            backoff_base_s=0.5, backoff_max_s=30.0, give_up_after_s=20.0, rng=random.Random(seed)
        )
        for _ in range(FAILURES_TO_OUTAGE):
            o.failed(0.0, "HTTP 503")
        now, probes = 0.0, 0
        while (d := o.decide(now)).gate is not Gate.GIVE_UP:
            if d.gate is Gate.PROBE:
                probes += 1
                o.probe_sent()
                o.failed(now, "HTTP 503")
            else:
                assert d.until is not None
                now = d.until
        assert probes <= 6


def test_probes_in_an_outage_with_a_one_second_cap_are_bounded() -> None:
    """At most log2(max/base) + 2 x seconds / max probes: the fixed half of the jitter."""
    o = outage(give_up_after_s=3.0, base_s=0.05, max_s=1.0)
    for _ in range(FAILURES_TO_OUTAGE):
        o.failed(0.0, "HTTP 503")
    now, probes = 0.0, 0
    while (d := o.decide(now)).gate is not Gate.GIVE_UP:
        if d.gate is Gate.PROBE:
            probes += 1
            o.probe_sent()
            o.failed(now, "HTTP 503")
        else:
            assert d.until is not None
            now = d.until
    assert probes <= 5 + 6


def test_late_failures_of_requests_sent_before_the_outage_do_not_move_the_probe() -> None:
    o = outage()
    for _ in range(FAILURES_TO_OUTAGE):
        o.failed(0.0, "HTTP 503")
    due = o.next_probe_at
    o.failed(0.1, "HTTP 502")
    assert o.next_probe_at == due
    assert o.last_answer == "HTTP 502"


def _batch(customers: int, attempts: int) -> Batch:
    return Batch(
        [
            PendingCustomer(f"c{i}", [PendingPair(i, f"c{i}", "gold", attempts=attempts)])
            for i in range(customers)
        ]
    )


def test_the_watch_gives_back_the_attempts_of_the_streak_that_became_an_outage() -> None:
    heard: list[ev.Event] = []
    watch = OutageWatch(outage(), heard.append)
    streak = [_batch(2, attempts=1) for _ in range(FAILURES_TO_OUTAGE)]
    for i, batch in enumerate(streak):
        watch.failed(float(i), batch, "HTTP 503")
        if i < FAILURES_TO_OUTAGE - 1:
            watch.retrying(batch.pairs())
    assert heard == [ev.OutageStarted(FAILURES_TO_OUTAGE, "HTTP 503")]
    # Each earlier failure's attempt is given back; the last one's, as an attempt in an outage.
    assert {p.attempts for b in streak for p in b.pairs()} == {0}

    assert watch.answered(30.0)
    assert heard[-1] == ev.OutageEnded(30.0)
    assert not watch.answered(31.0)  # no outage to end


def test_the_watch_stops_the_run_when_it_gives_up() -> None:
    heard: list[ev.Event] = []
    watch = OutageWatch(outage(give_up_after_s=20.0), heard.append)
    for _ in range(FAILURES_TO_OUTAGE):
        watch.failed(0.0, _batch(1, attempts=1), "HTTP 503")
    stop = watch.give_up(25.0)
    assert heard[-1] == ev.GaveUp(25.0, "HTTP 503", 20.0)
    assert stop.reason == "the API has been failing for 25 s"
    assert "retry.give_up_after_seconds = 20" in stop.error.message
    assert stop.announce is None
