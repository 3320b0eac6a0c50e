"""The canary: until an answer names the org, one request of one customer at a time.

Basic auth names no org before an answer does (an OAuth token names it before anything is
sent). So the run's first request goes alone, with one customer, and everyone else waits for
its answer: a wrong org (`api.expect_org_id`) then costs one customer, not a request of 50
times `max_in_flight`. Once an answer has settled the org (send.auth.OrgGuard), full requests.
"""

from __future__ import annotations

from batcher.send import events as ev
from batcher.send.auth import OrgGuard


class Canary:
    """Says how many customers the next request may carry, and whether it must wait."""

    def __init__(self, org: OrgGuard, emit: ev.Hook) -> None:
        self._org = org
        self._emit = emit
        self.out = False  # True while the org is unknown: requests go one at a time

    def start(self) -> None:
        """Sending starts: a canary first, unless the org is known already (from the token)."""
        self.out = not self._org.known

    def waits(self, in_flight: int) -> bool:
        """Must the next request wait? Only while the canary is out and unanswered."""
        if not self.out:
            return False
        if self._org.settled:
            self.out = False
            self._emit(ev.CanaryAnswered(self._org.org_id))
            return False
        return in_flight > 0

    def size(self, customers: int) -> int:
        """The next request's customers: one while the canary is out."""
        return 1 if self.out else customers
