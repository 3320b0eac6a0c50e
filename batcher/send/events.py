"""What happens while a run sends, as typed records, and the one hook list they go through.

The sender and its parts say what happened, `emit(Throttled(...))`, and never count or log it
themselves. Subscribers decide what an event means to them: `RunStats.record` counts (the
progress display, the metrics textfile and summary.json read those counts) and `log_event`
writes the structlog line. So a count and its log line cannot drift apart, and a new reader
(a test, an embedding program) subscribes instead of patching the sender.

The shape is stamina's instrumentation hooks: plain immutable records and a list of callables.
Two differences: there are several kinds of record (a `match` on the class picks the ones a
subscriber cares for), and the list belongs to one sender, not to the process, so two runs in
one process (the Python API) never hear each other. Hooks run inline, in the event loop: they
must be quick and must not block (counting, one log line).

Log event names and fields are a contract (the docs and operators' log queries name them):
`log_event` keeps them exactly as they were when the sender logged them itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import assert_never

import structlog

log = structlog.get_logger("batcher.send.sender")


# --- per request (hot: one or two per request, never logged) -----------------------------------


@dataclass(frozen=True, slots=True)
class RequestSent:
    """A request is about to leave (its pairs' intents are written)."""


@dataclass(frozen=True, slots=True)
class Answered:
    """An HTTP answer came back, `throttled` when it said to slow down."""

    status: int
    latency_ms: float
    throttled: bool


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """A request got no HTTP answer (could not connect, timed out, connection dropped)."""


REQUEST_SENT = RequestSent()
TRANSPORT_FAILED = TransportFailed()


@dataclass(frozen=True, slots=True)
class SendingStarted:
    at: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class SendingEnded:
    at: float  # time.monotonic()


# --- what an answer led to ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetriesScheduled:
    """An answer's unfinished customers go back in line after one shared backoff."""

    customers: int
    delay_s: float


@dataclass(frozen=True, slots=True)
class Retry:
    """A whole request is tried again (a 5xx, no answer, an unreadable body)."""

    request_id: str | None
    code: int | None
    reason: str | None
    customers: int


@dataclass(frozen=True, slots=True)
class Throttled:
    request_id: str | None
    retry_after_s: float | None
    pause_s: float
    rate_per_s: float  # the pace after this throttle


@dataclass(frozen=True, slots=True)
class Split:
    """A whole-request refusal: the request goes again as two halves."""

    request_id: str | None
    status: int
    code: int | None
    customers: int


@dataclass(frozen=True, slots=True)
class TooBig:
    """A request refused for its size: its customers go back to be packed smaller."""

    request_id: str | None
    status: int
    code: int | None
    customers: int


@dataclass(frozen=True, slots=True)
class BatchLimitChanged:
    """The learned request size changed (None: the search started over)."""

    learned: int | None
    configured: int
    refusals: int


@dataclass(frozen=True, slots=True)
class TokenRefreshed:
    request_id: str | None
    status: int
    code: int | None


@dataclass(frozen=True, slots=True)
class OddItems:
    """Items of an answer that were read with a shrug (see contract.parse_response)."""

    request_id: str | None
    oddities: list[str]


@dataclass(frozen=True, slots=True)
class UnexpectedItems:
    """Customers in an answer that match no customer sent."""

    request_id: str | None
    count: int
    answered: list[str]  # the first few, as the answer named them (masked when logged)
    customers_unconfirmed: int


# --- outages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutageStarted:
    failures_in_a_row: int
    last_answer: str | None


@dataclass(frozen=True, slots=True)
class ProbeFailed:
    last_answer: str | None
    failing_s: float
    next_probe_in_s: float


@dataclass(frozen=True, slots=True)
class OutageEnded:
    outage_s: float


# --- the run stops -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanaryAnswered:
    """The first request's answer named the org: full requests from now on."""

    org_id: int | str | None


@dataclass(frozen=True, slots=True)
class Stopping:
    """No new work is taken; requests in flight finish."""

    reason: str


@dataclass(frozen=True, slots=True)
class Aborted:
    """The run stops on an error (its message, or what the answers showed)."""

    reason: str
    share: float | None = None


@dataclass(frozen=True, slots=True)
class StoppedByAnswer:
    """An answer no retry changes (an unexpected HTTP status) stops the run."""

    status: int
    code: int | None
    request_id: str | None


@dataclass(frozen=True, slots=True)
class TooManyFailures:
    share: float
    pairs: int
    code: int | None
    message: str | None


@dataclass(frozen=True, slots=True)
class GaveUp:
    """An outage lasted retry.give_up_after_seconds."""

    failing_s: float
    last_answer: str | None
    give_up_after_s: float


Event = (
    RequestSent
    | Answered
    | TransportFailed
    | SendingStarted
    | SendingEnded
    | RetriesScheduled
    | Retry
    | Throttled
    | Split
    | TooBig
    | BatchLimitChanged
    | TokenRefreshed
    | OddItems
    | UnexpectedItems
    | OutageStarted
    | ProbeFailed
    | OutageEnded
    | CanaryAnswered
    | Stopping
    | Aborted
    | StoppedByAnswer
    | TooManyFailures
    | GaveUp
)
Hook = Callable[[Event], None]


class Emitter:
    """The hook list of one sender: `emit(event)` calls every hook, in order."""

    __slots__ = ("_hooks",)

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self._hooks: tuple[Hook, ...] = tuple(hooks)

    def subscribe(self, hook: Hook) -> None:
        self._hooks = (*self._hooks, hook)

    def __call__(self, event: Event) -> None:
        for hook in self._hooks:
            hook(event)


def log_event(event: Event) -> None:
    """The structlog subscriber: each event's line, named and shaped as operators know it."""
    match event:
        case RequestSent() | Answered() | TransportFailed() | RetriesScheduled():
            return  # counted, not logged: one per request
        case SendingStarted() | SendingEnded():
            return  # `run.started` and `run.finished` are the run's (runs.execute)
        case Retry(request_id, code, reason, customers):
            log.info(
                "request.retry",
                request_id=request_id,
                code=code,
                reason=reason,
                customers=customers,
            )
        case Throttled(request_id, retry_after_s, pause_s, rate_per_s):
            log.warning(
                "request.throttled",
                request_id=request_id,
                retry_after_s=retry_after_s,
                pause_s=round(pause_s, 3),
                rate_per_s=round(rate_per_s, 3),
            )
        case Split(request_id, status, code, customers) | TooBig(
            request_id, status, code, customers
        ):
            log.info(
                "request.split" if isinstance(event, Split) else "request.too_big",
                request_id=request_id,
                status=status,
                code=code,
                customers=customers,
            )
        case BatchLimitChanged(learned, configured, refusals):
            if learned is not None:
                log.warning(
                    "request.batch_limit_learned",
                    customers_per_request=learned,
                    configured=configured,
                    refusals=refusals,
                )
        case TokenRefreshed(request_id, status, code):
            log.info("auth.token_refreshed", request_id=request_id, status=status, code=code)
        case OddItems(request_id, oddities):
            log.warning("response.odd_items", request_id=request_id, oddities=oddities[:5])
        case UnexpectedItems(request_id, count, answered, unconfirmed):
            log.warning(
                "response.unexpected_items",
                request_id=request_id,
                count=count,
                answered=answered,
                customers_unconfirmed=unconfirmed,
            )
        case OutageStarted(failures_in_a_row, last_answer):
            log.warning(
                "api.outage",
                failures_in_a_row=failures_in_a_row,
                last_answer=last_answer,
                action="no new work; probing one request at a time",
            )
        case ProbeFailed(last_answer, failing_s, next_probe_in_s):
            log.info(
                "api.probe_failed",
                last_answer=last_answer,
                failing_s=round(failing_s, 1),
                next_probe_in_s=round(next_probe_in_s, 2),
            )
        case OutageEnded(outage_s):
            log.warning("api.back", outage_s=round(outage_s, 1), action="full pace again")
        case CanaryAnswered(org_id):
            log.info("run.canary_answered", org_id=org_id)
        case Stopping(reason):
            log.warning("run.stopping", reason=reason)
        case Aborted(reason, None):
            log.error("run.aborted", reason=reason)
        case Aborted(reason, share):
            log.error("run.aborted", reason=reason, share=share)
        case StoppedByAnswer(status, code, request_id):
            log.error("run.aborted", status=status, code=code, request_id=request_id)
        case TooManyFailures(share, pairs, code, message):
            log.error(
                "run.too_many_failures",
                share=round(share, 3),
                pairs=pairs,
                code=code,
                message=message,
            )
        case GaveUp(failing_s, last_answer, give_up_after_s):
            log.error(
                "run.gave_up",
                failing_s=round(failing_s, 1),
                last_answer=last_answer,
                give_up_after_s=give_up_after_s,
            )
        case _:
            assert_never(event)
