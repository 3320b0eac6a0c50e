"""The work queue (`send.queue.WorkQueue`) on a fake clock: what is sent next, and when."""

from __future__ import annotations

from collections.abc import Iterator

from batcher.plan import PlannedRequest
from batcher.send.contract import Entry
from batcher.send.queue import Batch, PendingCustomer, PendingPair, WorkQueue


def _planned(index: int, *customers: str) -> PlannedRequest:
    return PlannedRequest(
        index,
        tuple(Entry(c, ("p1",)) for c in customers),
        tuple((index * 100 + i,) for i in range(len(customers))),
    )


def _customer(name: str) -> PendingCustomer:
    return PendingCustomer(name, [PendingPair(0, name, "p1")])


def _names(batch: Batch | None) -> list[str]:
    assert batch is not None
    return [c.customer for c in batch.customers]


def _plan(*requests: PlannedRequest) -> Iterator[PlannedRequest]:
    return iter(requests)


def test_split_halves_first_then_ready_retries_then_the_plan() -> None:
    queue = WorkQueue(_plan(_planned(0, "a"), _planned(1, "b")), customers_per_request=5)
    queue.retry_at(_customer("r"), 10.0)
    queue.put_first(Batch([_customer("h1")]), Batch([_customer("h2")]))
    assert _names(queue.take(now=0.0)) == ["h1"]
    assert _names(queue.take(now=0.0)) == ["h2"]
    assert _names(queue.take(now=0.0)) == ["a"]  # the retry is not ready yet
    assert queue.next_ready_at() == 10.0
    assert _names(queue.take(now=10.0)) == ["r", "b"]  # a retry is topped up with fresh work
    assert queue.take(now=10.0) is None
    assert queue.exhausted()


def test_ready_retries_are_repacked_into_full_requests_of_distinct_customers() -> None:
    queue = WorkQueue(_plan(), customers_per_request=3)
    for name in ["a", "b", "a", "c", "d"]:
        queue.retry_at(_customer(name), 1.0)
    assert _names(queue.take(now=1.0)) == ["a", "b", "c"]  # the second "a" waits its turn
    assert sorted(_names(queue.take(now=1.0))) == ["a", "d"]
    assert queue.take(now=1.0) is None


def test_pairs_an_earlier_session_may_have_sent_are_marked_with_how() -> None:
    lost = {("a", "p1"): "an earlier session stopped"}
    queue = WorkQueue(_plan(_planned(0, "a", "b")), customers_per_request=5, lost=lost)
    batch = queue.take(now=0.0)
    assert batch is not None
    assert [p.lost for p in batch.pairs()] == ["an earlier session stopped", None]


def test_an_empty_plan_leaves_nothing_to_send() -> None:
    queue = WorkQueue(_plan(), customers_per_request=5)
    assert not queue.exhausted()  # the plan has not been read yet
    assert queue.take(now=0.0) is None
    assert queue.exhausted() and queue.next_ready_at() is None


def test_retries_are_topped_up_with_fresh_customers_into_full_requests() -> None:
    queue = WorkQueue(
        _plan(_planned(0, "a", "b", "c"), _planned(1, "d", "e", "f")), customers_per_request=3
    )
    assert _names(queue.take(now=0.0)) == ["a", "b", "c"]
    queue.retry_at(_customer("b"), 1.0)
    assert _names(queue.take(now=1.0)) == ["b", "d", "e"]
    assert _names(queue.take(now=1.0)) == ["f"]  # the plan's end: nothing more to wait for
    assert queue.exhausted()


def test_a_retried_customer_is_not_topped_up_with_itself() -> None:
    queue = WorkQueue(_plan(_planned(0, "a", "b")), customers_per_request=2)
    queue.retry_at(_customer("a"), 0.0)
    assert _names(queue.take(now=0.0)) == ["a", "b"]
    assert _names(queue.take(now=0.0)) == ["a"]


def test_a_smaller_size_cuts_the_plans_requests() -> None:
    queue = WorkQueue(_plan(_planned(0, "a", "b", "c", "d", "e")), customers_per_request=5)
    assert _names(queue.take(now=0.0, size=2)) == ["a", "b"]
    assert _names(queue.take(now=0.0, size=2)) == ["c", "d"]
    assert _names(queue.take(now=0.0, size=2)) == ["e"]
    assert queue.take(now=0.0, size=2) is None and queue.exhausted()


def test_a_batch_to_send_again_larger_than_the_size_is_repacked() -> None:
    queue = WorkQueue(_plan(), customers_per_request=4)
    queue.put_first(Batch([_customer(n) for n in "abcd"]))
    assert _names(queue.take(now=0.0, size=3)) == ["a", "b", "c"]
    assert _names(queue.take(now=0.0, size=3)) == ["d"]


def test_once_the_plan_is_used_up_a_few_ready_retries_wait_for_more() -> None:
    queue = WorkQueue(_plan(), customers_per_request=3)
    queue.retry_at(_customer("a"), 1.0)
    queue.retry_at(_customer("b"), 2.0)
    queue.retry_at(_customer("c"), 3.0)
    queue.retry_at(_customer("d"), 9.0)
    assert queue.take(now=1.0) is None
    assert queue.next_ready_at() == 2.0
    assert queue.take(now=2.0) is None
    assert _names(queue.take(now=3.0)) == ["a", "b", "c"]
    assert queue.take(now=3.0) is None  # "d" is the last: it goes when it is ready
    assert queue.next_ready_at() == 9.0
    assert _names(queue.take(now=9.0)) == ["d"]
