"""An outage is one problem, not one per request: notice it, probe it one at a time, give up.

States: *healthy* -> (FAILURES_TO_OUTAGE whole-request failures in a row: connection errors,
timeouts, 5xx) -> *outage* -> (any answer that is not such a failure) -> *healthy*.

In an outage no new work is taken: one request at a time (a probe) goes out, each after an
exponential backoff with "equal" jitter (half the ceiling fixed, half random), capped by
`retry.backoff_max_seconds`. The fixed half is what bounds the probes: in T seconds of outage at
most about log2(max/base) + 2T/max of them leave, however the dice fall. After
`retry.give_up_after_seconds` of continuous outage, counted from the first failure of the
streak, the run stops (resumable).

Pure: every method takes the time `now` (the event loop's clock), so tests drive it with numbers.
`OutageWatch` is the sender's side of it: it gives back the attempts an outage spent, says what
happened (send.events) and builds the stop when the run gives up.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass

from batcher.errors import RunStopped
from batcher.send import events as ev
from batcher.send.queue import Batch, PendingPair
from batcher.send.verdicts import Stop

# Failures in a row, with no answer between them, that make an outage. Five 30%-failures in a row
# happen about once in 400 requests; a dead API fails this many within one round of requests.
FAILURES_TO_OUTAGE = 5


class Gate(enum.Enum):
    """What the sender may do next."""

    SEND = "send"  # healthy: full pace
    PROBE = "probe"  # an outage, and a probe is due: send one request
    WAIT = "wait"  # an outage: wait (until `Decision.until`, or an answer when it is None)
    GIVE_UP = "give_up"  # the outage has lasted give_up_after_s: stop the run


@dataclass(frozen=True, slots=True)
class Decision:
    gate: Gate
    until: float | None = None


SEND = Decision(Gate.SEND)


def probe_delay_s(probe: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Wait before probe number `probe` (1, 2, ...): in [ceiling/2, ceiling], ceiling doubling."""
    ceiling: float = min(max_s, base_s * 2.0 ** max(probe - 1, 0))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class Outage:
    """Tells the sender whether the API is up, and when to probe it while it is not."""

    def __init__(
        self,
        *,
        backoff_base_s: float,
        backoff_max_s: float,
        give_up_after_s: float,
        failures_to_outage: int = FAILURES_TO_OUTAGE,
        rng: random.Random | None = None,
    ) -> None:
        self._base_s = backoff_base_s
        self._max_s = backoff_max_s
        self.give_up_after_s = give_up_after_s
        self._threshold = failures_to_outage
        self._rng = rng or random.Random()
        self.streak = 0  # whole-request failures in a row
        self.since: float | None = None  # when the streak's first failure came back
        self.active = False
        self.probes = 0  # probes answered with a failure in this outage
        self.probe_in_flight = False
        self.next_probe_at = 0.0
        self.last_answer: str | None = None  # what the API last answered, in words
        self.outages = 0  # outages so far in the run

    def failed(self, now: float, what: str) -> bool:
        """A whole-request failure came back; True when it starts an outage."""
        self.last_answer = what
        if self.streak == 0:
            self.since = now
        self.streak += 1
        if self.active:
            if self.probe_in_flight:
                self.probe_in_flight = False
                self.probes += 1
                self.next_probe_at = now + probe_delay_s(
                    self.probes + 1, self._base_s, self._max_s, self._rng
                )
            return False
        if self.streak < self._threshold:
            return False
        self.active = True
        self.outages += 1
        self.probes = 0
        self.probe_in_flight = False
        self.next_probe_at = now + probe_delay_s(1, self._base_s, self._max_s, self._rng)
        return True

    def answered(self, now: float) -> float | None:
        """An answer that is not a failure; returns the outage's length if it ends one."""
        self.streak = 0
        self.probe_in_flight = False
        if not self.active:
            self.since = None
            return None
        self.active = False
        lasted = now - (self.since if self.since is not None else now)
        self.since = None
        return lasted

    def failing_for_s(self, now: float) -> float:
        """How long the API has been failing without a break (0 when it is not)."""
        return 0.0 if self.since is None else now - self.since

    def decide(self, now: float) -> Decision:
        """May a request leave now? In an outage, only one probe at a time, when due."""
        if not self.active:
            return SEND
        if self.since is not None and now - self.since >= self.give_up_after_s:
            return Decision(Gate.GIVE_UP)
        if self.probe_in_flight:
            return Decision(Gate.WAIT)  # until its answer
        if now < self.next_probe_at:
            give_up_at = (self.since if self.since is not None else now) + self.give_up_after_s
            return Decision(Gate.WAIT, min(self.next_probe_at, give_up_at))
        return Decision(Gate.PROBE)

    def probe_sent(self) -> None:
        self.probe_in_flight = True


class OutageWatch:
    """The sender's side of an outage: attempts it gives back, the events, the stop.

    An outage does not use up `retry.max_attempts`: the failures in a row that turn out to be
    one get their attempts back, as does every attempt during it.
    """

    def __init__(self, outage: Outage, emit: ev.Hook) -> None:
        self.outage = outage
        self._emit = emit
        # Pairs of the failures in a row so far: if they turn out to be an outage, the
        # attempts they spent are given back.
        self._streak_pairs: list[PendingPair] = []

    def failed(self, now: float, batch: Batch, what: str) -> None:
        """A whole request failed (no answer, or a 5xx): one more failure in a row."""
        outage = self.outage
        was_active = outage.active
        if outage.failed(now, what):
            self._emit(ev.OutageStarted(outage.streak, what))
            for p in self._streak_pairs:  # the failures that led here were the outage too
                p.attempts = max(0, p.attempts - 1)
            self._streak_pairs.clear()
        elif was_active and batch.outage_probe:
            self._emit(ev.ProbeFailed(what, outage.failing_for_s(now), outage.next_probe_at - now))
        if outage.active or batch.canary:
            # Not an attempt: the outage, not this request, is the problem (see retry_all). So
            # is a failed canary's: alone, it cannot join the streak that declares an outage.
            for p in batch.pairs():
                p.attempts -= 1

    def retrying(self, pairs: Iterable[PendingPair]) -> None:
        """The failed request's pairs that go again: theirs if the streak becomes an outage."""
        if not self.outage.active:
            self._streak_pairs.extend(pairs)

    def answered(self, now: float) -> bool:
        """The API answered (anything but a 5xx); True when that ends an outage."""
        self._streak_pairs.clear()
        lasted_s = self.outage.answered(now)
        if lasted_s is None:
            return False
        self._emit(ev.OutageEnded(lasted_s))
        return True

    def give_up(self, now: float) -> Stop:
        """The outage has lasted give_up_after_s: the run stops, resumable."""
        outage = self.outage
        failing_s = outage.failing_for_s(now)
        self._emit(ev.GaveUp(failing_s, outage.last_answer, outage.give_up_after_s))
        return Stop(
            f"the API has been failing for {failing_s:.0f} s",
            RunStopped(
                f"The API has been failing for {failing_s:.0f} seconds: every request got a 5xx "
                "or no answer, then every probe, one at a time; it last answered "
                f"{outage.last_answer}. The run stopped (retry.give_up_after_seconds = "
                f"{outage.give_up_after_s:g}); nothing more was sent.",
                hint="Resume the run when the API is back (batcher resume RUN_DIR): pairs with an "
                "outcome are not sent again.",
            ),
        )
