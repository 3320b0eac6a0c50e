"""The largest request the API takes, learned the first time it refuses one for its size.

The real batch maximum of deLinkCustomer is unknown (see the API contract), so
`customers_per_request` is a guess. When a request of n customers is refused for its size
(code 1060, or a whole-request 400 that says so), the limit lies below n. A binary search finds
it: one probe at a time at the midpoint between the largest size answered and the smallest
refused, while every other request goes at the largest size known to work (or waits, while no
size is known to work). When the two meet the limit is learned, and every later request, fresh
or retried, is packed at it: about log2(customers_per_request) refusals in all, plus the
requests already in flight when the first one came back.

Pure: the sender tells it what was answered and asks what size to pack next. `SizeWatch` is the
sender's side: it reads a refusal's words and says what the search learned (send.events).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from batcher.send import events as ev

BATCH_LIMIT_CODE = 1060
# A plain 400 counts as "too big" only when its message says so; otherwise it is one bad item,
# which splitting isolates.
_SIZE_WORDS = re.compile(r"batch|limit|too (many|large|big)|exceed|size", re.IGNORECASE)


def refused_for_size(status: int, code: int | None, message: str | None) -> bool:
    """Is this whole-request answer a refusal of the request's size?"""
    if code == BATCH_LIMIT_CODE:
        return True
    return status in (400, 413) and bool(message and _SIZE_WORDS.search(message))


@dataclass(frozen=True, slots=True)
class Sizing:
    """How many customers to pack into the next request; 0: wait for an answer first."""

    customers: int
    probe: bool = False


class BatchLimit:
    """Binary search for the largest number of customers per request the API accepts."""

    def __init__(self, configured: int) -> None:
        self.configured = configured
        self.largest_ok = 0  # the largest size the API answered without refusing it for size
        self.smallest_refused: int | None = None
        self.probe_in_flight = False
        self.refusals = 0

    @property
    def learned(self) -> int | None:
        """The limit, once the search has ended (None: never refused, or still searching)."""
        if self.smallest_refused is None or self.largest_ok + 1 < self.smallest_refused:
            return None
        return self.largest_ok

    def next_size(self) -> Sizing:
        if self.smallest_refused is None:
            return Sizing(self.configured)
        learned = self.learned
        if learned is not None:
            return Sizing(learned)
        if not self.probe_in_flight:
            return Sizing((self.largest_ok + self.smallest_refused) // 2, probe=True)
        return Sizing(self.largest_ok)  # 0 while no size is known to work

    def probe_sent(self) -> None:
        self.probe_in_flight = True

    def probe_done(self) -> None:
        """The probe came back, whatever it answered (a 503 tells nothing about size)."""
        self.probe_in_flight = False

    def accepted(self, customers: int) -> None:
        """A request of this many customers was processed."""
        self.largest_ok = max(self.largest_ok, customers)
        if self.smallest_refused is not None and self.smallest_refused <= self.largest_ok:
            # The API took what it refused before: that refusal was not about size (or the
            # limit moved). Start over from what is known to work.
            self.smallest_refused = None

    def refused(self, customers: int) -> bool:
        """A request of this many customers was refused for size; False if that cannot be so.

        One customer cannot be too many, and a size the API has taken is not too big: such a
        refusal is about an item, and the request is split instead.
        """
        if customers < 2 or customers <= self.largest_ok:
            return False
        self.refusals += 1
        if self.smallest_refused is None or customers < self.smallest_refused:
            self.smallest_refused = customers
        return True


class SizeWatch:
    """What answers say about the request size, told to the search and to the event hook."""

    def __init__(self, limit: BatchLimit, emit: ev.Hook) -> None:
        self.limit = limit
        self._emit = emit

    def accepted(self, customers: int) -> bool:
        """A request of this many customers was processed; True if the learned limit changed."""
        before = self.limit.learned
        self.limit.accepted(customers)
        return self._learned_changed(before)

    def too_big(
        self,
        request_id: str | None,
        status: int,
        code: int | None,
        message: str | None,
        customers: int,
    ) -> bool:
        """Was this whole-request refusal about the request's size? Then its customers go back
        at once (nothing was processed: not an attempt) to be packed smaller."""
        if not refused_for_size(status, code, message):
            return False
        limit = self.limit
        before = limit.learned
        if not limit.refused(customers):
            return False
        self._emit(ev.TooBig(request_id, status, code, customers))
        self._learned_changed(before)
        return True

    def _learned_changed(self, before: int | None) -> bool:
        limit = self.limit
        if limit.learned == before:
            return False
        self._emit(ev.BatchLimitChanged(limit.learned, limit.configured, limit.refusals))
        return True
