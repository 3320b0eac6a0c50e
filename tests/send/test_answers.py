"""Matching answers to what was asked (`answers.apply_answer`), called directly.

Any order, either shape, omissions, customers the request did not name: every pair asked for
ends with exactly one outcome or goes back for another try, and extras are only counted.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from batcher.results.outcomes import Status
from batcher.send import contract
from batcher.send.answers import (
    THROTTLES_PER_ATTEMPT,
    apply_answer,
    retry_all,
    split,
    throttled,
)
from batcher.send.queue import Batch, PendingCustomer, PendingPair
from tests.conftest import mobile

PROGRAMS = ["partner-01", "partner-02", "partner-03"]
SHAPES = {
    "current": ("customersPartnerUpdates", "partnerProgramUpdates", "updateStatus"),
    "legacy": ("deLinkCustomers", "deLinkFromPartnerPrograms", "partnerDeLinkStatus"),
}
ITEM = st.sampled_from(
    [
        (True, 200, "Success"),
        (False, 2004, "Link the customer"),
        (False, 2006, "No program"),
        (False, 521, "Busy"),
        (False, 2010, "Queued"),
    ]
)


def _body(shape: str, answers: list[tuple[str, list[tuple[str, tuple[bool, int, str]]]]]) -> Any:
    customers_key, programs_key, status_key = SHAPES[shape]
    return {
        customers_key: [
            {
                "customer": {
                    "mobile": int(m) if i % 2 else m,
                    "id": 10 + i,
                    "status": {"status": True, "code": 1000, "message": "found"},
                },
                programs_key: [
                    {
                        "partnerProgramName": p,
                        status_key: {"status": ok, "code": code, "message": message},
                    }
                    for p, (ok, code, message) in programs
                ],
            }
            for i, (m, programs) in enumerate(answers)
        ],
        "warnings": [],
    }


def _batch(customers: int) -> Batch:
    return Batch(
        [
            PendingCustomer(
                mobile(c), [PendingPair(c * 10 + j, mobile(c), p) for j, p in enumerate(PROGRAMS)]
            )
            for c in range(customers)
        ]
    )


@settings(max_examples=60, deadline=None)
@given(
    customers=st.integers(min_value=1, max_value=8),
    answers=st.lists(ITEM, min_size=24, max_size=24),
    omitted=st.sets(st.integers(min_value=0, max_value=23), max_size=6),
    extras=st.integers(min_value=0, max_value=3),
    shape=st.sampled_from(sorted(SHAPES)),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_every_pair_is_answered_once_or_retried_and_extras_are_counted(
    customers: int,
    answers: list[tuple[bool, int, str]],
    omitted: set[int],
    extras: int,
    shape: str,
    seed: int,
) -> None:
    order = random.Random(seed)
    batch = _batch(customers)
    asked = [(mobile(c), p) for c in range(customers) for p in PROGRAMS]
    listed = []
    for c in range(customers):
        progs = [
            (p, answers[c * 3 + j]) for j, p in enumerate(PROGRAMS) if c * 3 + j not in omitted
        ]
        order.shuffle(progs)
        listed.append((mobile(c), progs))
    listed += [(mobile(900 + e), [("partner-01", (True, 200, "Success"))]) for e in range(extras)]
    order.shuffle(listed)
    results, _ = contract.parse_response("mobile", _body(shape, listed))

    applied = apply_answer(batch, results, "rid-1", identifier="mobile", max_attempts=5)

    answered = [(o.customer, o.program) for o in applied.outcomes]
    waiting = [(c.customer, p.program) for c in applied.retries for p in c.pairs]
    # Each pair asked for: one outcome or back in line, never both, never neither.
    assert sorted(answered + waiting) == sorted(asked)
    assert not set(answered) & set(waiting)
    expected_waiting = {
        asked[i]
        for i in range(len(asked))
        if i in omitted or answers[i][1] in contract.TRANSIENT_ITEM_CODES
    }
    assert set(waiting) == expected_waiting
    statuses = {(o.customer, o.program): o.status for o in applied.outcomes}
    for i, pair in enumerate(asked):
        if pair in statuses:
            ok, code, _ = answers[i]
            expected = "delinked" if ok else ("not_linked" if code == 2004 else "failed")
            assert statuses[pair] == expected
    assert applied.unexpected == extras
    # Every pair of an answered request used one attempt, whatever its item said.
    assert all(p.attempts == 1 for p in batch.pairs())
    assert all(o.attempts == 1 for o in applied.outcomes)


def _one_answer(code: int, ok: bool = False) -> list[contract.CustomerResult]:
    results, _ = contract.parse_response(
        "mobile", _body("current", [(mobile(0), [(PROGRAMS[0], (ok, code, "m"))])])
    )
    return results


def _one_pair(lost: str | None = None) -> Batch:
    return Batch([PendingCustomer(mobile(0), [PendingPair(1, mobile(0), PROGRAMS[0], lost=lost)])])


def test_an_omitted_pair_gives_up_as_retryable_maybe_sent_after_its_last_attempt() -> None:
    batch = _one_pair()
    empty, _ = contract.parse_response("mobile", _body("current", [(mobile(0), [])]))
    first = apply_answer(batch, empty, "r1", identifier="mobile", max_attempts=2)
    assert not first.outcomes and len(first.retries) == 1
    second = apply_answer(batch, empty, "r2", identifier="mobile", max_attempts=2)
    (given_up,) = second.outcomes
    assert (given_up.status, given_up.attempts, given_up.maybe_sent) == (Status.RETRYABLE, 2, True)
    assert given_up.note is not None and given_up.note.startswith("gave up after 2 attempts")
    assert "attempt 1: program omitted from the answer" in given_up.note


def test_a_transient_item_is_retried_without_marking_the_pair_maybe_sent() -> None:
    batch = _one_pair()
    applied = apply_answer(batch, _one_answer(2010), "r1", identifier="mobile", max_attempts=1)
    (given_up,) = applied.outcomes
    assert (given_up.status, given_up.code, given_up.maybe_sent) == (Status.RETRYABLE, 2010, False)


def test_not_linked_after_a_lost_answer_is_delinked_unconfirmed_and_says_which_and_how() -> None:
    batch = _one_pair()
    retry_all(batch, None, "no answer: timed out", None, lost="timed out", max_attempts=3)
    (done,) = apply_answer(
        batch, _one_answer(2004), "r2", identifier="mobile", max_attempts=3
    ).outcomes
    assert (done.status, done.code, done.attempts) == (Status.DELINKED_UNCONFIRMED, 2004, 2)
    assert done.note is not None and "attempt 1: timed out" in done.note


def test_only_the_pairs_own_success_is_delinked_and_2004_alone_is_not_linked() -> None:
    lost_before = _one_pair(lost="attempt 1: HTTP 503 answer")
    (ok,) = apply_answer(
        lost_before, _one_answer(200, ok=True), "r", identifier="mobile", max_attempts=3
    ).outcomes
    assert (ok.status, ok.note) == (Status.DELINKED, None)
    # A transient item was answered: that attempt did nothing, so a later 2004 is not_linked.
    batch = _one_pair()
    apply_answer(batch, _one_answer(2010), "r1", identifier="mobile", max_attempts=3)
    (done,) = apply_answer(
        batch, _one_answer(2004), "r2", identifier="mobile", max_attempts=3
    ).outcomes
    assert (done.status, done.note) == (Status.NOT_LINKED, None)


def test_throttles_use_no_attempt_but_are_bounded() -> None:
    batch = _one_pair()
    for _ in range(THROTTLES_PER_ATTEMPT * 2 - 1):
        applied = throttled(batch, "r", max_attempts=2)
        assert not applied.outcomes and len(applied.retries) == 1
    (given_up,) = throttled(batch, "r", max_attempts=2).outcomes
    assert (given_up.status, given_up.code, given_up.attempts) == (Status.RETRYABLE, 429, 0)


def test_a_lost_answer_is_an_attempt_and_says_how_it_was_lost() -> None:
    batch = _one_pair()
    applied = retry_all(batch, 503, "HTTP 503", None, lost="HTTP 503 answer", max_attempts=3)
    assert not applied.outcomes
    (pair,) = applied.retries[0].pairs
    assert (pair.attempts, pair.lost) == (1, "attempt 1: HTTP 503 answer")
    # A connection never made: an attempt, but nothing can have been processed.
    never = _one_pair()
    retry_all(never, None, "cannot connect", None, lost=None, max_attempts=3)
    assert next(never.pairs()).lost is None


def test_a_refused_request_is_halved_until_the_lone_pair_fails() -> None:
    two = Batch(
        [
            PendingCustomer(mobile(0), [PendingPair(0, mobile(0), p) for p in PROGRAMS[:2]]),
            PendingCustomer(mobile(1), [PendingPair(1, mobile(1), PROGRAMS[0])]),
        ]
    )
    halves = split(two, 400, None, None, "r")
    assert isinstance(halves, list)
    assert [[c.customer for c in h.customers] for h in halves] == [[mobile(0)], [mobile(1)]]
    by_program = split(halves[0], 400, None, None, "r")
    assert isinstance(by_program, list)
    assert [[p.program for p in h.pairs()] for h in by_program] == [[PROGRAMS[0]], [PROGRAMS[1]]]
    lone = split(by_program[0], 400, None, None, "r")
    assert not isinstance(lone, list)
    assert (lone.status, lone.code, lone.attempts) == (Status.FAILED, 400, 1)
