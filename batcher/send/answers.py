"""What an answer means for each pair asked for: an outcome, or another try.

Pure functions over a `Batch` (they only count attempts on its pairs): the sender journals the
outcomes and queues the retries. Results are matched to the pairs asked for by customer (see
placing.py: the API may name a customer in its stored form, not as sent) and program name,
never by position: no source promises order or completeness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from batcher.results.outcomes import Outcome, Status
from batcher.send import contract, placing
from batcher.send.contract import Verdict
from batcher.send.queue import Batch, PendingCustomer, PendingPair

VERDICT_STATUS = {
    Verdict.DELINKED: Status.DELINKED,
    Verdict.NOT_LINKED: Status.NOT_LINKED,
    Verdict.FAILED: Status.FAILED,
}


def unconfirmed_note(lost: str) -> str:
    """The note of a `delinked_unconfirmed` pair: which earlier answer was lost, and how."""
    return (
        f"not linked now, but the answer to an earlier attempt was lost ({lost}): that attempt "
        "may have removed the link, or it was never linked; which is unknown"
    )


# Throttles do not use up a pair's attempts (nothing was processed), but they are bounded.
THROTTLES_PER_ATTEMPT = 3
# A pair whose customer came back under a name that matches no customer sent.
UNPLACED_MESSAGE = "not confirmed: the answer named the customer differently from the request"


@dataclass(slots=True)
class Applied:
    """What an answer decided: outcomes to journal, customers to try again."""

    outcomes: list[Outcome] = field(default_factory=list)
    retries: list[PendingCustomer] = field(default_factory=list)
    # Customers in the answer that match no customer asked for (see placing.py).
    unexpected: int = 0
    unplaced: list[contract.CustomerResult] = field(default_factory=list)
    # Customers asked for whose answer is most likely among the unplaced ones: `retryable` now.
    unconfirmed: set[str] = field(default_factory=set)


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
            # (An attempt during an outage is given back, so it may have no number of its own.)
            which = f"attempt {p.attempts}" if p.attempts > 0 else "an attempt during an outage"
            p.lost = f"{which}: {lost}"
        if p.attempts >= max_attempts:
            note = f"gave up after {p.attempts} attempts"
            if p.lost is not None:
                note += f"; an answer was lost, so it may have been processed ({p.lost})"
            applied.outcomes.append(
                outcome(p, Status.RETRYABLE, code, message, request_id=request_id, note=note)
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
    outcome or goes back for another try, never both.

    An answer that fits no customer asked for is counted (`unexpected`, `unplaced`); while one
    is there, the customers left without an answer are `retryable` at once with a note naming
    what came back: their answer is most likely that one, and a resend would only repeat it.
    """
    placed = placing.place_answers(identifier, [c.customer for c in batch.customers], results)
    applied = Applied(unexpected=len(placed.unplaced), unplaced=placed.unplaced)
    unplaced_note = _unplaced_note(placed.unplaced, identifier)
    outcomes = applied.outcomes
    for cust, res in zip(batch.customers, placed.answers, strict=True):
        pairs = cust.pairs
        for p in pairs:  # an attempt for every pair asked for (as _count_attempt)
            p.attempts += 1
        again: list[PendingPair]
        if res is None and unplaced_note is not None:
            applied.unconfirmed.add(cust.customer)
            for p in pairs:
                if p.lost is None:  # the API most likely processed it: a retry knows
                    p.lost = f"attempt {p.attempts}: answered under another name"
                outcomes.append(
                    outcome(
                        p,
                        Status.RETRYABLE,
                        None,
                        UNPLACED_MESSAGE,
                        request_id=request_id,
                        note=unplaced_note,
                    )
                )
            continue
        if res is None:
            again = _again_or_give_up(
                applied,
                pairs,
                None,
                "customer omitted from the answer",
                request_id,
                lost="customer omitted from the answer",
                max_attempts=max_attempts,
            )
        elif not res.status.status and res.status.verdict is Verdict.TRANSIENT:
            again = _again_or_give_up(
                applied,
                pairs,
                res.status.code,
                res.status.message,
                request_id,
                lost=None,
                max_attempts=max_attempts,
            )
        elif not res.status.status:
            # A customer-level failure applies to every program asked for that customer.
            outcomes.extend(
                outcome(
                    p,
                    Status.FAILED,
                    res.status.code,
                    res.status.message,
                    customer_id=res.customer_id,
                    request_id=request_id,
                    api_identifier=res.returned,
                )
                for p in pairs
            )
            continue
        else:
            again = []
            programs, customer_id, returned = res.programs, res.customer_id, res.returned
            for p in pairs:
                st = programs.get(p.program) or _program_status(programs, p.program)
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
                if st.status:  # the usual answer: delinked, nothing more to decide
                    outcomes.append(
                        outcome(
                            p,
                            Status.DELINKED,
                            st.code,
                            st.message,
                            customer_id=customer_id,
                            request_id=request_id,
                            api_identifier=returned,
                        )
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
                    # Who removed the link cannot be known: never claim it was this job.
                    status, note = Status.DELINKED_UNCONFIRMED, unconfirmed_note(p.lost)
                outcomes.append(
                    outcome(
                        p,
                        status,
                        st.code,
                        st.message,
                        customer_id=customer_id,
                        request_id=request_id,
                        note=note,
                        api_identifier=returned,
                    )
                )
        if again:
            applied.retries.append(PendingCustomer(cust.customer, again))
    return applied


def _unplaced_note(unplaced: list[contract.CustomerResult], identifier: str) -> str | None:
    if not unplaced:
        return None
    named = ", ".join(placing.describe(r, identifier) for r in unplaced[:3])
    more = f" and {len(unplaced) - 3} more" if len(unplaced) > 3 else ""
    return f"the answer named {named}{more}, matching no customer sent"
