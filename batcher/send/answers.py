"""What an answer means for each pair asked for: an outcome, or another try.

Pure functions over a `Batch` (they only count attempts on its pairs): the sender journals the
outcomes and queues the retries. Results are matched to the pairs asked for by identifier and
program name, never by position: no source promises order or completeness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from batcher.results.outcomes import Outcome, Status
from batcher.send import contract
from batcher.send.contract import Verdict
from batcher.send.queue import Batch, PendingCustomer, PendingPair

VERDICT_STATUS = {
    Verdict.DELINKED: Status.DELINKED,
    Verdict.NOT_LINKED: Status.NOT_LINKED,
    Verdict.FAILED: Status.FAILED,
}
# "Not linked" on a resend after an attempt whose answer was lost: that attempt did the delink.
LOST_ANSWER_NOTE = (
    "not linked on this attempt: an earlier attempt whose answer was lost most likely did "
    "the delink"
)
# Throttles do not use up a pair's attempts (nothing was processed), but they are bounded.
THROTTLES_PER_ATTEMPT = 3


@dataclass(slots=True)
class Applied:
    """What an answer decided: outcomes to journal, customers to try again."""

    outcomes: list[Outcome] = field(default_factory=list)
    retries: list[PendingCustomer] = field(default_factory=list)
    # Customers in the answer that the request did not ask for (ignored).
    unexpected: int = 0


def outcome(
    pair: PendingPair,
    status: Status,
    code: int | None,
    message: str | None,
    *,
    customer_id: int | None = None,
    request_id: str | None = None,
    note: str | None = None,
    api_identifier: str | None = None,
) -> Outcome:
    """The journal line for `pair`; a `retryable` one says whether it may have been processed."""
    return Outcome(
        pair.key,
        pair.customer,
        pair.program,
        status,
        code,
        message,
        customer_id,
        request_id,
        pair.attempts,
        note,
        status is Status.RETRYABLE and pair.lost is not None,
        api_identifier,
    )


def _again_or_give_up(
    applied: Applied,
    pairs: list[PendingPair],
    code: int | None,
    message: str | None,
    request_id: str | None,
    *,
    lost: str | None,
    max_attempts: int,
) -> list[PendingPair]:
    """Pairs out of attempts become `retryable`; returns the ones to try again.

    `lost` says how this attempt's answer was lost, when it may have been processed.
    """
    again: list[PendingPair] = []
    for p in pairs:
        if lost is not None and p.lost is None:
            p.lost = f"attempt {p.attempts}: {lost}"
        if p.attempts >= max_attempts:
            applied.outcomes.append(
                outcome(
                    p,
                    Status.RETRYABLE,
                    code,
                    message,
                    request_id=request_id,
                    note=f"gave up after {p.attempts} attempts",
                )
            )
        else:
            again.append(p)
    return again


def _count_attempt(batch: Batch) -> None:
    for c in batch.customers:
        for p in c.pairs:
            p.attempts += 1


def retry_all(
    batch: Batch,
    code: int | None,
    message: str,
    request_id: str | None,
    *,
    lost: str | None,
    max_attempts: int,
) -> Applied:
    """A sent request that got no usable answer: an attempt for every pair, all tried again.

    `lost` says how the answer was lost when the request may have been processed (a 5xx, a
    timeout, a dropped connection, an unreadable body); None when it surely was not.
    """
    _count_attempt(batch)
    applied = Applied()
    for c in batch.customers:
        again = _again_or_give_up(
            applied, c.pairs, code, message, request_id, lost=lost, max_attempts=max_attempts
        )
        if again:
            applied.retries.append(PendingCustomer(c.customer, again))
    return applied


def throttled(batch: Batch, request_id: str | None, *, max_attempts: int) -> Applied:
    """A throttled request was not processed: not an attempt, but throttles are bounded too."""
    applied = Applied()
    limit = THROTTLES_PER_ATTEMPT * max_attempts
    for c in batch.customers:
        again = []
        for p in c.pairs:
            p.throttles += 1
            if p.throttles >= limit:
                applied.outcomes.append(
                    outcome(
                        p, Status.RETRYABLE, 429, "throttled too many times", request_id=request_id
                    )
                )
            else:
                again.append(p)
        if again:
            applied.retries.append(PendingCustomer(c.customer, again))
    return applied


def split(
    batch: Batch, status: int, code: int | None, message: str | None, request_id: str | None
) -> list[Batch] | Outcome:
    """A whole-request refusal: two halves to send at once, or the lone pair's `failed`.

    Halve by customers, then by programs, until the offending customer (or program) stands
    alone; nothing was processed, so no attempt is counted.
    """
    if len(batch.customers) > 1:
        mid = len(batch.customers) // 2
        return [Batch(batch.customers[:mid]), Batch(batch.customers[mid:])]
    only = batch.customers[0]
    if len(only.pairs) > 1:
        mid = len(only.pairs) // 2
        return [
            Batch([PendingCustomer(only.customer, only.pairs[:mid])]),
            Batch([PendingCustomer(only.customer, only.pairs[mid:])]),
        ]
    pair = only.pairs[0]
    pair.attempts += 1  # the API answered for this pair alone: that is its answer
    return outcome(
        pair,
        Status.FAILED,
        code or status,
        message or f"HTTP {status}: the API refused this pair on its own",
        request_id=request_id,
    )


def _merged_by_key(results: list[contract.CustomerResult]) -> dict[str, contract.CustomerResult]:
    by_key: dict[str, contract.CustomerResult] = {}
    for r in results:
        prev = by_key.get(r.key)
        if prev is not None:  # the same customer twice: merge its programs
            r = contract.CustomerResult(
                r.key,
                r.customer_id or prev.customer_id,
                prev.status,
                {**prev.programs, **r.programs},
                prev.returned,
            )
        by_key[r.key] = r
    return by_key


def _program_status(
    programs: Mapping[str, contract.ItemStatus], program: str
) -> contract.ItemStatus | None:
    found = programs.get(program)
    if found is None:  # names compare case-insensitively on the server
        folded = program.casefold()
        found = next((s for n, s in programs.items() if n.casefold() == folded), None)
    return found


def apply_answer(
    batch: Batch,
    results: list[contract.CustomerResult],
    request_id: str | None,
    *,
    identifier: str,
    max_attempts: int,
) -> Applied:
    """Match a readable answer's items to the pairs asked for: every pair asked for gets an
    outcome or goes back for another try, never both; customers not asked for are counted."""
    _count_attempt(batch)
    by_key = _merged_by_key(results)
    applied = Applied()
    found = 0
    for cust in batch.customers:
        res = by_key.get(contract.match_key(identifier, cust.customer) or "")
        again: list[PendingPair]
        if res is None:
            again = _again_or_give_up(
                applied,
                cust.pairs,
                None,
                "customer omitted from the answer",
                request_id,
                lost="customer omitted from the answer",
                max_attempts=max_attempts,
            )
        elif not res.status.status and res.status.verdict is Verdict.TRANSIENT:
            found += 1
            again = _again_or_give_up(
                applied,
                cust.pairs,
                res.status.code,
                res.status.message,
                request_id,
                lost=None,
                max_attempts=max_attempts,
            )
        elif not res.status.status:
            found += 1
            # A customer-level failure applies to every program asked for that customer.
            applied.outcomes.extend(
                outcome(
                    p,
                    Status.FAILED,
                    res.status.code,
                    res.status.message,
                    customer_id=res.customer_id,
                    request_id=request_id,
                    api_identifier=res.returned,
                )
                for p in cust.pairs
            )
            continue
        else:
            found += 1
            again = []
            for p in cust.pairs:
                st = _program_status(res.programs, p.program)
                if st is None:
                    again += _again_or_give_up(
                        applied,
                        [p],
                        None,
                        "program omitted from the answer",
                        request_id,
                        lost="program omitted from the answer",
                        max_attempts=max_attempts,
                    )
                    continue
                verdict = st.verdict
                if verdict is Verdict.TRANSIENT:
                    again += _again_or_give_up(
                        applied,
                        [p],
                        st.code,
                        st.message,
                        request_id,
                        lost=None,
                        max_attempts=max_attempts,
                    )
                    continue
                status, note = VERDICT_STATUS[verdict], None
                if status is Status.NOT_LINKED and p.lost is not None:
                    status, note = Status.DELINKED, LOST_ANSWER_NOTE
                applied.outcomes.append(
                    outcome(
                        p,
                        status,
                        st.code,
                        st.message,
                        customer_id=res.customer_id,
                        request_id=request_id,
                        note=note,
                        api_identifier=res.returned,
                    )
                )
        if again:
            applied.retries.append(PendingCustomer(cust.customer, again))
    applied.unexpected = len(by_key) - found
    return applied
