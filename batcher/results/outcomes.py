"""Row outcomes: the seven statuses, one pair's answer, and the exit code they give.

Every input row ends with exactly one status. Sent pairs are journalled as their answers arrive
(results/journal.py), and the result files are assembled from the journal at the end
(results/assemble.py).
"""

from __future__ import annotations

import enum
import time
from datetime import UTC, datetime
from typing import NamedTuple


class Status(enum.StrEnum):
    """What became of a row. Never optimistic: each promises only what an answer proved."""

    DELINKED = "delinked"  # the pair's own item answered status true: this job removed the link
    # Not linked now, after an earlier attempt whose answer was lost (a timeout, a dropped
    # connection, a 5xx, an unreadable body): that attempt may have removed it, or nobody did.
    DELINKED_UNCONFIRMED = "delinked_unconfirmed"
    NOT_LINKED = "not_linked"  # 2004, and no earlier attempt can have removed the link
    FAILED = "failed"
    RETRYABLE = "retryable"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
# Statuses that leave work for the operator (exit code 1).
NEEDS_ATTENTION = frozenset({Status.FAILED, Status.RETRYABLE, Status.REJECTED})
# Answers that settle a pair: a resume does not send it again.
CONFIRMED: tuple[str, ...] = (
    Status.DELINKED.value,
    Status.DELINKED_UNCONFIRMED.value,
    Status.NOT_LINKED.value,
    Status.FAILED.value,
)
# Statuses an answer (or giving up on one) gives: what the journal counts while a run is live.
SENT_STATUSES: tuple[str, ...] = (*CONFIRMED, Status.RETRYABLE.value)

# What an answer says of a row; a later run's answer replaces all of them (see lineage.report).
ANSWER_COLUMNS = (
    "status",
    "code",
    "message",
    "customer_id",
    "api_identifier",
    "request_id",
    "attempts",
    "finished_at",
    "note",
)


class Outcome(NamedTuple):
    """One pair's answer, as the journal records it (a named tuple: one is made per pair)."""

    key: int
    customer: str
    program: str
    status: Status
    code: int | None
    message: str | None
    customer_id: int | None = None
    request_id: str | None = None
    attempts: int = 0
    note: str | None = None
    maybe_sent: bool = False
    api_identifier: str | None = None  # the identifier the answer named, when it was placed


_clock = [0, ""]  # the last second formatted: answers come thousands a second


def utc_now() -> str:
    """UTC now, ISO 8601 to the millisecond, with a Z."""
    ms = time.time_ns() // 1_000_000
    second, millis = divmod(ms, 1000)
    if second != _clock[0]:
        _clock[0], _clock[1] = (
            second,
            datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        )
    return f"{_clock[1]}.{millis:03d}Z"


def exit_code_for(counts: dict[str, int]) -> int:
    """0 when nothing needs attention; 1 when some rows are failed, retryable or rejected."""
    return 1 if any(counts.get(s.value, 0) for s in NEEDS_ATTENTION) else 0
