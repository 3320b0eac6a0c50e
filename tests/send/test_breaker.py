"""The early stop's rule, called directly: a rolling window over answered pairs."""

from __future__ import annotations

import pytest

from batcher.send.breaker import (
    ShareBreaker,
    Trip,
    failure_sample,
    failure_stop_message,
)

GOLD = (2006, "Cannot find the partner program")


def feed(breaker: ShareBreaker[str], answers: str) -> list[int]:
    """Answers as letters ('.' good, any other letter a bad kind): where it tripped (1-based)."""
    return [i for i, a in enumerate(answers, 1) if breaker.add(None if a == "." else a)]


def test_it_waits_for_the_first_pairs_then_trips_at_once() -> None:
    breaker: ShareBreaker[str] = ShareBreaker(0.9, after_pairs=200)
    assert feed(breaker, "x" * 199) == []
    trip = breaker.add("x", "program 'Gold'")
    assert trip == Trip(200, 200, 200, "x", 200, None)  # the first sample of the kind is kept
    assert trip.window_text() == "the first 200 pairs"
    assert breaker.add("x") is None  # it trips once


def test_below_the_share_it_never_trips() -> None:
    breaker: ShareBreaker[str] = ShareBreaker(0.9, after_pairs=200)
    assert feed(breaker, ("x" * 8 + "..") * 500) == []  # 80% failed: carry on


def test_a_later_rolling_window_trips_after_a_good_start() -> None:
    breaker: ShareBreaker[str] = ShareBreaker(0.9, after_pairs=200, window_pairs=1000)
    # 1,000 good answers, then failures: the window of the last 1,000 reaches 90% bad at the
    # 900th failure, whatever the run's overall share (47%).
    tripped = feed(breaker, "." * 1000 + "y" * 1000)
    assert tripped == [1900]
    assert breaker.tripped is not None
    assert breaker.tripped.window_text() == "the last 1,000 pairs"
    assert (breaker.tripped.bad, breaker.tripped.window) == (900, 1000)


def test_the_dominant_kind_is_named_with_its_share_of_the_failures() -> None:
    breaker: ShareBreaker[str] = ShareBreaker(0.9, after_pairs=10)
    assert feed(breaker, "aab" * 3 + "a") == [10]
    assert breaker.tripped is not None
    assert (breaker.tripped.kind, breaker.tripped.kind_count, breaker.tripped.bad) == ("a", 7, 10)


def test_a_share_of_one_turns_it_off() -> None:
    breaker: ShareBreaker[str] = ShareBreaker(1.0, after_pairs=1)
    assert feed(breaker, "x" * 5000) == []


@pytest.mark.parametrize(("share", "after"), [(0, 200), (1.1, 200), (0.9, 0)])
def test_bad_settings_are_refused(share: float, after: int) -> None:
    with pytest.raises(ValueError):
        ShareBreaker(share, after)


def test_the_stop_message_names_code_message_a_masked_sample_and_the_resume() -> None:
    breaker: ShareBreaker[tuple[int | None, str | None]] = ShareBreaker(0.9, after_pairs=250)
    for i in range(250):
        kind = GOLD if i % 40 else None  # 97% failed
        breaker.add(kind, lambda: failure_sample(2006, "919800000001", "Gold Club"))
    assert breaker.tripped is not None
    text = failure_stop_message(breaker.tripped, "batcher resume out/x/run-1")
    assert text.startswith(
        "97% of the first 250 pairs failed with 2006 'Cannot find the partner program' "
        "(program 'Gold Club'): check the program names"
    )
    assert text.endswith("resume with batcher resume out/x/run-1")


def test_a_customer_sample_is_masked() -> None:
    assert failure_sample(8015, "919800000001", "gold") == "customer 91******0001, program 'gold'"


def test_whole_answers_at_once_judge_as_pair_by_pair() -> None:
    one: ShareBreaker[str] = ShareBreaker(0.9, after_pairs=200, window_pairs=1000)
    many: ShareBreaker[str] = ShareBreaker(0.9, after_pairs=200, window_pairs=1000)
    assert feed(one, "." * 1000 + "y" * 900) == [1900]
    for _ in range(20):
        assert many.add(None, pairs=50) is None
    for _ in range(17):
        assert many.add("y", pairs=50) is None  # 850 of the last 1,000 failed
    trip = many.add("y", pairs=50)
    assert trip is not None and (trip.bad, trip.window, trip.answered) == (900, 1000, 1900)
