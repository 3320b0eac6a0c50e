"""The sender's work queue: what to send next, and when.

Work comes from three places, in this order: batches to send again as they are (split halves,
a batch put back because the run stopped before it left), retried customers whose backoff has
passed (repacked into full requests), and the plan's next request. The queue is synchronous and
takes the time as an argument, so it is tested on a fake clock; the sender does the waiting.
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

    def pairs(self) -> Iterator[PendingPair]:
        for c in self.customers:
            yield from c.pairs


@dataclass(order=True, slots=True)
class _Waiting:
    ready_at: float
    seq: int
    customer: PendingCustomer = field(compare=False)


class WorkQueue:
    """Split halves first, then ready retries repacked into full requests, then the plan."""

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
        self._seq = itertools.count()

    def put_first(self, *batches: Batch) -> None:
        """Send these next, in this order, as they are (split halves, a batch never sent)."""
        self._again.extendleft(reversed(batches))

    def retry_at(self, customer: PendingCustomer, ready_at: float) -> None:
        """Send these pairs again once the clock reaches `ready_at`."""
        heapq.heappush(self._waiting, _Waiting(ready_at, next(self._seq), customer))

    def take(self, now: float) -> Batch | None:
        """The next batch to send at time `now`, or None if nothing is ready now."""
        if self._again:
            return self._again.popleft()
        return self._ready_retries(now) or self._from_plan()

    def next_ready_at(self) -> float | None:
        """When the earliest waiting retry is ready (None: no retry is waiting)."""
        return self._waiting[0].ready_at if self._waiting else None

    def exhausted(self) -> bool:
        """Nothing left at all: the plan is read to its end and nothing waits."""
        return self._plan is None and not self._waiting and not self._again

    def _ready_retries(self, now: float) -> Batch | None:
        """Repack ready retries into one request: distinct customers, at most the request size."""
        waiting = self._waiting
        if not waiting or waiting[0].ready_at > now:
            return None
        chosen: list[PendingCustomer] = []
        seen: set[str] = set()
        held: list[_Waiting] = []
        while waiting and waiting[0].ready_at <= now and len(chosen) < self._customers_per_request:
            item = heapq.heappop(waiting)
            if item.customer.customer in seen:
                held.append(item)  # the same customer twice in one request: next time
                continue
            seen.add(item.customer.customer)
            chosen.append(item.customer)
        for item in held:
            heapq.heappush(waiting, item)
        return Batch(chosen) if chosen else None

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
