"""The sender's work queue: what to send next, and when.

Work comes from three places, in this order: batches to send again as they are (split halves,
a batch put back because the run stopped before it left), retried customers whose backoff has
passed, and the plan. Retries travel in full requests: ready retries are packed together and
topped up with the plan's fresh customers, up to the request size the sender asks for (the
configured one, or the batch limit learned from the API). Once the plan is used up, ready
retries that would not fill a request wait for more to be ready (at most the longest backoff).
A request never names a customer twice. The queue is synchronous and takes the time as an
argument, so it is tested on a fake clock; the sender does the waiting.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from batcher.plan import PlannedRequest


@dataclass(slots=True)
class PendingPair:
    """One (customer, program) pair on its way to an outcome.

    `attempts` counts the sends of this pair that count against `retry.max_attempts`: each one
    the API answered for it, or whose fate is unknown. A throttled, refused or split request
    was not processed, so it is not an attempt; throttles have their own (bounded) counter.
    """

    key: int
    customer: str
    program: str
    attempts: int = 0
    throttles: int = 0
    # How an earlier attempt's answer was lost (it may have been processed), or None.
    lost: str | None = None


@dataclass(slots=True)
class PendingCustomer:
    customer: str
    pairs: list[PendingPair]


@dataclass(slots=True)
class Batch:
    """One request's worth of work: distinct customers, each with the programs to delink."""

    customers: list[PendingCustomer]
    auth_retried: bool = False
    outage_probe: bool = False  # sent alone to see whether the API is back (send.outage)
    size_probe: bool = False  # sent at a size the batch-limit search is trying (send.batch_limit)
    canary: bool = False  # the run's first customer, sent alone to learn the org (send.auth)

    def pairs(self) -> Iterator[PendingPair]:
        for c in self.customers:
            yield from c.pairs


@dataclass(order=True, slots=True)
class _Waiting:
    ready_at: float
    seq: int
    customer: PendingCustomer = field(compare=False)


class WorkQueue:
    """Split halves first, then ready retries topped up with fresh work into full requests."""

    def __init__(
        self,
        plan: Iterator[PlannedRequest],
        *,
        customers_per_request: int,
        lost: Mapping[tuple[str, str], str] | None = None,
    ) -> None:
        self._plan: Iterator[PlannedRequest] | None = plan
        self._customers_per_request = customers_per_request
        # Pairs an earlier session may have sent without recording the answer, and how.
        self._lost = lost or {}
        self._again: deque[Batch] = deque()
        self._waiting: list[_Waiting] = []
        # Fresh customers read from the plan but not sent yet (the plan's requests are cut
        # to another size, or topped up retries).
        self._fresh: deque[PendingCustomer] = deque()
        self._seq = itertools.count()
        # Set when ready retries wait to fill a request: when the next one will be ready.
        self._hold_until: float | None = None

    def put_first(self, *batches: Batch) -> None:
        """Send these next, in this order, as they are (split halves, a batch never sent)."""
        self._again.extendleft(reversed(batches))

    def retry_at(self, customer: PendingCustomer, ready_at: float) -> None:
        """Send these pairs again once the clock reaches `ready_at`."""
        heapq.heappush(self._waiting, _Waiting(ready_at, next(self._seq), customer))

    def take(self, now: float, size: int | None = None) -> Batch | None:
        """The next batch of at most `size` customers (default: the configured request size)
        to send at time `now`, or None if nothing is ready now."""
        size = size or self._customers_per_request
        self._hold_until = None
        while self._again:
            batch = self._again.popleft()
            if len(batch.customers) <= size:
                return batch
            for c in batch.customers:  # packed before a smaller batch limit was learned
                self.retry_at(c, now)
        waiting = self._waiting
        if (
            not self._fresh
            and size == self._customers_per_request
            and (not waiting or waiting[0].ready_at > now)
        ):
            # Nothing to pack with: the plan's next request as it was planned (the fast path).
            planned = self._from_plan()
            if planned is not None:
                return planned
        return self._pack(now, size)

    def next_ready_at(self) -> float | None:
        """When to look again for work (None: no retry is waiting)."""
        if self._hold_until is not None:
            return self._hold_until
        return self._waiting[0].ready_at if self._waiting else None

    def exhausted(self) -> bool:
        """Nothing left at all: the plan is read to its end and nothing waits."""
        return self._plan is None and not self._waiting and not self._again and not self._fresh

    def _pack(self, now: float, size: int) -> Batch | None:
        """Ready retries first, topped up with fresh customers: distinct, at most `size`."""
        waiting = self._waiting
        retried: list[_Waiting] = []
        seen: set[str] = set()
        twice: list[_Waiting] = []
        while waiting and waiting[0].ready_at <= now and len(retried) < size:
            item = heapq.heappop(waiting)
            if item.customer.customer in seen:
                twice.append(item)  # the same customer twice in one request: next time
                continue
            seen.add(item.customer.customer)
            retried.append(item)
        for item in twice:
            heapq.heappush(waiting, item)
        chosen = [item.customer for item in retried]
        fresh = self._top_up(chosen, seen, size)
        if (
            chosen
            and len(chosen) < size
            and self._plan is None
            and waiting
            and waiting[0].ready_at > now
        ):
            # Only retries are left and more will be ready soon: wait for them rather than
            # spend a request on a few customers.
            self._hold_until = waiting[0].ready_at
            for item in retried:
                heapq.heappush(waiting, item)
            self._fresh.extendleft(reversed(fresh))
            return None
        return Batch(chosen) if chosen else None

    def _top_up(
        self, chosen: list[PendingCustomer], seen: set[str], size: int
    ) -> list[PendingCustomer]:
        """Add fresh customers to `chosen` up to `size`; returns those added."""
        fresh = self._fresh
        added: list[PendingCustomer] = []
        skipped: list[PendingCustomer] = []
        while len(chosen) < size:
            if not fresh and not self._read_plan():
                break
            c = fresh.popleft()
            if c.customer in seen:
                skipped.append(c)  # this customer is in the request already: next time
                continue
            seen.add(c.customer)
            chosen.append(c)
            added.append(c)
        fresh.extendleft(reversed(skipped))
        return added

    def _read_plan(self) -> bool:
        """Move the plan's next request into the fresh customers; False at the plan's end."""
        batch = self._from_plan()
        if batch is None:
            return False
        self._fresh.extend(batch.customers)
        return True

    def _from_plan(self) -> Batch | None:
        if self._plan is None:
            return None
        planned = next(self._plan, None)
        if planned is None:
            self._plan = None
            return None
        lost = self._lost
        customers = []
        for entry, keys in zip(planned.entries, planned.keys, strict=True):
            pairs = [
                PendingPair(k, entry.customer, p) for k, p in zip(keys, entry.programs, strict=True)
            ]
            if lost:
                for pair in pairs:
                    pair.lost = lost.get((pair.customer, pair.program))
            customers.append(PendingCustomer(entry.customer, pairs))
        return Batch(customers)
