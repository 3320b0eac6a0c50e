"""What a whole answer means for the request it answers: a pure function of status and body.

The sender acts on the `Action`; what each item of an `ITEMS` answer means for its pair is
`answers.apply_answer`'s business. A `Stop` is the verdict the sender's watchers (outage,
breakers) hand the loop when the answers so far mean the whole run must stop.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field

import orjson

from batcher.errors import RunStopped
from batcher.send import contract
from batcher.send.events import Aborted

# Whole-request answers worth another try; everything 5xx is, too.
TRANSIENT_STATUSES = frozenset({408, 425, 500, 502, 503, 504, 521})
# Whole-request answers that mean one item spoiled the batch: split until it stands alone.
SPLIT_STATUSES = frozenset({400, 413})
# Answers that refuse the credentials; 403 (access denied) is not cured by a fresh token.
AUTH_STATUSES = frozenset({401, contract.TOKEN_EXPIRED_CODE})
FORBIDDEN = 403


class Kind(enum.StrEnum):
    THROTTLED = "throttled"  # slow down and send again; nothing was processed
    REFUSED = "refused"  # the credentials were refused; nothing was processed
    SPLIT = "split"  # one item spoiled the request: halve it; nothing was processed
    TRANSIENT = "transient"  # try the whole request again; it may have been processed
    STOP = "stop"  # an answer no retry will change: stop the run
    ITEMS = "items"  # a readable answer: one status per customer and program


@dataclass(frozen=True, slots=True)
class Action:
    """What to do with one answer. `code`/`message` are the API's (or an HTTP status's)."""

    kind: Kind
    status: int
    code: int | None = None
    message: str | None = None
    results: list[contract.CustomerResult] = field(default_factory=list)
    oddities: list[str] = field(default_factory=list)
    # REFUSED only: a fresh token may cure it (a 403 is not cured).
    may_refresh: bool = False
    # TRANSIENT only: how the answer was lost, for a request that may have been processed.
    lost: str | None = None


def classify(
    status: int, body: bytes, *, identifier: str, throttle_statuses: Collection[int]
) -> Action:
    """Classify a whole answer (HTTP status and raw body) into what the sender does next.

    `identifier` is the key customers were sent under (mobile, email, ...): an answer's items
    are read by it.
    """
    if status in throttle_statuses:
        return Action(Kind.THROTTLED, status)
    parsed: object = None
    if body:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
    code, message = contract.error_envelope(parsed)
    if status in AUTH_STATUSES or code == contract.TOKEN_EXPIRED_CODE or status == FORBIDDEN:
        return Action(Kind.REFUSED, status, code, message, may_refresh=status != FORBIDDEN)
    if status in SPLIT_STATUSES or code == contract.BATCH_LIMIT_CODE:
        return Action(Kind.SPLIT, status, code, message)
    if status in TRANSIENT_STATUSES or status >= 500:
        return Action(
            Kind.TRANSIENT,
            status,
            code or status,
            message or f"HTTP {status}",
            lost=f"HTTP {status} answer",
        )
    if not 200 <= status < 300:
        return Action(Kind.STOP, status, code, message)
    try:
        results, oddities = contract.parse_response(identifier, parsed)
    except contract.ShapeError as e:
        return Action(
            Kind.TRANSIENT, status, None, f"unreadable answer: {e}", lost="unreadable body"
        )
    return Action(Kind.ITEMS, status, results=results, oddities=oddities)


@dataclass(frozen=True, slots=True)
class Stop:
    """A part of the sender's verdict on the whole run: stop it, with this error.

    `reason` is what summary.json's `stopped` says; `announce`, the event that logs the error
    when it is the run's first (later ones do not replace it).
    """

    reason: str
    error: RunStopped
    announce: Aborted | None = None
