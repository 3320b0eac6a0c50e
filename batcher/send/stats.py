"""Live figures of a run: read by the progress display, the summary and the report."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from batcher.send import events as ev

# Latencies kept for the percentiles: enough for their precision, bounded in memory.
MAX_LATENCIES = 200_000


@dataclass(slots=True)
class RunStats:
    """Live figures of a run, read by the progress display and the report.

    The sender never writes them: it emits events (send.events), and `record`, one of its
    hooks, counts them.
    """

    pairs_total: int = 0
    requests_planned: int = 0  # for the ETA before anything is answered
    requests: int = 0
    responses: Counter[int] = field(default_factory=Counter)
    throttles: int = 0
    retries: int = 0
    splits: int = 0
    transport_errors: int = 0
    token_refreshes: int = 0
    unmatched_answers: int = 0  # customers in answers that matched no customer sent
    outages: int = 0  # times every request failed, FAILURES_TO_OUTAGE in a row (send.outage)
    size_refusals: int = 0  # requests refused for their size (1060): see send.batch_limit
    learned_customers_per_request: int | None = None
    started_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None
    latencies_ms: list[float] = field(default_factory=list)
    # Per elapsed second: [requests, throttles].
    timeline: dict[int, list[int]] = field(default_factory=dict)

    def record(self, event: ev.Event) -> None:
        """The counting hook: what each event adds to the run's figures."""
        match event:
            case ev.RequestSent():
                self.requests += 1
            case ev.Answered(status, latency_ms, throttled):
                self.responses[status] += 1
                if len(self.latencies_ms) < MAX_LATENCIES:
                    self.latencies_ms.append(latency_ms)
                self.tick(throttled)
            case ev.TransportFailed():
                self.transport_errors += 1
                self.tick(False)
            case ev.RetriesScheduled():
                self.retries += 1
            case ev.Throttled():
                self.throttles += 1
            case ev.Split():
                self.splits += 1
            case ev.TooBig():
                self.size_refusals += 1
            case ev.BatchLimitChanged(learned):
                self.learned_customers_per_request = learned
            case ev.TokenRefreshed():
                self.token_refreshes += 1
            case ev.UnexpectedItems(count=count):
                self.unmatched_answers += count
            case ev.OutageStarted():
                self.outages += 1
            case ev.SendingStarted(at):
                self.started_at = at
            case ev.SendingEnded(at):
                self.finished_at = at
            case _:
                pass  # logged only

    def tick(self, throttled: bool) -> None:
        second = int(time.monotonic() - self.started_at)
        slot = self.timeline.setdefault(second, [0, 0])
        slot[0] += 1
        if throttled:
            slot[1] += 1

    def elapsed_s(self) -> float:
        """Seconds spent sending: up to now, or to the end of sending once it ended."""
        return (self.finished_at or time.monotonic()) - self.started_at
