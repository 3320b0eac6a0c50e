"""Learning the API's batch limit by binary search, answer by answer, without a server."""

from __future__ import annotations

import pytest

from batcher.send import events as ev
from batcher.send.batch_limit import BatchLimit, SizeWatch, Sizing, refused_for_size


def search(limit: int, configured: int) -> tuple[BatchLimit, list[int]]:
    """Drive the search against a server taking at most `limit`, one request at a time."""
    bl = BatchLimit(configured)
    sizes: list[int] = []
    for _ in range(100):
        sizing = bl.next_size()
        sizes.append(sizing.customers)
        if sizing.probe:
            bl.probe_sent()
        if sizing.customers > limit:
            assert bl.refused(sizing.customers)
        else:
            bl.accepted(sizing.customers)
        if sizing.probe:
            bl.probe_done()
        if bl.learned is not None:
            return bl, sizes
    raise AssertionError(f"no limit learned: {sizes}")


@pytest.mark.parametrize("limit", [1, 2, 7, 10, 11, 25, 49])
def test_the_search_ends_at_the_servers_limit_in_log2_refusals(limit: int) -> None:
    bl, _ = search(limit, 50)
    assert bl.learned == limit
    assert bl.refusals <= 7  # the first refusal (50) and at most log2(50) more
    assert bl.next_size() == Sizing(limit)


def test_never_refused_means_the_configured_size() -> None:
    bl = BatchLimit(50)
    bl.accepted(50)
    assert bl.next_size() == Sizing(50)
    assert bl.learned is None


def test_while_a_probe_is_out_others_go_at_the_largest_size_known_to_work() -> None:
    bl = BatchLimit(50)
    assert bl.refused(50)
    first = bl.next_size()
    assert first == Sizing(25, probe=True)
    bl.probe_sent()
    assert bl.next_size() == Sizing(0)  # nothing known to work yet: wait
    bl.accepted(25)
    bl.probe_done()
    assert bl.next_size() == Sizing(37, probe=True)
    bl.probe_sent()
    assert bl.next_size() == Sizing(25)


def test_a_refusal_of_one_customer_or_of_a_size_that_worked_is_about_an_item() -> None:
    bl = BatchLimit(50)
    assert not bl.refused(1)
    bl.accepted(20)
    assert not bl.refused(20)
    assert not bl.refused(5)
    assert bl.smallest_refused is None


def test_taking_a_size_once_refused_starts_the_search_over() -> None:
    bl = BatchLimit(50)
    bl.refused(30)
    bl.accepted(40)
    assert bl.smallest_refused is None
    assert bl.next_size() == Sizing(50)


@pytest.mark.parametrize(
    ("status", "code", "message", "size"),
    [
        (400, 1060, "Batch limit size exceeded", True),
        (200, 1060, None, True),
        (400, 400, "Batch size too large", True),
        (413, None, "Request too large", True),
        (400, 400, "Invalid request: a customer could not be processed", False),
        (400, None, None, False),
    ],
)
def test_which_answers_are_refusals_for_size(
    status: int, code: int | None, message: str | None, size: bool
) -> None:
    assert refused_for_size(status, code, message) is size


def test_the_size_watch_says_what_the_search_learned() -> None:
    heard: list[ev.Event] = []
    watch = SizeWatch(BatchLimit(8), heard.append)
    assert not watch.too_big("q1", 400, None, "bad mobile", 8)  # an item, not the size
    assert watch.too_big("q2", 400, 1060, "batch limit", 8)
    assert heard == [ev.TooBig("q2", 400, 1060, 8)]
    assert not watch.accepted(4)  # still searching
    assert watch.too_big("q3", 400, 1060, None, 6)
    assert watch.accepted(5)  # 5 taken, 6 refused: the limit is 5
    assert heard[-2:] == [ev.TooBig("q3", 400, 1060, 6), ev.BatchLimitChanged(5, 8, 2)]
